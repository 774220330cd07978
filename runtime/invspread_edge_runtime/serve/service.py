"""What the service holds while it runs: the model (behind the batcher), the gallery, the limits, metrics.

`Service.open(settings)` loads everything before the server listens, so a missing index, an
unreachable Milvus or an unusable model is the CLI's one-line error and never a half-started service.
The gallery is an index file (`LiveGallery`) or a Milvus collection (`StoreGallery`), as the flags
say: either is a `ServedGallery`, what the routes use of a gallery.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..backends.base import BackendInfo
from ..backends.triton import shown
from ..embedder import Embedder
from ..gallery import Gallery
from ..index.result import SearchResult
from ..metadata import ModelMeta
from .batcher import DynamicBatcher
from .files import ImageRoots
from .gallery import LiveGallery
from .metrics import Metrics
from .settings import ServeSettings
from .store_gallery import StoreGallery


class ServedGallery(Protocol):
    """A `Gallery` (the root gallery.py) kept current for the service: every method is safe from any
    thread, and every refusal is a `ServeError` (its HTTP status from serve/errors.py's table).

    An add refuses, in this order, a vector of another embedding space (409) or dimension (422),
    checked without asking the store, then an id the gallery holds (409); a remove, an unknown id (404).
    """

    on_change: Callable[[int], None] | None  # told the gallery's size after a change (a metrics gauge)

    def current(self) -> Gallery:
        """The gallery as it is now."""
        ...

    def count(self) -> int: ...

    def ready(self) -> int:
        """The gallery's size when it can be served; else 503 saying why (/readyz)."""
        ...

    def describe(self) -> dict[str, Any]:
        """The gallery part of /v1/info."""
        ...

    def search(self, queries: np.ndarray, k: int, space_id: str | None) -> tuple[Gallery, SearchResult]:
        """Top-k for each query row, and the gallery that answered."""
        ...

    def add(self, item_id: str, vector: np.ndarray, space_id: str, location: str = "") -> int:
        """Add one item (the refusals above, in that order); the gallery's size after."""
        ...

    def remove(self, item_id: str) -> int:
        """Remove one item (404 when no item has the id); the gallery's size after."""
        ...

    def location(self, item_id: str) -> str | None: ...


@dataclass
class Service:
    settings: ServeSettings
    embedder: Embedder
    batcher: DynamicBatcher
    gallery: ServedGallery
    decoders: ThreadPoolExecutor  # decoding and resizing uploads, beside the batcher's one thread
    metrics: Metrics
    images: ImageRoots  # the --image-root folders: which recorded image files may be served
    token: str | None = None

    @property
    def meta(self) -> ModelMeta:
        return self.embedder.meta

    @property
    def backend_info(self) -> BackendInfo:
        return self.embedder.info

    @classmethod
    @contextlib.contextmanager
    def open(cls, settings: ServeSettings) -> Iterator[Service]:
        """Load the gallery and the model (in that order: the cheap check first); close both at the end."""
        from .. import console
        from .settings import read_token

        token = None
        if settings.token_file is not None:
            token, warning = read_token(settings.token_file)
            if warning:
                console.warn(warning)
        with contextlib.ExitStack() as stack:
            images = stack.enter_context(
                ImageRoots(settings.image_roots, settings.max_upload_bytes, settings.max_pixels)
            )
            gallery = stack.enter_context(open_gallery(settings))
            embedder = stack.enter_context(
                Embedder(
                    settings.model,
                    backend=settings.backend,
                    precision=settings.precision,
                    threads=settings.threads,
                )
            )
            gallery.current().check_space(embedder.space_id, model=shown(settings.model))
            if isinstance(gallery, LiveGallery):  # a file replaced by one of another space is refused
                gallery.space_id = embedder.space_id
            batcher = DynamicBatcher(embedder, settings.max_batch, settings.max_wait_ms, settings.queue)
            metrics = Metrics(batcher.depth)
            batcher.on_batch = metrics.batch_size.observe
            gallery.on_change = metrics.gallery_items.set
            metrics.gallery_items.set(gallery.count())
            decoders = stack.enter_context(
                ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="invedge-upload")
            )
            yield cls(settings, embedder, batcher, gallery, decoders, metrics, images, token)


@contextlib.contextmanager
def open_gallery(settings: ServeSettings) -> Iterator[ServedGallery]:
    """The gallery the flags name: a Milvus collection (closed at the end) or an index file."""
    if settings.store is not None:
        assert settings.collection is not None  # settings.check() refused --store without it
        with StoreGallery.open(settings.store, settings.collection, settings.consistency) as store:
            yield store
    else:
        assert settings.index is not None
        yield LiveGallery(settings.index)
