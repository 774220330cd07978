"""Decoding with GStreamer: Jetson CSI cameras (`nvarguscamerasrc`), the Jetson's hardware video
decoder (`nvv4l2decoder`) for files and streams, and any `gst:` pipeline ending in `appsink`.

GStreamer is reached through PyGObject (`gi`, Gst and appsink's pull-sample) or, where only that
is there, OpenCV built with GStreamer (`cv2.CAP_GSTREAMER`, as JetPack's OpenCV is). The
pipelines use NVIDIA's documented elements (Jetson Linux Developer Guide, "Accelerated GStreamer").

OpenCV's route has limits, so it serves only `csi://` and `gst:` (live sources that nothing else
reads) and decoding is never switched to GStreamer automatically through it: its reads block (the
open timeout and close() wait for the pipeline's next frame or error), and it gives no frame's
presentation time (so no file is read through it).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SourceError
from .frame import FrameSource
from .reader import Damaged, FileReader, LiveReader, Picture, Releasing
from .sampling import Sampling
from .spec import SourceSpec

HARDWARE_DECODER = "nvv4l2decoder"
CSI_SOURCE = "nvarguscamerasrc"
CSI_SIZE, CSI_FPS = (1280, 720), 30  # a mode every Jetson CSI sensor offers
RTSP_LATENCY_MS = 200  # rtspsrc's jitter buffer: its default (2000 ms) would lag every frame by 2 s
SINK_NAME = "invedge_sink"
_NVMM_TO_RGB = "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format={fmt}"
NEEDS_JETPACK = (
    "On a Jetson, install JetPack's GStreamer and its Python bindings (python3-gi, gir1.2-gstreamer-1.0) "
    "and run with the system Python or a venv made with --system-site-packages; "
    "'gst-inspect-1.0 nvarguscamerasrc' checks the camera element"
)


@functools.cache
def gst_binding() -> str | None:
    """'gi' (PyGObject with Gst), 'cv2' (OpenCV built with GStreamer), or None: how we reach GStreamer."""
    try:
        _gst()
        return "gi"
    except (ImportError, ValueError):
        pass
    try:
        import cv2
    except ImportError:
        return None
    info = cv2.getBuildInformation()
    built = any(
        line.split(":", 1)[-1].strip().startswith("YES") for line in info.splitlines() if "GStreamer" in line
    )
    return "cv2" if built else None


@functools.cache
def has_element(name: str) -> bool:
    """True when the GStreamer element `name` is installed (nvv4l2decoder: we run on a Jetson)."""
    binding = gst_binding()
    if binding == "gi":
        return _gst().ElementFactory.find(name) is not None
    if binding == "cv2" and (inspect := shutil.which("gst-inspect-1.0")):
        try:
            return subprocess.run([inspect, name], capture_output=True, timeout=30).returncode == 0
        except subprocess.TimeoutExpired:
            return False
    return False


def hardware_decoding() -> bool:
    """PyGObject's GStreamer reachable and the Jetson's hardware decoder present (OpenCV's route
    gives no frame times and blocks: never chosen on its own)."""
    return gst_binding() == "gi" and has_element(HARDWARE_DECODER)


def sink(live: bool) -> str:
    """The appsink both routes read, never synced to the clock (frames as fast as they decode): a
    live source keeps only the newest buffer, a file's decoder waits for the consumer."""
    keep = "drop=true max-buffers=1" if live else "drop=false max-buffers=4"
    return f"appsink name={SINK_NAME} sync=false {keep}"


def _sink_caps(fmt: str, live: bool) -> str:
    return f"video/x-raw,format={fmt} ! {sink(live)}"


def csi_pipeline(sensor: int, fmt: str = "RGB", size: tuple[int, int] = CSI_SIZE, fps: int = CSI_FPS) -> str:
    """A Jetson CSI camera: Argus delivers NV12 in NVMM memory, nvvidconv copies it out as BGRx,
    videoconvert makes RGB (or BGR for OpenCV)."""
    width, height = size
    return (
        f"{CSI_SOURCE} sensor-id={sensor} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1 ! "
        f"{_NVMM_TO_RGB.format(fmt=fmt)} ! {sink(live=True)}"
    )


def decode_pipeline(spec: SourceSpec, fmt: str = "RGB") -> str:
    """A file or stream through decodebin, which picks nvv4l2decoder on a Jetson (its rank is the
    highest there) for H.264, H.265, VP9 and AV1; nvvidconv takes its NVMM output to system memory.
    Elsewhere decodebin picks a software decoder and videoconvert alone makes RGB."""
    if spec.target.lower().startswith(("rtsp://", "rtsps://")):
        head = f'rtspsrc location="{spec.target}" protocols=tcp latency={RTSP_LATENCY_MS} ! decodebin'
    else:
        uri = spec.target if "://" in spec.target else Path(spec.target).resolve().as_uri()
        head = f'uridecodebin uri="{uri}"'
    convert = _NVMM_TO_RGB if has_element("nvvidconv") else "videoconvert ! video/x-raw,format={fmt}"
    return f"{head} ! {convert.format(fmt=fmt)} ! {sink(spec.live)}"


def v4l2_pipeline(device: str, fmt: str = "RGB") -> str:
    return f"v4l2src device={device} ! videoconvert ! {_sink_caps(fmt, live=True)}"


def pipeline_for(spec: SourceSpec, fmt: str = "RGB") -> tuple[str, str]:
    """(pipeline, decoder label) for a source read through GStreamer."""
    if spec.kind == "gst":
        return spec.target, "gstreamer (pipeline)"
    if spec.kind == "csi":
        return csi_pipeline(int(spec.target), fmt), f"gstreamer ({CSI_SOURCE})"
    if spec.kind == "v4l2":
        return v4l2_pipeline(spec.target, fmt), "gstreamer (v4l2src)"
    decoder = HARDWARE_DECODER if has_element(HARDWARE_DECODER) else "decodebin"
    return decode_pipeline(spec, fmt), f"gstreamer ({decoder})"


def open_gstreamer(
    spec: SourceSpec,
    sampling: Sampling,
    name: str,
    *,
    open_timeout: float = 10.0,
    reconnect: int = 5,
    on_event: Callable[[str], None] | None = None,
    done: Callable[[float], bool] | None = None,
) -> FrameSource:
    """A FrameSource reading `spec` through GStreamer; SourceError when it cannot start. `done`:
    see `open.open_source`."""
    binding = gst_binding()
    if binding is None:
        if spec.kind == "csi":
            raise SourceError(
                f"{spec.name} needs JetPack's GStreamer with {CSI_SOURCE}, which is not here", NEEDS_JETPACK
            )
        raise SourceError(
            f"{spec.name} needs GStreamer, which Python cannot reach here",
            "Install PyGObject with GStreamer (python3-gi, gir1.2-gstreamer-1.0) or OpenCV built with GStreamer",
        )
    if spec.kind == "csi" and not has_element(CSI_SOURCE):
        raise SourceError(
            f"{spec.name} needs JetPack's GStreamer element {CSI_SOURCE}, which is not installed",
            NEEDS_JETPACK,
        )
    if binding == "cv2" and spec.kind not in ("csi", "gst"):
        raise SourceError(
            f"{spec.name}: GStreamer through OpenCV reads only csi:// and gst: sources",
            "Use --decoder pyav, or install PyGObject (python3-gi, gir1.2-gstreamer-1.0) for GStreamer",
        )
    pipeline, label = pipeline_for(spec, "RGB" if binding == "gi" else "BGR")
    opener = _GiPipeline if binding == "gi" else _CvPipeline
    if not spec.live:
        opened = _GiPipeline(pipeline, spec.name, open_timeout, live=False)
        return FileReader(
            name, label, Releasing(opened.file_frames(), opened.stop), sampling, on_event=on_event, done=done
        )

    def connect() -> Iterator[Picture]:
        opened = opener(pipeline, spec.name, open_timeout, live=True)
        return Releasing(opened.live_frames(), opened.stop)

    return LiveReader(name, label, connect, sampling, reconnect=reconnect, on_event=on_event, first=connect())


@functools.cache
def _gst() -> Any:
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    Gst.init(None)
    return Gst


class _GiPipeline:
    """A pipeline started through PyGObject; the first sample is awaited on construction, so that a
    source that does not start fails at open with GStreamer's own message."""

    def __init__(self, text: str, name: str, open_timeout: float, *, live: bool) -> None:
        Gst = _gst()
        from gi.repository import GLib

        self.name, self.live, self.timeout_ns = name, live, int(open_timeout * 1e9)
        try:
            self.pipeline = Gst.parse_launch(text)
        except GLib.Error as error:
            raise SourceError(
                f"invalid GStreamer pipeline for {name}: {error.message}", "Check it with gst-launch-1.0"
            ) from None
        self.sink = self._appsink()
        if self.sink.get_property("caps") is None:
            self.sink.set_property("caps", Gst.Caps.from_string("video/x-raw,format=RGB"))
        # live: keep only the newest buffer; a file: wait for the consumer (no frame dropped)
        self.sink.set_property("sync", False)
        self.sink.set_property("drop", live)
        self.sink.set_property("max-buffers", 1 if live else 4)
        self.pipeline.set_state(Gst.State.PLAYING)
        self.first = self.sink.emit("try-pull-sample", self.timeout_ns)
        if self.first is None:
            why = (self._bus_error() or f"no frame within {open_timeout:g} s").rstrip(".")
            self.stop()
            raise SourceError(
                f"cannot open {name}: {why}", "Check the pipeline with gst-launch-1.0 and the camera or URL"
            )

    def _appsink(self) -> Any:
        found = self.pipeline.get_by_name(SINK_NAME)
        if found is None:
            iterator = self.pipeline.iterate_sinks()
            while True:
                result, element = iterator.next()
                if result != _gst().IteratorResult.OK:
                    break
                if element.get_factory().get_name() == "appsink":
                    found = element
                    break
        if found is None:
            self.stop()
            raise SourceError(
                f"{self.name} has no appsink", "End the pipeline with '! videoconvert ! appsink'"
            )
        return found

    def _bus_error(self) -> str | None:
        message = self.pipeline.get_bus().timed_pop_filtered(0, _gst().MessageType.ERROR)
        return None if message is None else message.parse_error()[0].message

    def _samples(self) -> Iterator[Any]:
        """The samples until the end; a failure mid-way raises SourceError (live: the reader
        reconnects) or, for a file, Damaged (the frames before it are kept)."""
        count = 0
        try:
            sample = self.first
            while sample is not None:
                yield sample
                count += 1
                sample = self.sink.emit("try-pull-sample", self.timeout_ns)
            why = self._bus_error()
            if why is None and not self.sink.get_property("eos"):
                why = f"no frame for {self.timeout_ns / 1e9:g} s"
            if why is not None:
                if not self.live:
                    raise Damaged(f"decoding stopped after {count} frames, which are kept: {why}")
                raise SourceError(f"{self.name}: {why}")
        finally:
            self.stop()

    def live_frames(self) -> Iterator[Picture]:
        for sample in self._samples():
            yield partial(_sample_rgb, sample)

    def file_frames(self) -> Iterator[tuple[float, Picture]]:
        """(time, rgb): the time from the first frame's pts (the segment's start is not always 0);
        a buffer without pts gets its place at the caps' frame rate."""
        none, first = _gst().CLOCK_TIME_NONE, None
        for count, sample in enumerate(self._samples()):
            pts = sample.get_buffer().pts
            if pts == none:
                time_s = count / _caps_rate(sample)
            else:
                first = pts if first is None else first
                time_s = max(0.0, (pts - first) / 1e9)
            yield time_s, partial(_sample_rgb, sample)

    def stop(self) -> None:
        self.pipeline.set_state(_gst().State.NULL)


def _caps_rate(sample: Any, fallback: float = 25.0) -> float:
    """Frames per second the sample's caps state (`fallback` where they state none, or 0/1)."""
    caps = sample.get_caps()
    if caps is None:
        return fallback
    ok, numerator, denominator = caps.get_structure(0).get_fraction("framerate")
    return numerator / denominator if ok and numerator and denominator else fallback


def _sample_rgb(sample: Any) -> np.ndarray:
    """(H, W, 3) uint8 of an RGB sample; GStreamer pads each row to a multiple of 4 bytes."""
    Gst = _gst()
    caps = sample.get_caps()
    if caps is None:
        raise SourceError(
            "the pipeline delivers buffers without video caps", "End it with '! videoconvert ! appsink'"
        )
    structure = caps.get_structure(0)
    if structure.get_name() != "video/x-raw" or structure.get_value("format") != "RGB":
        raise SourceError(
            f"the pipeline delivers {caps.to_string()}, not RGB video",
            "End it with '! videoconvert ! video/x-raw,format=RGB ! appsink'",
        )
    width, height = structure.get_value("width"), structure.get_value("height")
    buffer = sample.get_buffer()
    ok, info = buffer.map(Gst.MapFlags.READ)
    if not ok:
        raise SourceError("could not read a GStreamer buffer")
    try:
        rows = np.frombuffer(info.data, np.uint8).reshape(height, -1)
        return np.ascontiguousarray(rows[:, : width * 3].reshape(height, width, 3))
    finally:
        buffer.unmap(info)


class _CvPipeline:
    """A live pipeline through OpenCV's GStreamer backend (BGR frames, converted here). Its reads
    block: `open_timeout` is not enforced, and a stalled camera holds close() until its next frame
    or error (the reader thread is a daemon; the module docstring says why this route is narrow)."""

    def __init__(self, text: str, name: str, open_timeout: float, *, live: bool) -> None:
        import cv2

        self.cv2, self.name = cv2, name
        self.capture = cv2.VideoCapture(text, cv2.CAP_GSTREAMER)
        if not self.capture.isOpened():
            raise SourceError(
                f"cannot open {name} through OpenCV's GStreamer", "Check the pipeline with gst-launch-1.0"
            )

    def live_frames(self) -> Iterator[Picture]:
        """The frames until a read fails, which raises SourceError (the reader reconnects)."""
        try:
            while True:
                ok, bgr = self.capture.read()
                if not ok:
                    raise SourceError(
                        f"{self.name}: OpenCV's GStreamer read no frame (stream ended or failed)"
                    )
                yield partial(_bgr_to_rgb, bgr)
        finally:
            self.stop()

    def stop(self) -> None:
        self.capture.release()


def _bgr_to_rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[..., ::-1])
