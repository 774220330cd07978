"""`--watch SOURCE`: the service's side of a background watch (watch/background.py).

Frames are embedded through the service's batcher (the one model, shared with the requests, on its
one thread) and searched in the served gallery, so a watch sees the items added and removed through
the API as the requests do. A frame that finds the batcher's queue full waits for room (the
requests come first); a gallery emptied by removals (or shrunk between its count and the search)
matches nothing until items come back; a search the store fails for now (503: Milvus unreachable)
skips its frame, logged once until searches succeed again. The watch never ends for either. Its
counts (frames, matches, dropped, reconnects) are also counters at /metrics (invedge_watch_*_total).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import EmptyGalleryError, KOutOfRangeError
from ..index.result import SearchResult
from ..sources.frame import Frame
from ..watch.background import BackgroundWatch
from .errors import ServeError
from .service import Service

BUSY_WAIT_S = 0.05  # a full batcher queue: the frame retries after this long
LOG = logging.getLogger("invedge.serve")


def start_watch(service: Service, loop: asyncio.AbstractEventLoop) -> BackgroundWatch | None:
    """The watch the settings ask for, started (None when there is none); the batcher must be running."""
    settings = service.settings.watch
    if settings is None:
        return None
    watch = BackgroundWatch(settings, lambda frames: _embed(service, loop, frames), _Searcher(service))
    service.metrics.registry.register(_WatchMetrics(watch))
    watch.start()
    return watch


WATCH_COUNTS = {
    "frames": "Frames of the --watch source searched",
    "matches": "Matches the --watch source reported",
    "dropped": "Live frames replaced by newer ones while the model was busy",
    "reconnects": "Reconnects of the --watch source",
}


class _WatchMetrics:
    """The watch's counts at /metrics, read from its stats when Prometheus asks."""

    def __init__(self, watch: BackgroundWatch) -> None:
        self.watch = watch

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        counts = self.watch.stats.to_dict()
        for name, text in WATCH_COUNTS.items():
            yield CounterMetricFamily(f"invedge_watch_{name}", text, value=counts[name])


def _embed(
    service: Service, loop: asyncio.AbstractEventLoop, frames: Iterable[Frame]
) -> Iterator[tuple[list[Frame], np.ndarray]]:
    """One frame at a time through the batcher, preprocessed as `Embedder.embed_frames` does."""
    from ..preprocess import frame_to_uint8_chw

    size = service.meta.image_size
    for frame in frames:
        image = frame_to_uint8_chw(frame.rgb, size)
        while True:
            try:
                vectors = asyncio.run_coroutine_threadsafe(service.batcher.embed([image]), loop).result()
                break
            except ServeError as exc:
                if exc.status != 503 or not service.batcher.accepting:
                    raise
                time.sleep(BUSY_WAIT_S)  # the queue is full of requests: they come first
        yield [frame], vectors


class _Searcher:
    """The served gallery's top-k for the watch's frames; None (no match) when it cannot answer now."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.failing = False  # a store error was logged; logged again only after a search succeeds

    def __call__(self, queries: np.ndarray, k: int) -> SearchResult | None:
        gallery = self.service.gallery
        try:
            count = gallery.count()
            if count == 0:
                return None
            _, result = gallery.search(queries, min(k, count), self.service.meta.space_id)
        except ServeError as exc:
            if isinstance(exc.__cause__, (EmptyGalleryError, KOutOfRangeError)):
                return None  # items removed between the count and the search
            if exc.status != 503:
                raise
            if not self.failing:
                LOG.warning("watch: the gallery cannot be searched now (%s); frames skipped", exc.message)
            self.failing = True
            return None
        if self.failing:
            LOG.info("watch: the gallery answers again")
        self.failing = False
        return result
