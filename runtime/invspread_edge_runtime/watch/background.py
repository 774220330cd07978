"""`invedge serve --watch SOURCE`: the watch loop in a thread of the service, its last matches kept.

The service hands in how to embed (through its batcher: one model, shared with the requests) and
how to search (its served gallery); the source is opened in the thread, so a camera that takes its
--open-timeout to answer never delays the service. A source that cannot be opened or read ends the
watch with status "failed" and the reason (GET /v1/watch shows both; the log says it once); a file
that ends leaves status "ended". `stop()` (the service stopping) closes the source, which wakes a
loop waiting for a live frame, and waits for the thread; a thread still busy after that (a camera
still opening) is logged and left to end by itself: once stopped it embeds and searches nothing
more, so it never uses the closed service.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import InvedgeError
from ..index.result import SearchResult
from ..sources.frame import Frame
from .loop import EmbedFrames, SearchVectors, WatchStats, watch_frames
from .matcher import Match, Matcher
from .settings import WatchSettings

KEEP_MATCHES = 100  # the last matches GET /v1/watch returns: the page shows them, memory stays bounded
STOP_WAIT_S = 10.0  # longest the service's shutdown waits for the watch thread
LOG = logging.getLogger("invedge.serve")


class BackgroundWatch:
    """One watch running in its own thread; every method is safe from any thread."""

    def __init__(
        self, settings: WatchSettings, embed: EmbedFrames, search: SearchVectors, keep: int = KEEP_MATCHES
    ) -> None:
        self.settings = settings
        self.spec = settings.check()
        self.matcher = Matcher.of(settings)
        self.embed, self.search = embed, search
        self.stats = WatchStats()
        self.status = "starting"  # opening, watching, ended, failed, stopped
        self.error: str | None = None
        self.decoder: str | None = None
        self._matches: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._seq = 0  # matches so far: each match's `seq`, for GET /v1/watch?after=SEQ
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._source: Any = None
        self._thread = threading.Thread(target=self._run, name="invedge-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the watch (closing the source wakes a loop waiting for a frame) and wait for it."""
        self._stop.set()
        with self._lock:
            source = self._source
        if source is not None:
            source.close()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT_S)
        if self._thread.is_alive():
            LOG.warning(
                "watch of %s did not stop within %.0f s (%s); left to end by itself",
                self.spec.name,
                STOP_WAIT_S,
                self.status,
            )

    def snapshot(self, after: int = 0) -> dict[str, Any]:
        """What GET /v1/watch answers: the source, its state, counts, and the kept matches after `after`
        (copies: the caller may add to them)."""
        with self._lock:
            matches = [dict(match) for match in self._matches if match["seq"] > after]
            return {
                "source": self.spec.name,
                "live": self.spec.live,
                "decoder": self.decoder,
                "status": self.status,
                "error": self.error,
                "threshold": self.matcher.threshold,
                "cooldown": self.matcher.cooldown,
                "last": self._seq,
                **self.stats.to_dict(),
                "recent": matches,
            }

    # --- the thread -------------------------------------------------------------------------------

    def _run(self) -> None:

        settings = self.settings
        try:
            self._set("opening")
            source = settings.streams().open(self.spec, on_event=lambda line: LOG.warning("watch: %s", line))
            with self._lock:
                self._source, self.decoder = source, source.decoder
            if self._stop.is_set():  # stopped while it opened
                source.close()
                return self._set("stopped")
            self._set("watching")
            with source:
                watch_frames(
                    source,
                    self._embed,
                    self._search,
                    self.matcher,
                    on_match=self._keep,
                    stop=self._stop,
                    stats=self.stats,
                )
            self._set("stopped" if self._stop.is_set() else "ended")
        except Exception as exc:  # the service goes on; the watch says why it stopped
            if self._stop.is_set():
                return self._set("stopped")
            reason = str(exc) if isinstance(exc, InvedgeError) else _reason(exc)
            LOG.error("watch of %s failed: %s", self.spec.name, reason)
            with self._lock:
                self.status, self.error = "failed", reason

    def _embed(self, frames: Iterable[Frame]) -> Iterator[tuple[list[Frame], np.ndarray]]:
        """The service's embedding of each frame taken before the watch was stopped."""
        return self.embed(itertools.takewhile(lambda _: not self._stop.is_set(), frames))

    def _search(self, queries: np.ndarray, k: int) -> SearchResult | None:
        """The service's search, unless the watch was stopped (the service may be closed by now)."""
        return None if self._stop.is_set() else self.search(queries, k)

    def _keep(self, match: Match) -> None:
        with self._lock:
            self._seq += 1
            self._matches.append({"seq": self._seq, **match.to_dict()})

    def _set(self, status: str) -> None:
        with self._lock:
            self.status = status


def _reason(exc: Exception) -> str:
    """An unexpected failure in one line, without str(exc): PyAV's holds the URL, password and all."""
    from ..sources.reader import error_text

    text = error_text(exc)
    return text if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"
