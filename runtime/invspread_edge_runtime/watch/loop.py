"""The watch loop: take a frame from the source, embed it, search the gallery, decide, report.

`watch_frames` runs until the source ends (a file), its sampling is finished (--duration,
--max-frames), or `stop` is set (Ctrl-C, the service stopping: the caller also closes the source,
which wakes a loop waiting for a live frame). Each frame's latency runs to the moment its matches
were decided: for a live frame from its arrival (its time is the Unix time it was decoded, so the
wait in the source's mailbox counts; never less than its time in the loop), for a file's frame from
the moment the loop took it.

The model and the gallery are given as two callables, so that the CLI embeds with its own
`Embedder` and the service through its batcher, and each searches its own kind of gallery.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..index.result import SearchResult
from ..sources.frame import Frame, FrameSource
from .matcher import Match, Matcher
from .save import MatchSaver

EmbedFrames = Callable[[Iterable[Frame]], Iterator[tuple[list[Frame], np.ndarray]]]
# (Q, d) queries, k → neighbours; None: no gallery to search now (a served gallery emptied by removals)
SearchVectors = Callable[[np.ndarray, int], SearchResult | None]


@dataclass
class WatchStats:
    """What a watch did, for its closing line and GET /v1/watch."""

    frames: int = 0  # frames taken from the source and searched
    matches: int = 0
    dropped: int = 0  # live: frames the source replaced by newer ones while the model was busy
    reconnects: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "frames": self.frames,
            "matches": self.matches,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        """The closing line: frames seen, matches, dropped, reconnects."""
        return (
            f"watched {self.frames:,} frame{'s' * (self.frames != 1)} in {self.seconds:.1f} s: "
            f"{self.matches:,} match{'es' * (self.matches != 1)}, {self.dropped:,} dropped, "
            f"{self.reconnects:,} reconnect{'s' * (self.reconnects != 1)}"
        )


def watch_frames(
    source: FrameSource,
    embed: EmbedFrames,
    search: SearchVectors,
    matcher: Matcher,
    *,
    on_match: Callable[[Match], None],
    saver: MatchSaver | None = None,
    stop: threading.Event | None = None,
    stats: WatchStats | None = None,
) -> WatchStats:
    """Search every frame `source` yields; `on_match` hears each match as soon as it is decided.

    `stats` (optional) is updated as the loop goes, for a reader in another thread.
    """
    stats = stats if stats is not None else WatchStats()
    stop = stop if stop is not None else threading.Event()
    started = time.monotonic()
    arrived: dict[int, float] = {}  # frame index → when the loop took it (monotonic seconds)

    def taken() -> Iterator[Frame]:
        for frame in source.frames():
            if stop.is_set():
                return
            arrived[frame.index] = time.monotonic()
            yield frame

    try:
        for frames, vectors in embed(taken()):
            result = search(vectors, matcher.k)
            decided, now = time.monotonic(), time.time()
            for row, frame in enumerate(frames):
                taken_at = arrived.pop(frame.index, decided)
                in_loop = decided - taken_at
                # a live stamp is bumped 1 ms per frame of a burst, so it may run a little ahead of the clock
                latency_ms = (max(now - frame.time, in_loop) if frame.live else in_loop) * 1000.0
                hits = (
                    matcher.decide(result.ids[row], result.scores[row], frame.time, result.locations[row])
                    if result is not None
                    else []
                )
                stats.frames += 1  # searched: counted before its matches are reported (Ctrl-C may come then)
                saved = saver.save(frame, hits[0]) if saver is not None and hits else None
                for hit in hits:
                    stats.matches += 1
                    on_match(Match(frame, hit, latency_ms, saved))
            _follow(stats, source, started)
            if stop.is_set():
                break
    finally:
        _follow(stats, source, started)
    return stats


def _follow(stats: WatchStats, source: FrameSource, started: float) -> None:
    stats.dropped = source.stats.dropped
    stats.reconnects = source.stats.reconnects
    stats.seconds = time.monotonic() - started
