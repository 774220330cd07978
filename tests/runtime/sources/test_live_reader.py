"""The live reader: newest frame only for a slow consumer (real PyAV decoding of a file, read as a
live stream), reconnects with backoff and their limit, --max-frames and --duration, close() from
another thread, and the open timeout of a stream that never answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from rtsp_testing import refused_port
from video_testing import CODEC_TOLERANCE, N_FRAMES

from invspread_edge_runtime.errors import ConfigError, SourceError
from invspread_edge_runtime.sources.open import open_source
from invspread_edge_runtime.sources.pyav import live_frames, open_container
from invspread_edge_runtime.sources.reader import LiveReader, Picture
from invspread_edge_runtime.sources.sampling import Sampling
from invspread_edge_runtime.sources.spec import SourceSpec, parse_source

FAST = (0.001, 0.004)  # backoff for tests: the counting is what is checked, not the waiting


def pyav_connect(path) -> callable:
    """Opens the file through PyAV's live path (the one streams and cameras use), as fast as it decodes."""
    spec = SourceSpec("stream", str(path), "cam")
    return lambda: live_frames(open_container(spec, 5.0))


def pictures(values: list[int], pause: float = 0.0) -> Iterator[Picture]:
    for value in values:
        if pause:
            time.sleep(pause)
        yield lambda value=value: np.full((2, 2, 3), value, np.uint8)


def test_a_slow_consumer_sees_only_the_newest_frames_and_drops_are_counted(videos, fmnist_frames):
    connect = pyav_connect(videos["h264.mp4"])
    source = LiveReader("cam", "pyav (h264)", connect, Sampling(), reconnect=0, first=connect())
    seen = []
    with pytest.raises(SourceError, match=r"cam: lost \(the stream ended\) after 0 reconnects"):
        for frame in source.frames():
            seen.append(frame)
            time.sleep(0.05)  # a slow model: the decoder runs ahead
    stats = source.stats
    assert stats.decoded == N_FRAMES and stats.kept == len(seen) < N_FRAMES // 2
    assert stats.dropped > 0 and stats.kept + stats.dropped == stats.decoded
    indices = [f.index for f in seen]
    assert indices == sorted(set(indices)) and indices[-1] == N_FRAMES - 1  # the newest wins
    for frame in seen:  # each frame is the picture its index says, decoded at arrival time
        assert np.abs(frame.rgb.astype(float) - fmnist_frames[frame.index]).mean() < CODEC_TOLERANCE["h264"]
        assert frame.live and abs(frame.time - time.time()) < 60
    assert [f.time for f in seen] == sorted(f.time for f in seen)


def test_a_fast_consumer_of_a_paced_stream_misses_nothing():
    def paced() -> Iterator[Picture]:  # the next frame only once the consumer took the last one
        for value in range(8):
            deadline = time.monotonic() + 10
            while source._slot is not None and time.monotonic() < deadline:
                time.sleep(0.001)
            yield lambda value=value: np.full((2, 2, 3), value, np.uint8)

    source = LiveReader("cam", "test", lambda: iter(()), Sampling(), reconnect=0, first=paced())
    values = []
    with pytest.raises(SourceError):  # the stream ends; reconnect 0: the frames came before the error
        values.extend(int(f.rgb[0, 0, 0]) for f in source.frames())
    assert values == list(range(8)) and source.stats.dropped == 0 and source.stats.kept == 8


def test_reconnects_are_counted_reported_and_limited():
    attempts = {"n": 0}

    def connect() -> Iterator[Picture]:
        attempts["n"] += 1
        if attempts["n"] in (1, 2) or attempts["n"] > 3:
            raise SourceError("connection refused")
        return pictures([10, 11, 12], 0.01)

    events: list[str] = []
    source = LiveReader(
        "rtsp://cam/x", "test", connect, Sampling(), reconnect=3, on_event=events.append,
        first=pictures([0, 1, 2], 0.01), backoff=FAST,
    )  # fmt: skip
    got = []
    with pytest.raises(SourceError) as raised:
        got.extend(int(f.rgb[0, 0, 0]) for f in source.frames())
    # first stream ends (1), two refused (2, 3), one that works (resets the count, "reconnected")
    # and ends (1), then refused until the limit: 3 more tries, each reported; the 4th consecutive
    # failure is final. stats.reconnects counts the reconnects that brought frames again: one.
    assert source.stats.reconnects == 1 and len(events) == 7 and events == source.stats.events
    assert "the stream ended; reconnecting in" in events[0] and "(try 1 of 3)" in events[0]
    assert "reconnect failed: connection refused" in events[1] and "(try 2 of 3)" in events[1]
    assert events[3] == "reconnected to rtsp://cam/x"
    assert "(try 3 of 3)" in events[6]
    assert str(raised.value).startswith(
        "rtsp://cam/x: lost (reconnect failed: connection refused) after 3 reconnects"
    )
    assert source.stats.kept + source.stats.dropped == 6 and source.stats.decoded == 6


def test_reconnect_zero_never_reconnects():
    source = LiveReader("cam", "test", lambda: pictures([1]), Sampling(), reconnect=0, first=pictures([0]))
    with pytest.raises(SourceError, match="after 0 reconnects"):
        list(source.frames())
    assert source.stats.reconnects == 0


def test_backoff_doubles_up_to_its_ceiling():
    events: list[str] = []

    def refuse() -> Iterator[Picture]:
        raise SourceError("refused")

    source = LiveReader(
        "cam", "test", refuse, Sampling(), reconnect=5, on_event=events.append, first=pictures([0]),
        backoff=(0.001, 0.004),
    )  # fmt: skip
    with pytest.raises(SourceError):
        list(source.frames())
    assert [e.split("reconnecting in ")[1].split(" s")[0] for e in events] == [
        "0.001",
        "0.002",
        "0.004",
        "0.004",
        "0.004",
    ]


def test_max_frames_counts_the_frames_handed_over():
    source = LiveReader(
        "cam", "test", lambda: pictures([]), Sampling(max_frames=3), first=pictures(list(range(100)), 0.002)
    )
    frames = list(source.frames())  # ends normally, however many the mailbox replaced
    assert len(frames) == 3 and source.stats.kept == 3
    source.close()


def test_duration_ends_a_live_source_normally():
    def endless() -> Iterator[Picture]:
        while True:
            time.sleep(0.01)
            yield lambda: np.zeros((2, 2, 3), np.uint8)

    source = LiveReader("cam", "test", endless, Sampling(duration=0.3), first=endless())
    started = time.monotonic()
    frames = list(source.frames())
    assert 0.25 < time.monotonic() - started < 5 and frames
    assert frames[-1].time - frames[0].time < 0.3


def test_close_from_another_thread_ends_frames_promptly():
    def endless() -> Iterator[Picture]:
        while True:
            time.sleep(0.02)
            yield lambda: np.zeros((2, 2, 3), np.uint8)

    source = LiveReader("cam", "test", endless, Sampling(), first=endless())
    done = threading.Event()

    def consume() -> None:
        for _ in source.frames():
            pass
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    time.sleep(0.2)
    started = time.monotonic()
    source.close()
    assert done.wait(2.0) and time.monotonic() - started < 2.0
    assert not source._thread.is_alive()


def test_a_stream_that_never_answers_fails_within_the_open_timeout(silent_port):
    url = f"rtsp://viewer:secret@127.0.0.1:{silent_port}/stream"
    started = time.monotonic()
    with pytest.raises(SourceError) as raised:
        open_source(parse_source(url), Sampling(), open_timeout=1.0)
    assert time.monotonic() - started < 2 * 1.0 + 1.0  # the open timeout, with slack for a loaded machine
    message = str(raised.value)
    assert "no answer within 1 s" in message and "secret" not in message and "viewer@127.0.0.1" in message


def test_a_refused_stream_says_so():
    with (
        refused_port() as port,
        pytest.raises(SourceError, match=r"cannot open rtsp://127\.0\.0\.1.*Connection refused"),
    ):
        open_source(parse_source(f"rtsp://127.0.0.1:{port}/x"), Sampling(), open_timeout=2.0)


def test_a_live_source_takes_no_start_or_end():
    with pytest.raises(ConfigError, match="--start and --end apply to video files"):
        open_source(parse_source("rtsp://cam/x"), Sampling(start=1.0))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"decoder": "ffmpeg"}, "Invalid --decoder 'ffmpeg'"),
    ({"open_timeout": 0}, "--open-timeout"),
    ({"reconnect": -1}, "--reconnect"),
])  # fmt: skip
def test_bad_open_options_are_refused(videos, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        open_source(parse_source(str(videos["h264.mp4"])), Sampling(), **kwargs)


def test_live_frames_in_a_burst_get_distinct_ids():
    from invspread_edge_runtime.sources.frame import frame_id

    source = LiveReader("cam", "test", lambda: pictures([]), Sampling(), first=pictures([]))
    stamps = [source._stamp() for _ in range(500)]  # far faster than one a millisecond
    ids = [frame_id("cam", t) for t in stamps]
    assert len(set(ids)) == len(ids) and stamps == sorted(stamps)
    assert abs(stamps[0] - time.time()) < 60


def test_a_reconnect_failure_of_any_kind_is_a_failed_try():
    def broken() -> Iterator[Picture]:
        raise OSError(5, "Input/output error", "rtsp://u:pw@cam/x")

    events: list[str] = []
    source = LiveReader(
        "rtsp://u@cam/x", "test", broken, Sampling(), reconnect=2, on_event=events.append,
        first=pictures([0]), backoff=FAST,
    )  # fmt: skip
    with pytest.raises(SourceError, match="reconnect failed: Input/output error") as raised:
        list(source.frames())
    assert len(events) == 2 and "pw" not in str(raised.value) + "".join(events)


def test_a_decoder_error_never_shows_the_password_of_the_url():
    import av

    def dropped() -> Iterator[Picture]:
        yield lambda: np.zeros((2, 2, 3), np.uint8)
        raise av.error.InvalidDataError(
            1094995529, "Invalid data found when processing input", "rtsp://u:pw@cam/x"
        )

    events: list[str] = []
    source = LiveReader(
        "rtsp://u@cam/x", "test", dropped, Sampling(), reconnect=0, on_event=events.append, first=dropped()
    )
    with pytest.raises(SourceError) as raised:
        list(source.frames())
    text = str(raised.value) + "".join(events) + "".join(source.stats.events)
    assert "Invalid data found when processing input" in text and "pw" not in text


def test_close_before_frames_releases_what_was_opened(videos):
    source = open_source(parse_source(str(videos["h264.mp4"])), Sampling())
    released: list[bool] = []
    decoded = source._decoded
    original = decoded._release
    decoded._release = lambda: (released.append(True), original())
    source.close()
    assert released == [True]


def test_a_file_reader_whose_thread_died_ends_its_frames(videos):
    from invspread_edge_runtime.sources.reader import FileReader

    reader = FileReader("f", "test", iter([(0.0, lambda: np.zeros((2, 2, 3), np.uint8))]), Sampling())
    reader._put = lambda item: True  # nothing reaches the queue, not even the end
    started = time.monotonic()
    assert list(reader.frames()) == [] and time.monotonic() - started < 5
