"""Video files read through open_source on real encoded video (conftest.py): which frames each
sampling keeps (indices and times, against a literal reference), their pixels against the images
they were made from, damaged and truncated files, files that are not videos, and a missing PyAV."""

from __future__ import annotations

import math
import sys
from fractions import Fraction

import numpy as np
import pytest
from video_testing import CODEC_TOLERANCE, FPS, N_FRAMES, make_video

from invspread_edge_runtime.errors import MissingDependency, SourceError
from invspread_edge_runtime.sources.frame import split_frame_id
from invspread_edge_runtime.sources.open import open_source
from invspread_edge_runtime.sources.pyav import frame_at
from invspread_edge_runtime.sources.sampling import Sampling
from invspread_edge_runtime.sources.spec import parse_source

VIDEOS = ["h264.mp4", "h264.mkv", "mjpeg.avi", "mjpeg.mkv"]


def read(path, sampling: Sampling = Sampling(), **kwargs):
    """(frames, source) of a whole file."""
    events: list[str] = []
    with open_source(parse_source(str(path)), sampling, on_event=events.append, **kwargs) as source:
        frames = list(source.frames())
    source.events = events
    return frames, source


def expected_indices(s: Sampling, n: int = N_FRAMES, fps: int = FPS) -> list[int]:
    """The sampling rules of sampling.py written out in exact fractions: frame i is shown at i/fps."""
    times = [Fraction(i, fps) for i in range(n)]
    window = [
        i
        for i, t in enumerate(times)
        if (s.start is None or t >= Fraction(s.start).limit_denominator(1000))
        and (s.end is None or t < Fraction(s.end).limit_denominator(1000))
    ]
    if s.duration is not None and window:
        first = times[window[0]]
        window = [i for i in window if times[i] - first < Fraction(s.duration).limit_denominator(1000)]
    if s.fps is not None:  # for each k, the first frame with t >= first + k/F (each frame once)
        first = times[window[0]]
        period = 1 / Fraction(s.fps).limit_denominator(1000)
        kept = []
        for k in range(math.ceil((times[window[-1]] - first) / period) + 1):
            due = first + k * period
            chosen = next((i for i in window if times[i] >= due), None)
            if chosen is not None and chosen not in kept:
                kept.append(chosen)
    else:
        kept = window[:: s.every]
    return kept[: s.max_frames] if s.max_frames is not None else kept


SAMPLINGS = [
    Sampling(),
    Sampling(every=5),
    Sampling(every=7, max_frames=4),
    Sampling(fps=2),
    Sampling(fps=10),
    Sampling(fps=25),
    Sampling(fps=100),  # above the video's rate: every frame, once
    Sampling(start=0.4, end=1.2),
    Sampling(start=0.5),  # between frames: the first at or after it
    Sampling(end=0.2),
    Sampling(start=0.2, duration=0.4),
    Sampling(start=0.4, every=4),
    Sampling(start=1.0, fps=4, max_frames=3),
    Sampling(max_frames=1),
]


@pytest.mark.parametrize("video", VIDEOS)
@pytest.mark.parametrize(
    "sampling",
    SAMPLINGS,
    ids=lambda s: ",".join(f"{k}={v}" for k, v in vars(s).items() if v not in (None, 1)) or "all",
)
def test_sampling_keeps_exactly_the_expected_frames(videos, video, sampling):
    frames, source = read(videos[video], sampling)
    want = expected_indices(sampling)
    assert [f.index for f in frames] == want
    assert [f.time for f in frames] == pytest.approx([i / FPS for i in want], abs=1e-6)
    assert source.stats.kept == len(want) and source.stats.damage is None and source.events == []


@pytest.mark.parametrize("video", VIDEOS)
def test_frames_show_the_images_they_were_made_from(videos, video, fmnist_frames):
    frames, source = read(videos[video])
    assert len(frames) == N_FRAMES and source.stats.decoded == N_FRAMES
    codec = video.split(".")[0]
    assert source.decoder == f"pyav ({codec})" and not source.live
    for frame in frames:
        assert frame.rgb.shape == (28, 28, 3) and frame.rgb.dtype == np.uint8
        error = np.abs(frame.rgb.astype(float) - fmnist_frames[frame.index]).mean()
        assert error < CODEC_TOLERANCE[codec], (frame.index, error)
        # and no other image is closer: a frame shifted by one would show its neighbour
        others = [np.abs(frame.rgb.astype(float) - img).mean() for img in fmnist_frames]
        assert int(np.argmin(others)) == frame.index


def test_frame_ids_name_the_source_and_time(videos):
    frames, _ = read(videos["h264.mp4"], Sampling(every=25))
    assert [f.item_id for f in frames] == [f"{videos['h264.mp4']}#t=0.000", f"{videos['h264.mp4']}#t=1.000"]
    assert split_frame_id(frames[1].item_id) == (str(videos["h264.mp4"]), 1.0)
    named, _ = read(videos["h264.mp4"], Sampling(max_frames=1), name="shop/cam.mp4")
    assert named[0].item_id == "shop/cam.mp4#t=0.000"


def test_a_slow_consumer_of_a_file_gets_every_frame(videos):
    import time

    with open_source(parse_source(str(videos["mjpeg.avi"])), Sampling(every=2)) as source:
        indices = []
        for frame in source.frames():
            time.sleep(0.005)  # the decoder waits on the bounded queue: nothing dropped
            indices.append(frame.index)
    assert indices == list(range(0, N_FRAMES, 2))
    assert source.stats.kept == len(indices) and source.stats.decoded >= N_FRAMES - 1


def test_close_while_reading_a_file_stops_the_reader(videos):
    source = open_source(parse_source(str(videos["h264.mp4"])), Sampling())
    frames = source.frames()
    next(frames)
    source.close()
    assert source._thread is not None and not source._thread.is_alive()
    source.close()  # twice is fine


@pytest.mark.parametrize("time_s", [0.0, 0.52, 1.0, 1.03, 1.96, 1.99])
def test_frame_at_returns_the_frame_shown_at_that_time(videos, fmnist_frames, time_s):
    for video in ("h264.mp4", "mjpeg.avi"):
        rgb = frame_at(str(videos[video]), time_s)
        shown = math.floor(time_s * FPS + 1e-6)
        assert np.abs(rgb.astype(float) - fmnist_frames[shown]).mean() < CODEC_TOLERANCE[video.split(".")[0]]


def test_frame_at_past_the_end_is_refused(videos):
    with pytest.raises(SourceError, match=r"no frame at 5\.000 s"):
        frame_at(str(videos["h264.mp4"]), 5.0)


# --- damaged files ---------------------------------------------------------------------------------


def damaged_copy(path, tmp_path, how: str):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:  # overwritten in the middle
        middle = len(data) // 2
        data[middle : middle + 2000] = (
            np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
        )
    out = tmp_path / f"{how}-{path.name}"
    out.write_bytes(bytes(data))
    return out


@pytest.fixture(scope="module")
def faststart_mp4(tmp_path_factory, fmnist_frames):
    """An mp4 whose index comes first, as cameras and streaming tools write them: a cut copy opens."""
    return make_video(tmp_path_factory.mktemp("faststart") / "fast.mp4", fmnist_frames, faststart=True)


@pytest.mark.parametrize("how", ["truncated", "overwritten"])
@pytest.mark.parametrize("video", ["fast.mp4", "h264.mp4", "mjpeg.avi", "mjpeg.mkv", "h264.mkv"])
def test_a_damaged_file_keeps_the_frames_before_and_reports_one_line(
    videos, faststart_mp4, fmnist_frames, tmp_path, video, how
):
    source_path = faststart_mp4 if video == "fast.mp4" else videos[video]
    damaged = damaged_copy(source_path, tmp_path, how)
    if video == "h264.mp4" and how == "truncated":
        # its index (moov) is written last: nothing of a cut copy can be read
        with pytest.raises(SourceError, match="not a video this decoder reads, or is damaged"):
            read(damaged)
        return
    frames, source = read(damaged)
    assert 0 < len(frames) < N_FRAMES
    if video == "h264.mkv" and how == "overwritten":
        # Matroska states no frame count, and its demuxer skips a broken cluster without an error:
        # the loss is not detectable without guessing from the timestamps (which flags variable
        # frame rate videos), so only the kept frames are checked
        assert source.stats.damage is None and source.events == []
    else:
        assert source.stats.damage
        assert len(source.events) == 1 and source.events == source.stats.events
        assert source.events[0].startswith(f"{damaged} is damaged: ")
    codec = video.split(".")[0].replace("fast", "h264")
    good = 0  # the frames before the damage are those of the original, in order (the damaged one
    # itself may show the decoder's concealment: H.264 fills a broken slice from its neighbours)
    while (
        good < len(frames)
        and frames[good].index == good
        and np.abs(frames[good].rgb.astype(float) - fmnist_frames[good]).mean() < CODEC_TOLERANCE[codec]
    ):
        good += 1
    assert good >= N_FRAMES // 4


@pytest.mark.parametrize("content", [b"", b"hello, this is not a video\n" * 20, bytes(range(256)) * 40])
def test_a_file_that_is_not_a_video_is_refused_at_open(tmp_path, content):
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=r"clip\.mp4 is not a video this decoder reads"):
        open_source(parse_source(str(path)), Sampling())


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(SourceError, match="video file not found"):
        open_source(parse_source(str(tmp_path / "none.mp4")), Sampling())


def test_without_pyav_the_message_says_what_to_install(videos, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.raises(MissingDependency) as raised:
        open_source(parse_source(str(videos["h264.mp4"])), Sampling())
    assert "pip install 'invspread-edge-runtime[video]'" in str(raised.value)
    assert raised.value.package == "av"
    with pytest.raises(MissingDependency):
        frame_at(str(videos["h264.mp4"]), 0.0)
