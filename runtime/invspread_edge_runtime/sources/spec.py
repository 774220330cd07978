"""What a source argument names, before anything is opened: an image, a video file, a folder, a
stream URL, a camera or a GStreamer pipeline (the forms jetson-inference's `videoSource` takes).

    photo.jpg  clip.mp4  file:///data/clip.mp4  clips/        files and folders
    rtsp://cam1/stream  rtsps://…  http(s)://…  rtp://@:5000  streams (live)
    v4l2:///dev/video0  /dev/video0                            a USB (V4L2) camera
    csi://0                                                    a Jetson CSI camera (nvarguscamerasrc)
    gst:videotestsrc ! videoconvert ! appsink                  any GStreamer pipeline ending in appsink
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import DataError, SourceError
from ..preprocess import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".mpeg", ".ts", ".mts",
    ".flv", ".wmv", ".3gp", ".ogv", ".mjpeg", ".mjpg", ".h264", ".264", ".h265", ".265", ".hevc", ".y4m",
)  # fmt: skip
# a URL ending in one of these is a recorded file on a web server (finite); .mjpg, .ts, .h264 ...
# on a URL are what IP cameras serve live
URL_FILE_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi")
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtp", "udp")
LIVE_KINDS = ("stream", "v4l2", "csi", "gst")
MAX_CSI_SENSOR = 7  # nvarguscamerasrc sensor-id: the Jetson carrier boards have at most 8 CSI ports
_DEVICE = re.compile(r"^/dev/video\d+$")
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:password|passwd|pwd|pass|token|key|secret|auth)=)[^&;#\s\"']*")
_USERINFO = re.compile(r"(\w[\w+.-]*://[^:/@\s\"']+):[^/\s\"']*@")  # to the last @: a password may hold one
_GST_SECRET = re.compile(r"(\buser-pw\s*=\s*)(\"[^\"]*\"|'[^']*'|[^\s!]+)")  # rtspsrc's password property


@dataclass(frozen=True)
class SourceSpec:
    """`kind`: image, video, stream, v4l2, csi or gst. `target` is what the decoder opens (a path,
    a URL with its credentials, a device, a pipeline); `name` is how ids and messages show it (a
    URL without its password)."""

    kind: str
    target: str
    name: str

    @property
    def live(self) -> bool:
        return self.kind in LIVE_KINDS

    @property
    def is_file(self) -> bool:
        return self.kind in ("image", "video")


def parse_source(text: str) -> SourceSpec:
    """The source one argument names; a folder is `expand`'s. SourceError for a form we do not take."""
    text = str(text)
    lowered = text.lower()
    if lowered.startswith("gst:"):
        return _gst(text[4:].strip())
    if lowered.startswith("csi://"):
        return _csi(text)
    if lowered.startswith("v4l2://"):
        device = text[len("v4l2://") :]
        return _v4l2(
            device if device.startswith("/") else f"/dev/video{device}" if device.isdigit() else device
        )
    if _DEVICE.match(text):
        return _v4l2(text)
    if lowered.startswith("file://"):
        return _file(Path(unquote(urlsplit(text).path)))
    scheme = lowered.split("://", 1)[0] if "://" in lowered else ""
    if scheme in STREAM_SCHEMES:
        return _url(text, scheme)
    if scheme:
        raise SourceError(
            f"unsupported source {redact(text)!r}: {scheme}:// is not a source type we read",
            "Use a file or folder, rtsp://, rtsps://, http(s)://, rtp://, udp://, v4l2:///dev/videoN, csi://N or gst:PIPELINE",
        )
    return _file(Path(text))


def redact(url: str) -> str:
    """A URL, or any text holding URLs (a gst: pipeline), without passwords: `user:secret@` loses
    `:secret` and query secrets (`?password=`, `token=`, `key=` ...) become `***`. Ids, logs and
    messages never show one."""
    text = _USERINFO.sub(r"\1@", url)
    text = _GST_SECRET.sub(r"\1***", text)
    return _SECRET_QUERY.sub(r"\1***", text)


def is_video_file(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_location(text: str | os.PathLike[str]) -> bool:
    """True for what `parse_source` reads as a URL (file:// too), a camera or a gst: pipeline, never
    a path: such an argument stays text (a `Path` would fold its `//`)."""
    text = str(text)
    return "://" in text or text.lower().startswith("gst:") or bool(_DEVICE.match(text))


def as_input(text: str | os.PathLike[str]) -> Path | str:
    """A command's input argument: a file or folder (`file://` too) as a Path, a URL, camera or
    pipeline as text."""
    text = str(text)
    if text.lower().startswith("file://"):
        return Path(unquote(urlsplit(text).path))
    return text if is_location(text) else Path(text)


@dataclass(frozen=True)
class VideoInput:
    """One video file, stream or camera of a run; `name` is the prefix of its frames' ids."""

    spec: SourceSpec
    name: str

    @property
    def live(self) -> bool:
        return self.spec.live


def _file(path: Path) -> SourceSpec:
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return SourceSpec("video", str(path), str(path))
    if suffix in IMAGE_SUFFIXES:
        return SourceSpec("image", str(path), str(path))
    raise DataError(
        f"not an image or video file: {path}",
        f"Images: {', '.join(IMAGE_SUFFIXES)}; videos: {', '.join(VIDEO_SUFFIXES)}",
    )


def _url(text: str, scheme: str) -> SourceSpec:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError as error:
        raise SourceError(
            f"invalid source URL {redact(text)!r}: {error}",
            f"Write it as {scheme}://[USER:PASSWORD@]HOST[:PORT]/PATH",
        ) from None
    if scheme in ("http", "https") and Path(parts.path).suffix.lower() in URL_FILE_SUFFIXES:
        return SourceSpec("video", text, redact(text))  # a recorded video on a web server: finite
    if scheme in ("http", "https") and Path(parts.path).suffix.lower() in IMAGE_SUFFIXES:
        raise DataError(
            f"{redact(text)} is an image on a web server: images are read from files only",
            "Download it first, then pass the file",
        )
    if not parts.netloc and scheme not in ("rtp", "udp"):
        raise SourceError(
            f"invalid source URL {redact(text)!r}: no host", f"Write it as {scheme}://HOST[:PORT]/PATH"
        )
    return SourceSpec("stream", text, redact(text))


def _v4l2(device: str) -> SourceSpec:
    if not _DEVICE.match(device):
        raise SourceError(
            f"invalid camera {device!r}: a V4L2 camera is a /dev/videoN device",
            "Write it as v4l2:///dev/video0 or /dev/video0 (list them with 'v4l2-ctl --list-devices')",
        )
    return SourceSpec("v4l2", device, f"v4l2://{device}")


def _csi(text: str) -> SourceSpec:
    sensor = text[len("csi://") :]
    if not sensor.isdigit() or int(sensor) > MAX_CSI_SENSOR:
        raise SourceError(
            f"invalid CSI camera {text!r}: the sensor id is a number from 0 to {MAX_CSI_SENSOR}",
            "Write it as csi://0",
        )
    return SourceSpec("csi", str(int(sensor)), f"csi://{int(sensor)}")


def _gst(pipeline: str) -> SourceSpec:
    if not re.search(r"\bappsink\b", pipeline):
        raise SourceError(
            "a gst: pipeline must end in appsink, where the frames are taken",
            "End it with '! videoconvert ! appsink' (e.g. gst:videotestsrc ! videoconvert ! appsink)",
        )
    return SourceSpec("gst", pipeline, redact(f"gst:{pipeline}"))
