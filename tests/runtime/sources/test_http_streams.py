"""HTTP and RTP streams on loopback, read by the runtime's `open_source` (PyAV): an MJPEG camera
(multipart/x-mixed-replace, FFmpeg's mpjpeg demuxer finds it by itself), an HLS playlist written by
PyAV and served over HTTP, and RTP/JPEG sent by the system GStreamer. Frames are checked against the
Fashion-MNIST pictures they were made from (http_testing.py serves them)."""

from __future__ import annotations

import itertools
import time

import pytest
from http_testing import (
    gst_rtp_missing,
    mjpeg_camera,
    rtp_h264_sender,
    rtp_jpeg_sender,
    serve_folder,
    udp_port,
    write_hls,
)
from rtsp_testing import MATCH_TOLERANCE, match_picture, skip_or_fail

from invspread_edge_runtime.cli import create_app, run
from invspread_edge_runtime.embeddings.reader import load_embeddings
from invspread_edge_runtime.errors import SourceError
from invspread_edge_runtime.sources.open import open_source
from invspread_edge_runtime.sources.pyav import RTP_H264_PIPELINE
from invspread_edge_runtime.sources.sampling import Sampling
from invspread_edge_runtime.sources.spec import parse_source

pytest.importorskip("av")

OPEN_TIMEOUT = 3.0
RTP_OPEN_TIMEOUT = 10.0  # a loaded machine may be slow to start gst-launch and its first packets
CAMERA_FIRST, CAMERA_FRAMES = 2000, 10  # the camera loops test images 2000..2009
HLS_FRAMES = 50  # test images 0..49, 2 s at 25 fps


@pytest.fixture(scope="module")
def camera_images(fmnist_test):
    return fmnist_test.images[CAMERA_FIRST : CAMERA_FIRST + CAMERA_FRAMES, 0]


@pytest.fixture(scope="module")
def hls_images(fmnist_test):
    return fmnist_test.images[:HLS_FRAMES, 0]


def opened(url: str, max_frames: int | None = None, **kwargs):
    kwargs.setdefault("open_timeout", OPEN_TIMEOUT)
    return open_source(parse_source(url), Sampling(max_frames=max_frames), decoder="pyav", **kwargs)


def shown(frames, images) -> list[int]:
    """The picture each frame shows (within the codec's loss), in order."""
    indices = []
    for frame in frames:
        index, error = match_picture(frame.rgb, images)
        assert error < MATCH_TOLERANCE, f"frame {frame.index} matches no picture (closest {error:.1f})"
        indices.append(index)
    return indices


def assert_looping(indices: list[int], period: int) -> None:
    """A live reader sees the loop in order, at most skipping pictures (never out of order)."""
    steps = [(b - a) % period for a, b in itertools.pairwise(indices)]
    assert all(1 <= s <= period // 2 for s in steps), indices


# --- MJPEG over HTTP -----------------------------------------------------------------------------------


def test_an_mjpeg_url_is_a_live_stream():
    assert parse_source("http://127.0.0.1:8080/video.mjpg").live
    assert parse_source("http://127.0.0.1:8080/index.m3u8").live  # a playlist may be live: see HLS below


def test_an_mjpeg_camera_is_read_as_known_pictures(camera_images):
    with mjpeg_camera(camera_images) as camera, opened(camera.url, max_frames=12) as source:
        frames = list(source.frames())
    assert len(frames) == 12 and source.live and source.decoder == "pyav (mjpeg)"
    assert all(f.live and f.rgb.shape == (112, 112, 3) for f in frames)
    assert_looping(shown(frames, camera_images), CAMERA_FRAMES)
    assert all(a.time < b.time and a.index < b.index for a, b in itertools.pairwise(frames))
    assert abs(frames[-1].time - time.time()) < 60  # live: the Unix time of arrival
    assert source.stats.kept == 12 and source.stats.reconnects == 0


def test_an_mjpeg_camera_stopped_and_restarted_is_reconnected(camera_images):
    events: list[str] = []
    after = []
    with (
        mjpeg_camera(camera_images) as camera,
        opened(camera.url, reconnect=5, on_event=events.append) as source,
    ):
        frames = source.frames()
        before = [next(frames) for _ in range(3)]
        camera.stop()
        camera.start()  # the same port
        for frame in frames:
            if source.stats.reconnects >= 1:  # decoded after the reconnect, not what was buffered
                after.append(frame)
            if len(after) >= 3:
                break
    assert len(before) == 3 and len(after) == 3
    assert source.stats.reconnects >= 1 and any("reconnected" in e for e in events), events
    shown(after, camera_images)


def test_an_mjpeg_camera_that_stays_down_ends_in_a_source_error(camera_images):
    events: list[str] = []
    with (
        mjpeg_camera(camera_images) as camera,
        opened(camera.url, reconnect=1, on_event=events.append) as source,
    ):
        frames = source.frames()
        next(frames)
        camera.stop()
        started = time.monotonic()
        with pytest.raises(SourceError) as failure:
            for _ in frames:  # what was buffered, then the error once the tries are used up
                pass
    assert time.monotonic() - started < 15 and events
    text = str(failure.value)
    assert f"127.0.0.1:{camera.port}/video.mjpg" in text and "after 1 reconnect" in text


def test_invedge_embed_reads_an_mjpeg_camera(capsys, tmp_path, watch_model, camera_images, monkeypatch):
    import invspread_edge_runtime.plugins as plugins

    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    out = tmp_path / "cam.emb"
    with mjpeg_camera(camera_images) as camera:
        capsys.readouterr()
        argv = ["embed", str(watch_model), camera.url, "--out", str(out), "--max-frames", "5"]
        code = run(create_app(), argv)
        err = capsys.readouterr().err
    assert code == 0, err
    embedded = load_embeddings(out)
    assert len(embedded) == 5 and all(item.startswith(f"{camera.url}#t=") for item in embedded.ids)
    assert all(info["live"] and info["source"] == camera.url for info in embedded.frames.values())
    assert embedded.manifest["sources"][camera.url]["kept"] == 5


# --- HLS --------------------------------------------------------------------------------------------


def test_an_hls_playlist_over_http_is_read_as_known_pictures(tmp_path, hls_images):
    """A video-on-demand playlist (PyAV's hls muxer, libx264) on a loopback web server. A `.m3u8` URL
    may be live to the spec (the playlist, not the URL, says whether it ends); once opened, a playlist
    that ends is read as a file: every frame, in order, with times from its start, and then it ends."""
    write_hls(tmp_path / "hls", hls_images)
    with serve_folder(tmp_path / "hls") as base, opened(f"{base}/index.m3u8") as source:
        frames = list(source.frames())
    assert not source.live and source.decoder == "pyav (h264)" and source.stats.reconnects == 0
    assert shown(frames, hls_images) == list(range(HLS_FRAMES))
    assert [frame.index for frame in frames] == list(range(HLS_FRAMES))
    assert [round(frame.time, 3) for frame in frames] == [round(i / 25, 3) for i in range(HLS_FRAMES)]


def test_a_finished_hls_playlist_is_not_read_again(capsys, tmp_path, watch_model, hls_images, monkeypatch):
    """A `.m3u8` URL appends to its folder as a live source would, but a playlist that ended was
    read as a file: the next run does not download it again (here its server is gone)."""
    import invspread_edge_runtime.plugins as plugins

    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    write_hls(tmp_path / "hls", hls_images[:10])
    out = tmp_path / "hls.emb"
    with serve_folder(tmp_path / "hls") as base:
        url = f"{base}/index.m3u8"
        capsys.readouterr()
        code = run(create_app(), ["embed", str(watch_model), url, "--out", str(out), "--every", "2"])
        assert code == 0, capsys.readouterr().err
    first = load_embeddings(out)
    assert len(first) == 5 and not first.manifest["sources"][url]["live"]
    code = run(create_app(), ["embed", str(watch_model), url, "--out", str(out), "--every", "2"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    again = load_embeddings(out)
    assert again.ids == first.ids and again.manifest["sources"] == first.manifest["sources"]


def test_an_hls_playlist_that_is_missing_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with serve_folder(tmp_path / "empty") as base, pytest.raises(SourceError) as failure:
        opened(f"{base}/index.m3u8", reconnect=0)
    assert f"{base}/index.m3u8" in str(failure.value)


# --- RTP ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gst_rtp():
    reason = gst_rtp_missing()
    if reason is not None:
        skip_or_fail(f"the RTP tests need the system GStreamer ({reason})")  # in CI (CI=true): a failure


def test_rtp_jpeg_is_read_without_an_sdp(tmp_path, camera_images, gst_rtp):
    """RTP/JPEG has a static payload type (26): FFmpeg reads `rtp://HOST:PORT` with no SDP."""
    port = udp_port()
    with (
        rtp_jpeg_sender(tmp_path / "jpegs", camera_images, port),
        opened(f"rtp://127.0.0.1:{port}", max_frames=8, reconnect=0, open_timeout=RTP_OPEN_TIMEOUT) as source,
    ):
        frames = list(source.frames())
    assert len(frames) == 8 and source.live and source.decoder == "pyav (mjpeg)"
    assert_looping(shown(frames, camera_images), CAMERA_FRAMES)


def test_rtp_h264_without_an_sdp_is_one_clear_error(gst_rtp):
    """H.264 over RTP has a dynamic payload type: FFmpeg needs an SDP; the error says what to do."""
    port = udp_port()
    with rtp_h264_sender(port), pytest.raises(SourceError) as failure:
        opened(f"rtp://127.0.0.1:{port}", reconnect=0, open_timeout=RTP_OPEN_TIMEOUT)
    text = str(failure.value)
    assert f"rtp://127.0.0.1:{port}" in text and "SDP" in text and "gst:udpsrc" in text
    assert f"gst:{RTP_H264_PIPELINE}" in text  # read in test_cameras_and_gstreamer.py
    assert "\n" not in text
