"""`--save-matches DIR`: each matched frame as a PNG, named by its time and its best match.

Checked before the source opens (a DIR that is a file, or that cannot be written, is one line);
each PNG is written atomically (a killed watch never leaves half a picture). There is no cap on
the files written: a long watch fills DIR as fast as it matches (mind --cooldown and the disk). A
PNG that cannot be written (the disk full) is skipped and said through `on_event`, once until a
write succeeds again: the watch goes on and ends with its summary.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError, InvedgeError
from ..preprocess import IMAGE_SUFFIXES
from ..sources.frame import Frame
from .matcher import Hit

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_PART = 80  # characters of the source's and the item's names in a file name


class MatchSaver:
    """Writes matched frames into `folder` (made when missing)."""

    def __init__(self, folder: Path, on_event: Callable[[str], None] | None = None) -> None:
        from ..files import probe_write

        self.folder = Path(folder)
        self.on_event = on_event
        self.failing = False  # a failed write was said; said again only after a write succeeds
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(
                f"--save-matches {self.folder} is a file, not a folder", "Give --save-matches a folder"
            )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe_write(self.folder)
        except OSError as exc:
            raise InvedgeError(
                f"cannot write --save-matches {self.folder}: {exc.strerror or exc}",
                "Choose a folder you can write to",
            ) from exc

    def save(self, frame: Frame, hit: Hit) -> str | None:
        """Write `frame` as a PNG named by its time and `hit`; the path written (None: not written)."""
        from PIL import Image

        from ..files import atomic_path

        target = self.folder / file_name(frame, hit)
        try:
            with atomic_path(target) as tmp:
                Image.fromarray(frame.rgb).save(tmp, format="PNG")
        except InvedgeError as exc:
            if not self.failing and self.on_event is not None:
                self.on_event(f"matched frame not saved (the watch goes on): {exc.message}")
            self.failing = True
            return None
        self.failing = False
        return str(target)


def file_name(frame: Frame, hit: Hit) -> str:
    """`rtsp-cam1-stream_20261207T184403.123_class0-img00001.png` (live), `shop.mp4_t12.480_….png` (a file)."""
    if frame.live:
        moment = datetime.datetime.fromtimestamp(frame.time).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    else:
        moment = f"t{frame.time:.3f}"
    source = _safe(frame.source if frame.live else Path(frame.source).name)
    item = Path(hit.item_id)
    match = item.with_suffix("") if item.suffix.lower() in IMAGE_SUFFIXES else item  # no 'x.png.png'
    return f"{source}_{moment}_{_safe(match.as_posix())}.png"


def _safe(text: str) -> str:
    return _UNSAFE.sub("-", text).strip("-")[:MAX_NAME_PART] or "frame"
