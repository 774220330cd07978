"""Which search hits are matches: a score at or above the threshold, debounced per gallery item.

The debounce: an item that stays in view (matched frame after frame) is reported once, and again
only after it has been out of view (no frame matching it) for `cooldown` seconds. It counts in
frame time (a file's seconds, a live source's arrival clock), so a video file read faster than real
time is debounced as if it played. Only the items seen within the last `cooldown` seconds are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..bounds import check_bounds
from ..sources.frame import Frame
from .settings import DEFAULT_COOLDOWN, DEFAULT_THRESHOLD, DEFAULT_WATCH_K, WATCH_BOUNDS, WatchSettings


@dataclass(frozen=True)
class Hit:
    """One gallery item a frame matched: its rank among the frame's neighbours (1: the nearest)."""

    rank: int
    item_id: str
    score: float
    location: str = ""  # the image file the gallery records for the item ("" when unknown)


@dataclass(frozen=True)
class Match:
    """A reported match: the frame, the item, and the time from the frame's arrival (live) or its
    taking (a file) to deciding."""

    frame: Frame
    hit: Hit
    latency_ms: float
    saved: str | None = None  # the PNG written with --save-matches

    def to_dict(self) -> dict[str, Any]:
        """One `--json` line (and one entry of GET /v1/watch)."""
        frame = self.frame
        return {
            "id": self.hit.item_id,
            "score": round(self.hit.score, 6),
            "rank": self.hit.rank,
            "source": frame.source,
            "frame": frame.index,
            "time": round(frame.time, 3),
            "at": frame.at,
            "live": frame.live,
            "latency_ms": round(self.latency_ms, 2),
            "path": self.hit.location or None,
            "saved": self.saved,
        }


class Matcher:
    """Decides, frame by frame, which of the nearest gallery items are reported (module docstring)."""

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        cooldown: float = DEFAULT_COOLDOWN,
        k: int = DEFAULT_WATCH_K,
    ) -> None:
        check_bounds(WATCH_BOUNDS, {"threshold": threshold, "cooldown": cooldown, "k": k})
        self.threshold = float(threshold)
        self.cooldown = float(cooldown)
        self.k = k
        self._last: dict[str, float] = {}  # gallery item → frame time it was last in view

    @classmethod
    def of(cls, settings: WatchSettings) -> Matcher:
        """A fresh matcher with a watch's rules (threshold, cooldown, k)."""
        return cls(settings.threshold, settings.cooldown, settings.k)

    def decide(
        self, ids: Sequence[str], scores: Sequence[float], time: float, locations: Sequence[str] = ()
    ) -> list[Hit]:
        """The hits among one frame's neighbours (best first) to report now; at most `k` of them."""
        hits = []
        for rank, (item, score) in enumerate(zip(ids[: self.k], scores[: self.k], strict=False), start=1):
            if float(score) < self.threshold:
                break  # neighbours come best first: none after this one passes either
            cooling = self._cooling(item, time)
            self._last[item] = time  # in view now: its absence counts from here
            if cooling:
                continue
            location = locations[rank - 1] if rank - 1 < len(locations) else ""
            hits.append(Hit(rank, item, float(score), location))
        self._forget(time)
        return hits

    def _cooling(self, item: str, time: float) -> bool:
        """True while `item` was last in view less than `cooldown` seconds of frame time ago."""
        last = self._last.get(item)
        return last is not None and last <= time < last + self.cooldown

    def _forget(self, time: float) -> None:
        """Drop the items out of view for `cooldown` seconds or more: they are reported when seen again."""
        gone = [item for item, last in self._last.items() if not last <= time < last + self.cooldown]
        for item in gone:
            del self._last[item]
