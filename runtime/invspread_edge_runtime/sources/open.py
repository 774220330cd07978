"""`open_source`: the one way to open a video file, stream or camera, with the decoder that suits it.

Decoder "auto": PyAV for files, URLs and V4L2 cameras; GStreamer for `csi://N` and `gst:` pipelines,
and for files and streams on a Jetson (where `nvv4l2decoder`, the hardware decoder, is installed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..bounds import OPEN_TIMEOUT, RECONNECT, check_bounds
from ..errors import ConfigError, SourceError
from .frame import FrameSource
from .reader import FileReader, LiveReader, Picture
from .sampling import Sampling
from .spec import SourceSpec

DECODERS = ("auto", "pyav", "gstreamer")


def open_source(
    spec: SourceSpec,
    sampling: Sampling,
    *,
    name: str | None = None,
    open_timeout: float = 10.0,
    reconnect: int = 5,
    decoder: str = "auto",
    on_event: Callable[[str], None] | None = None,
    done: Callable[[float], bool] | None = None,
) -> FrameSource:
    """The opened source; SourceError (one line) for one that cannot be opened within `open_timeout`
    seconds. `name`: the id prefix (a file's path relative to the root; default: `spec.name`);
    `reconnect`: consecutive reconnect tries of a live source; `on_event`: one line per stream drop,
    reconnect or damage; `done(time)`: a file's kept frame at `time` is embedded already (a resumed
    run): counted, never converted to RGB nor yielded."""
    check_bounds(
        {"open_timeout": OPEN_TIMEOUT, "reconnect": RECONNECT},
        {"open_timeout": open_timeout, "reconnect": reconnect},
    )
    if spec.kind == "image":
        raise SourceError(
            f"{spec.name} is an image, not a video", "Images are read as images, not opened as sources"
        )
    if spec.live and sampling.windowed:
        raise ConfigError(
            f"--start and --end apply to video files; {spec.name} is live", "Use --duration for a live source"
        )
    name = name or spec.name
    if choose_decoder(spec, decoder) == "gstreamer":
        from .gstreamer import open_gstreamer

        return open_gstreamer(
            spec, sampling, name, open_timeout=open_timeout, reconnect=reconnect, on_event=on_event, done=done
        )
    return _open_pyav(spec, sampling, name, open_timeout, reconnect, on_event, done)


@dataclass(frozen=True)
class StreamSettings:
    """How video sources are read, as every verb's stream options say: what is kept of each, and
    how a stream is opened. `open` is how the verbs open a source."""

    sampling: Sampling = field(default_factory=Sampling)
    open_timeout: float = 10.0
    reconnect: int = 5
    decoder: str = "auto"

    def __post_init__(self) -> None:
        check_bounds({"open_timeout": OPEN_TIMEOUT, "reconnect": RECONNECT}, vars(self))
        if self.decoder not in DECODERS:
            raise ConfigError(f"Invalid --decoder {self.decoder!r}. Only {', '.join(DECODERS)} are supported")

    def open(
        self,
        spec: SourceSpec,
        *,
        name: str | None = None,
        on_event: Callable[[str], None] | None = None,
        done: Callable[[float], bool] | None = None,
    ) -> FrameSource:
        """`open_source` with these settings."""
        return open_source(
            spec,
            self.sampling,
            name=name,
            open_timeout=self.open_timeout,
            reconnect=self.reconnect,
            decoder=self.decoder,
            on_event=on_event,
            done=done,
        )


def model_threads(requested: int, decoding: bool) -> int:
    """The model's CPU threads (`--threads`; 0: all cores) when video is decoded in this process too.

    With none asked for, all cores but one: ONNX Runtime's threads spin while they wait for work,
    and on all cores they starve the decoder thread. Measured on 2 cores, an H.264 file of 256 px
    frames: 1 250-1 315 frames/s with one model thread, 770-940 with two (benchmarks/video_embed.py).
    """
    if requested or not decoding:
        return requested
    return max(1, (os.cpu_count() or 1) - 1)


def choose_decoder(spec: SourceSpec, decoder: str = "auto") -> str:
    """'pyav' or 'gstreamer' for `spec`; ConfigError for a decoder that cannot read it."""
    if decoder not in DECODERS:
        raise ConfigError(f"Invalid --decoder {decoder!r}", f"Use one of: {', '.join(DECODERS)}")
    if spec.kind in ("csi", "gst"):
        if decoder == "pyav":
            raise ConfigError(
                f"{spec.name} is read through GStreamer, not PyAV", "Use --decoder auto or gstreamer"
            )
        return "gstreamer"
    if decoder != "auto":
        return decoder
    if spec.kind == "v4l2":
        return "pyav"
    from .gstreamer import hardware_decoding

    return "gstreamer" if hardware_decoding() else "pyav"


def _open_pyav(
    spec: SourceSpec,
    sampling: Sampling,
    name: str,
    open_timeout: float,
    reconnect: int,
    on_event: Callable[[str], None] | None,
    done: Callable[[float], bool] | None,
) -> FrameSource:
    from .pyav import file_frames, finished_playlist, frame_count, live_frames, open_container, stream_label

    container = open_container(spec, open_timeout)
    label = stream_label(container)
    if not spec.live or finished_playlist(container):
        reader = FileReader(name, label, file_frames(container), sampling, on_event=on_event, done=done)
        reader.frame_count, reader.frame_rate = frame_count(container)
        return reader

    def connect() -> Iterator[Picture]:
        return live_frames(open_container(spec, open_timeout))

    return LiveReader(
        name, label, connect, sampling, reconnect=reconnect, on_event=on_event, first=live_frames(container)
    )
