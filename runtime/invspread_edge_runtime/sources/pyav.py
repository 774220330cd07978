"""Decoding with PyAV (FFmpeg's libraries, bundled in its wheels): video files, streams (RTSP over
TCP, HTTP, RTP/UDP) and V4L2 cameras. The `[video]` extra of the runtime installs it.

A file's frame time is its presentation time from the stream's start (pts × time_base); a live
frame's is its arrival time, which the reader stamps.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import MissingDependency, SourceError
from .devices import check_camera, device_error
from .reader import Damaged, Picture, Releasing, error_text
from .sampling import EPSILON
from .spec import SourceSpec

VIDEO_EXTRA = "invspread-edge-runtime[video]"
INSTALL = f"pip install '{VIDEO_EXTRA}'"
# H.264 over RTP, which FFmpeg reads only with an SDP, as a `gst:` source (PORT: the UDP port): udpsrc
# must state the RTP caps for the depayloader; decodebin takes the H.264 decoder there is
# (avdec_h264, openh264dec, nvv4l2decoder on a Jetson)
RTP_H264_PIPELINE = (
    'udpsrc port=PORT caps="application/x-rtp,media=video,clock-rate=90000,encoding-name=H264" ! '
    "rtph264depay ! h264parse ! decodebin ! videoconvert ! appsink"
)
_MICROSECONDS = 1_000_000


def import_av() -> ModuleType:
    """PyAV, or MissingDependency saying how to install it."""
    try:
        import av
    except ImportError as error:
        raise MissingDependency("av", "Reading video files, streams and cameras", INSTALL) from error
    return av


def open_container(spec: SourceSpec, open_timeout: float = 10.0) -> Any:
    """The opened container of a file, stream or camera; SourceError (one line: what, where, what
    to check) for one that does not exist, does not answer within `open_timeout` s, is not a video."""
    av = import_av()
    if spec.kind == "v4l2":
        check_camera(spec.target)
    started = time.monotonic()
    try:
        container = av.open(spec.target, **_open_arguments(spec, open_timeout))
    except av.FFmpegError as error:
        timed_out = time.monotonic() - started >= open_timeout / 2 * 0.95  # the interrupt's error varies
        raise _open_error(spec, error, open_timeout, timed_out) from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{spec.name} holds no video stream", "Give a video file, stream or camera")
    return container


def _open_arguments(spec: SourceSpec, open_timeout: float) -> dict[str, Any]:
    """av.open's arguments: a timeout for opening and for each read (a stalled stream then ends
    with an error, and the reader reconnects), TCP for RTSP (no lost packets, no grey smears).
    PyAV gives its open timeout to opening and again to reading the stream's first packets
    (avformat_open_input, then avformat_find_stream_info): half each keeps the whole within it."""
    if spec.kind == "video" and "://" not in spec.target:
        return {}
    options: dict[str, str] = {}
    if spec.target.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = "tcp"
    if spec.kind == "stream":
        options["timeout"] = str(int(open_timeout * _MICROSECONDS))  # the protocol's own, in µs
    arguments: dict[str, Any] = {"options": options, "timeout": (open_timeout / 2, open_timeout)}
    if spec.kind == "v4l2":
        arguments["format"] = "v4l2"
    return arguments


def _open_error(spec: SourceSpec, error: Exception, open_timeout: float, timed_out: bool) -> SourceError:
    av = import_av()
    code = getattr(error, "errno", None)
    why = error_text(error)
    if spec.kind == "v4l2":
        return device_error(spec.target, OSError(code or 0, why))
    if spec.is_file:
        if isinstance(error, FileNotFoundError):
            return SourceError(f"video file not found: {spec.name}", "Check the path")
        if isinstance(error, av.error.InvalidDataError):
            return SourceError(
                f"{spec.name} is not a video this decoder reads, or is damaged ({why})",
                "Check the file: 'ffprobe FILE' says what it holds; an mp4 cut short loses its index",
            )
        return SourceError(f"cannot read {spec.name}: {why}", "Check the file")
    if spec.target.lower().startswith("rtp://") and isinstance(error, av.error.InvalidDataError):
        return SourceError(  # FFmpeg takes a dynamic payload type (H.264, H.265, VP8 ...) only from an SDP
            f"cannot open {spec.name}: without an SDP description only RTP/JPEG and MPEG-TS over RTP "
            "are read, and this stream is neither",
            f"Send RTP/JPEG or MPEG-TS over RTP, or read H.264 with gst:{RTP_H264_PIPELINE}",
        )
    if timed_out or isinstance(error, (av.error.ExitError, av.error.TimeoutError)) or code == errno.ETIMEDOUT:
        why = f"no answer within {open_timeout:g} s"
    return SourceError(
        f"cannot open {spec.name}: {why}",
        "Check the URL, that the camera or server is up and reachable from here, and its user and "
        "password; --open-timeout S waits longer",
    )


def stream_label(container: Any) -> str:
    """`pyav (h264)`: the decoder, for the first line."""
    return f"pyav ({container.streams.video[0].codec_context.name})"


def finished_playlist(container: Any) -> bool:
    """True for an HLS playlist that ends (#EXT-X-ENDLIST: FFmpeg then states its duration): a
    recording on a web server, read as a file (every kept frame), not as a live stream."""
    return container.format.name == "hls" and container.duration is not None


def frame_count(container: Any) -> tuple[int | None, float | None]:
    """(frames, frames per second) of a file's video stream, as its container states them (None:
    not stated; an MJPEG .avi or a raw .h264 often says neither)."""
    stream = container.streams.video[0]
    rate = float(stream.average_rate) if stream.average_rate else None
    count = int(stream.frames or 0)
    if not count and rate and stream.duration and stream.time_base:
        count = round(float(stream.duration * stream.time_base) * rate)
    return count or None, rate


def decode_file(container: Any) -> Iterator[tuple[float, Picture]]:
    """(time, rgb) of every frame of a file's first video stream, in presentation order; raises
    Damaged when decoding stops early. Closes the container when done or closed."""
    av = import_av()
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame threads: a file has no latency to keep low
    start = stream.start_time or 0
    rate = float(stream.average_rate or 25)
    count, last = 0, 0.0
    listed, length = int(stream.frames or 0), _video_length(container, stream)  # before close() frees them
    try:
        for frame in container.decode(stream):
            last = _seconds(frame.pts, start, stream.time_base) if frame.pts is not None else count / rate
            count += 1
            yield last, partial(frame.to_ndarray, format="rgb24")
    except av.FFmpegError as error:
        raise Damaged(
            f"decoding stopped after {count} frames ({last:.3f} s), which are kept: {error_text(error)}"
        ) from None
    finally:
        container.close()
    if count < listed:  # ended quietly before what its header lists: cut short
        raise Damaged(f"it ends after {count} of the {listed} frames its header lists ({last:.3f} s)")
    if length and count and last + 2.0 / rate < length - EPSILON:
        raise Damaged(f"it ends at {last:.3f} s of the {length:.3f} s its header gives")


def _video_length(container: Any, stream: Any) -> float | None:
    """Seconds of video the header promises: the stream's own duration, else the container's when
    the video is its only stream (with audio beside it, the container's may be the audio's)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and len(container.streams) == 1:
        return container.duration / _MICROSECONDS
    return None


def file_frames(container: Any) -> Releasing[tuple[float, Picture]]:
    """`decode_file`, closing the container also when the reading never starts."""
    return Releasing(decode_file(container), container.close)


def decode_live(container: Any) -> Iterator[Picture]:
    """The frames of a stream or camera as they arrive; FFmpeg errors end it (the reader reconnects)."""
    stream = container.streams.video[0]
    try:
        for frame in container.decode(stream):
            yield partial(frame.to_ndarray, format="rgb24")
    finally:
        container.close()


def live_frames(container: Any) -> Releasing[Picture]:
    """`decode_live`, closing the container also when the reading never starts."""
    return Releasing(decode_live(container), container.close)


def frame_at(path: str, time: float) -> np.ndarray:
    """(H, W, 3) uint8 RGB: the frame of the video file at `path` shown at `time` seconds (the
    last frame starting at or before it), for grids and the serve page; SourceError if none is."""
    from .spec import parse_source

    spec = parse_source(path)
    container = open_container(spec)
    try:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        rate = float(stream.average_rate or 25)
        if time > 0:
            container.seek(
                start + int(time / stream.time_base), stream=stream, backward=True, any_frame=False
            )
        shown, shown_at = None, 0.0
        for frame in container.decode(stream):
            at = _seconds(frame.pts, start, stream.time_base) if frame.pts is not None else 0.0
            if at > time + EPSILON:
                break
            shown, shown_at = frame, at
        else:
            if shown is not None and time - shown_at > 1.0 / rate + EPSILON:
                shown = None  # past the last frame
        rgb = None if shown is None else shown.to_ndarray(format="rgb24")
    except import_av().FFmpegError as error:
        raise SourceError(
            f"cannot read {spec.name} at {time:.3f} s: {error_text(error)}", "Check the file"
        ) from None
    finally:
        container.close()
    if rgb is None:
        raise SourceError(f"{spec.name} shows no frame at {time:.3f} s", "Give a time within the video")
    return rgb


def _seconds(pts: int, start: int, time_base: Any) -> float:
    return max(0.0, float((pts - start) * time_base))
