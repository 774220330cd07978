"""Streams against a real RTSP server on loopback (tests/rtsp_server.py: GstRtspServer, the system
Python): plain PyAV first, so the server itself is proven, then the runtime's `open_source` on it:
reading, a server killed mid-stream and restarted, a server that never answers, a refused port."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
from rtsp_testing import MATCH_TOLERANCE, match_picture, read_rtsp, refused_port

# One worker runs them all: one server per worker, and the kill/restart test must not cut a reader
# of another test in the middle.
pytestmark = pytest.mark.xdist_group("rtsp")

OPEN_TIMEOUT = 2.0


def assert_pictures(frames, images) -> list[int]:
    """Each frame shows one of `images` within the codec's loss: the indices, in order."""
    shown = []
    for rgb in frames:
        index, error = match_picture(rgb, images)
        assert error < MATCH_TOLERANCE, f"a frame matches no picture of the stream (closest {error:.1f})"
        shown.append(index)
    return shown


def assert_looping(shown: list[int], period: int) -> None:
    """A live reader sees the loop in order, at most skipping pictures (never out of order)."""
    steps = [(b - a) % period for a, b in itertools.pairwise(shown)]
    assert all(1 <= s <= period // 2 for s in steps), shown


# --- the server, proven with plain PyAV ------------------------------------------------------------


def test_pyav_reads_the_file_mount_from_its_first_frame(rtsp_server):
    rtsp_server.ensure_running()
    frames = read_rtsp(rtsp_server.file_url, 30)
    assert len(frames) == 30 and frames[0].shape == (112, 112, 3)
    assert assert_pictures(frames, rtsp_server.file_images) == list(range(30))


def test_pyav_reads_the_live_mount_as_a_loop_of_known_pictures(rtsp_server):
    rtsp_server.ensure_running()
    frames = read_rtsp(rtsp_server.live_url, 30)
    assert_looping(assert_pictures(frames, rtsp_server.live_images), len(rtsp_server.live_images))


def test_two_clients_read_the_live_mount_at_once(rtsp_server):
    rtsp_server.ensure_running()
    results: dict[int, list] = {}

    def read(slot: int) -> None:
        results[slot] = read_rtsp(rtsp_server.live_url, 10)

    readers = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=30)
    assert sorted(results) == [0, 1] and all(len(r) == 10 for r in results.values())


def test_pyav_sees_the_server_killed_and_reads_again_after_the_restart(rtsp_server):
    import av

    rtsp_server.ensure_running()
    try:
        with av.open(rtsp_server.live_url, options={"rtsp_transport": "tcp"}, timeout=5) as container:
            frames = container.decode(video=0)
            next(frames)
            rtsp_server.kill()
            with pytest.raises((av.error.FFmpegError, StopIteration)):
                for _ in range(1000):  # what was buffered, then the cut
                    next(frames)
    finally:
        rtsp_server.restart()
    assert len(read_rtsp(rtsp_server.live_url, 5)) == 5


# --- the runtime's sources on it ---------------------------------------------------------------------


@pytest.fixture
def sources():
    """The runtime's open_source and what it needs (skipped until the sources module exists)."""
    opened = pytest.importorskip("invspread_edge_runtime.sources.open")
    from invspread_edge_runtime.errors import SourceError
    from invspread_edge_runtime.sources.sampling import Sampling
    from invspread_edge_runtime.sources.spec import parse_source

    class Sources:
        error = SourceError

        @staticmethod
        def open(url: str, max_frames: int | None = None, **kwargs):
            sampling = Sampling(max_frames=max_frames)
            return opened.open_source(parse_source(url), sampling, open_timeout=OPEN_TIMEOUT, **kwargs)

    return Sources


def take(source, count: int) -> list:
    frames = []
    for frame in source.frames():
        frames.append(frame)
        if len(frames) >= count:
            break
    return frames


def test_open_source_reads_n_frames_from_the_file_mount(rtsp_server, sources):
    rtsp_server.ensure_running()
    with sources.open(rtsp_server.file_url, max_frames=20) as source:
        frames = list(source.frames())
    assert len(frames) == 20 and source.live
    shown = assert_pictures([f.rgb for f in frames], rtsp_server.file_images)
    assert all(a < b for a, b in itertools.pairwise(shown)), (
        shown
    )  # in order, none twice (a live reader may skip)
    assert all(a.index < b.index for a, b in itertools.pairwise(frames))
    assert all(f.live and f.source for f in frames)
    times = [f.time for f in frames]
    assert times == sorted(times) and abs(times[-1] - time.time()) < 60  # live: the Unix time of arrival


def test_open_source_reads_known_pictures_from_the_live_mount(rtsp_server, sources):
    rtsp_server.ensure_running()
    with sources.open(rtsp_server.live_url, max_frames=15) as source:
        frames = list(source.frames())
    assert len(frames) == 15
    assert_looping(
        assert_pictures([f.rgb for f in frames], rtsp_server.live_images), len(rtsp_server.live_images)
    )
    assert source.stats.kept == 15 and source.stats.reconnects == 0


def test_a_server_killed_mid_stream_and_restarted_is_reconnected(rtsp_server, sources):
    rtsp_server.ensure_running()
    events: list[str] = []
    after: list = []
    try:
        with sources.open(rtsp_server.live_url, reconnect=10, on_event=events.append) as source:
            frames = source.frames()
            before = [next(frames) for _ in range(5)]
            rtsp_server.kill()
            restarted = threading.Timer(1.0, rtsp_server.start)
            restarted.start()
            cut = time.time()
            for frame in frames:
                if frame.time > cut + 0.5:  # decoded after the restart, not what was buffered
                    after.append(frame)
                if len(after) >= 5:
                    break
            restarted.join()
    finally:
        rtsp_server.ensure_running()
    assert len(before) == 5 and len(after) == 5
    assert source.stats.reconnects >= 1 and events, "the drop and the reconnect are reported"
    assert_pictures([f.rgb for f in after], rtsp_server.live_images)


def test_a_server_that_never_answers_fails_within_the_open_timeout(silent_port, sources):
    started = time.monotonic()
    with pytest.raises(sources.error) as failure:
        sources.open(f"rtsp://127.0.0.1:{silent_port}/stream", reconnect=0)
    elapsed = time.monotonic() - started
    assert elapsed < 2 * OPEN_TIMEOUT + 1.0, f"open took {elapsed:.1f} s with --open-timeout {OPEN_TIMEOUT}"
    assert f"127.0.0.1:{silent_port}" in str(failure.value)


def test_a_refused_port_fails_at_once(sources):
    with refused_port() as port:
        started = time.monotonic()
        with pytest.raises(sources.error) as failure:
            sources.open(f"rtsp://127.0.0.1:{port}/stream", reconnect=0)
        assert time.monotonic() - started < 2 * OPEN_TIMEOUT
    assert f"127.0.0.1:{port}" in str(failure.value)


def test_a_password_never_appears_in_the_error(silent_port, sources):
    with pytest.raises(sources.error) as failure:
        sources.open(f"rtsp://admin:hunter2@127.0.0.1:{silent_port}/stream", reconnect=0)
    assert "hunter2" not in str(failure.value)


@pytest.mark.parametrize("mount", ["file", "live"])
def test_frames_are_rgb_of_the_stream_size(rtsp_server, sources, mount):
    rtsp_server.ensure_running()
    with sources.open(f"{rtsp_server.url}/{mount}", max_frames=3) as source:
        frames = list(source.frames())
    assert all(f.rgb.shape == (112, 112, 3) and f.rgb.dtype == np.uint8 for f in frames)


def test_a_server_that_stays_down_ends_the_run_with_a_source_error(rtsp_server, sources):
    rtsp_server.ensure_running()
    events: list[str] = []
    read: list = []
    try:
        with sources.open(rtsp_server.live_url, reconnect=1, on_event=events.append) as source:
            frames = source.frames()
            read.append(next(frames))
            rtsp_server.kill()
            started = time.monotonic()
            with pytest.raises(sources.error) as failure:
                for frame in frames:  # what was buffered, then the error once the tries are used up
                    read.append(frame)
            elapsed = time.monotonic() - started
    finally:
        rtsp_server.ensure_running()
    assert rtsp_server.url.removeprefix("rtsp://") in str(failure.value)
    assert elapsed < 30 and events and len(read) >= 1


def test_a_password_never_appears_when_the_stream_drops(rtsp_server, sources):
    """PyAV names the URL it opened (password and all) in its read errors: none of it reaches the
    events, the stats or the final error."""
    rtsp_server.ensure_running()
    url = rtsp_server.live_url.replace("rtsp://", "rtsp://viewer:hunter2@")
    events: list[str] = []
    try:
        with sources.open(url, reconnect=1, on_event=events.append) as source:
            frames = source.frames()
            next(frames)
            rtsp_server.kill()
            with pytest.raises(sources.error) as failure:
                for _ in frames:
                    pass
    finally:
        rtsp_server.ensure_running()
    text = str(failure.value) + "\n".join(events) + "\n".join(source.stats.events) + source.name
    assert events and "hunter2" not in text and "viewer@127.0.0.1" in text
