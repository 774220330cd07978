"""One decoded picture and the interface of everything that yields them.

A frame's id is its source and time, `SOURCE#t=SECONDS` (the W3C media-fragment form): a file's
time counts from its start, a live source's is the Unix time at which the frame arrived, so that
a second run on the same camera appends new ids instead of repeating old ones.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

TIME_DECIMALS = 3  # milliseconds: two frames of one source never share an id below 1000 frames/s
_ID = re.compile(r"^(?P<source>.+)#t=(?P<time>\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Frame:
    """A decoded frame: `rgb` is (H, W, 3) uint8; `index` counts decoded frames from the start of
    the file or stream (0-based, the frames sampling skipped included); `time` in seconds."""

    rgb: np.ndarray
    source: str  # the source's name as ids and messages show it (never with a password)
    index: int
    time: float
    live: bool = False

    @property
    def item_id(self) -> str:
        return frame_id(self.source, self.time)

    @property
    def at(self) -> str:
        """Its time as people read it (`format_time`)."""
        return format_time(frame_info(self))


def frame_id(source: str, time: float) -> str:
    """`shop.mp4#t=12.480`: the id of the frame of `source` at `time` seconds."""
    return f"{source}#t={time:.{TIME_DECIMALS}f}"


def split_frame_id(item_id: str) -> tuple[str, float] | None:
    """(source, time) of a frame's id; None for any other id (an image's path)."""
    match = _ID.match(item_id)
    return None if match is None else (match["source"], float(match["time"]))


@dataclass
class SourceStats:
    """What a source did, for the closing lines and `--json`."""

    decoded: int = 0  # frames decoded (kept or not)
    kept: int = 0  # frames the sampling kept and the source yielded
    dropped: int = 0  # live only: kept frames replaced by a newer one before the model took them
    reconnects: int = 0  # live only: reconnects that brought frames again (failed tries: in events)
    damage: str | None = None  # a file whose decoding stopped early: what the decoder said, and where
    events: list[str] = field(default_factory=list)  # drops, reconnects, damage: one line each

    def to_dict(self) -> dict[str, object]:
        return {
            "decoded": self.decoded,
            "kept": self.kept,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "damage": self.damage,
        }


class FrameSource(ABC):
    """A video file, stream or camera, opened: `frames()` yields the frames the sampling keeps.

    A finite source (a file) yields every kept frame, however slow the consumer; a live one keeps
    only the newest frame while the consumer is busy and counts the others in `stats.dropped`.
    `close()` stops any reader thread and releases the device or connection; it is safe to call twice.
    """

    name: str  # as in ids and messages
    live: bool
    decoder: str  # what decodes it, for the first line ("pyav (h264)", "gstreamer (nvv4l2decoder)")
    stats: SourceStats
    frame_count: int | None = None  # a file's frames, where its container says (progress totals)
    frame_rate: float | None = None  # a file's average frames per second, where its container says

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """The kept frames, in order; ends at the end of a file or when the sampling says stop."""

    @abstractmethod
    def close(self) -> None:
        """Release the decoder, the connection or the device."""

    def describe(self) -> str:
        """One line: what is read, and with what."""
        return f"{self.name} ({'live' if self.live else 'file'}, {self.decoder})"

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_time(info: Mapping[str, object]) -> str:
    """A frame's time as people read it: "0:12.480" into a file, the local ISO time of a live frame.

    `info` is a frame's record in an embeddings folder ({"time", "live", ...}).
    """
    seconds = float(info.get("time") or 0.0)  # type: ignore[arg-type]
    if info.get("live"):
        stamp = datetime.fromtimestamp(seconds).astimezone()
        return stamp.isoformat(timespec="milliseconds")
    minutes, rest = divmod(round(seconds, 3), 60.0)  # rounded first: 59.9996 is 1:00.000, not 0:60.000
    hours, minutes = divmod(int(minutes), 60)
    clock = f"{minutes}:{rest:06.3f}"
    return f"{hours}:{minutes:02d}:{rest:06.3f}" if hours else clock


def frame_info(frame: Frame) -> dict[str, object]:
    """What an embeddings folder records of a kept frame (frames.json), beside its id."""
    return {"source": frame.source, "index": frame.index, "time": frame.time, "live": frame.live}


def frame_of(item_id: str) -> dict[str, object] | None:
    """What a gallery id names when it is a frame ({"source", "time", "live"}), else None: for
    showing a result's time where only its id is known (an index, a Milvus collection)."""
    parts = split_frame_id(item_id)
    if parts is None:
        return None
    from ..errors import InvedgeError
    from .spec import parse_source

    try:
        live = parse_source(parts[0]).live
    except InvedgeError:
        live = False
    return {"source": parts[0], "time": parts[1], "live": live}
