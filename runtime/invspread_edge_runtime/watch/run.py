"""`run_watch(WatchOptions(...))`: the whole of `invedge watch` but the printing.

Every refusal that needs no model or source comes first (the settings, the source's form, the
--save-matches folder, the gallery: missing or empty), then the model (the space check before any
frame), then the source (a stream that does not answer fails within its --open-timeout). Ctrl-C
during the watch ends it as the end of a file does: the stats come back (with the source's error
when a stream failed mid-watch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, EmptyGalleryError, KOutOfRangeError, SourceError
from ..gallery import Gallery, check_k
from ..index.result import SearchResult
from ..sources.frame import FrameSource
from .loop import WatchStats, watch_frames
from .matcher import Match, Matcher
from .save import MatchSaver
from .settings import WatchSettings


@dataclass(frozen=True)
class WatchOptions:
    """What one `invedge watch` asks: the model, the gallery (`index`, or `collection` in `store`),
    the watch itself, and where matched frames go."""

    model: Path | str  # a file or export folder, or `triton:URL` (backends/triton.py `as_model`)
    watch: WatchSettings
    index: Path | None = None
    store: str | None = None
    collection: str | None = None
    save_matches: Path | None = None
    backend: str = "auto"
    threads: int = 0


@dataclass
class Started:
    """What the first line says: the source opened (its decoder), the gallery, the matcher, the backend."""

    source: FrameSource
    gallery: Gallery
    matcher: Matcher
    backend: Any  # backends.base.BackendInfo

    def line(self) -> str:
        return (
            f"watching {self.source.describe()} against {self.gallery.where().name} "
            f"({len(self.gallery):,} items): threshold {self.matcher.threshold:g}, "
            f"cooldown {self.matcher.cooldown:g} s, best {self.matcher.k}; backend {self.backend.name}"
        )


@dataclass
class Watched:
    """How a watch ended: its stats, whether Ctrl-C ended it, and the source's failure (a stream whose
    reconnects ran out), for the caller to raise once it has said what was seen."""

    stats: WatchStats
    interrupted: bool = False
    error: SourceError | None = None


def run_watch(
    options: WatchOptions,
    *,
    on_start: Callable[[Started], None],
    on_match: Callable[[Match], None],
    on_event: Callable[[str], None] | None = None,
) -> Watched:
    """Watch the source against the gallery until it ends, its sampling is done, or Ctrl-C."""
    from ..backends.triton import shown
    from ..embedder import Embedder
    from ..sources.open import model_threads

    spec = options.watch.check()
    matcher = Matcher.of(options.watch)
    saver = MatchSaver(options.save_matches, on_event) if options.save_matches is not None else None
    stats = WatchStats()
    with opened_gallery(options, on_event) as gallery:
        count = len(gallery)
        check_k(1, count, gallery.where())  # an empty gallery: before the model opens
        threads = model_threads(options.threads, decoding=True)
        with Embedder(options.model, backend=options.backend, threads=threads) as embedder:
            gallery.check_space(embedder.space_id, model=shown(options.model))
            gallery.follow_backend(embedder.info)
            watch = options.watch
            source = watch.streams().open(spec, on_event=on_event)
            with source:
                on_start(Started(source, gallery, matcher, embedder.info))

                def search(queries: np.ndarray, k: int) -> SearchResult | None:
                    try:
                        return gallery.search(queries, k=min(k, len(gallery)), space_id=embedder.space_id)
                    except (EmptyGalleryError, KOutOfRangeError):
                        return None  # a store's items removed by another client meanwhile: no match

                try:
                    watch_frames(
                        source,
                        lambda frames: embedder.embed_frames(frames, batch_size=1),
                        search,
                        matcher,
                        on_match=on_match,
                        saver=saver,
                        stats=stats,
                    )
                except KeyboardInterrupt:
                    return Watched(stats, interrupted=True)
                except SourceError as exc:
                    return Watched(stats, error=exc)
    return Watched(stats)


@contextlib.contextmanager
def opened_gallery(options: WatchOptions, on_event: Callable[[str], None] | None = None) -> Iterator[Gallery]:
    """The gallery the options name, opened as `invedge search` opens it: an index file, or a Milvus
    collection (its stopped writes said through `on_event`; closed at the end)."""
    from ..index.gallery import Index
    from ..milvus_store.address import gallery_flags
    from ..search.images import opened_store_gallery

    address = gallery_flags(options.store, options.collection)
    if (address is None) == (options.index is None):
        raise ConfigError(
            "watch needs one gallery: --index FILE or --store S --collection C",
            "Pass --index INDEX, or --store S --collection C",
        )
    if address is None:
        assert options.index is not None
        yield Index.load(options.index, threads=options.threads)
        return
    with opened_store_gallery(address, options.collection, on_event) as gallery:
        yield gallery
