"""What the service holds while it runs: the model (behind the batcher), the gallery, the limits, metrics.

`Service.open(settings)` loads everything before the server listens, so a missing index, an
unreachable Milvus or an unusable model is the CLI's one-line error and never a half-started service.
The gallery is an index file (`LiveGallery`) or a Milvus collection (`StoreGallery`), as the flags say.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..backends.base import BackendInfo
from ..embedder import Embedder
from ..metadata import ModelMeta
from .batcher import DynamicBatcher
from .files import ImageRoots
from .gallery import LiveGallery
from .metrics import Metrics
from .settings import ServeSettings
from .store_gallery import StoreGallery

Gallery = LiveGallery | StoreGallery  # the same methods: current, count, ready, describe, search, add, ...


@dataclass
class Service:
    settings: ServeSettings
    embedder: Embedder
    batcher: DynamicBatcher
    gallery: Gallery
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
                Embedder(settings.model, backend=settings.backend, precision=settings.precision)
            )
            gallery.current().check_space(embedder.space_id, model=str(settings.model))
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
def open_gallery(settings: ServeSettings) -> Iterator[Gallery]:
    """The gallery the flags name: a Milvus collection (closed at the end) or an index file."""
    if settings.store is not None:
        assert settings.collection is not None  # settings.check() refused --store without it
        with StoreGallery.open(settings.store, settings.collection) as store:
            yield store
    else:
        assert settings.index is not None
        yield LiveGallery(settings.index)
