"""What the service holds while it runs: the model (behind the batcher), the gallery, the limits, metrics.

`Service.open(settings)` loads everything before the server listens, so a missing index or an
unusable model is the CLI's one-line error and never a half-started service.
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
from .gallery import LiveGallery
from .metrics import Metrics
from .settings import ServeSettings


@dataclass
class Service:
    settings: ServeSettings
    embedder: Embedder
    batcher: DynamicBatcher
    gallery: LiveGallery
    decoders: ThreadPoolExecutor  # decoding and resizing uploads, beside the batcher's one thread
    metrics: Metrics
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
        gallery = LiveGallery(settings.index)
        with Embedder(settings.model, backend=settings.backend, precision=settings.precision) as embedder:
            gallery.current().check_space(embedder.space_id, model=str(settings.model))
            batcher = DynamicBatcher(embedder, settings.max_batch, settings.max_wait_ms, settings.queue)
            metrics = Metrics(batcher.depth)
            batcher.on_batch = metrics.batch_size.observe
            gallery.on_change = metrics.gallery_items.set
            metrics.gallery_items.set(gallery.count())
            with ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="invedge-upload") as decoders:
                yield cls(settings, embedder, batcher, gallery, decoders, metrics, token)
