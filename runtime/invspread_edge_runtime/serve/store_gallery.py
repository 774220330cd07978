"""The served gallery when it lives in Milvus (`--store S --collection C`): every call asks Milvus.

A Milvus collection may hold more items than this process could copy, and other servers or
`invedge index add --store` may change it at any time, so Milvus is its one holder: this class
keeps only the open client (a `MilvusGallery`) and no items, ids or counts. It is a `ServedGallery`
(serve/service.py), as `LiveGallery` is: the gallery's rules are `MilvusGallery`'s, their
statuses serve/errors.py's, so both answer a request alike.

Concurrency: searches run in parallel on the one client (its gRPC channel is thread-safe). Adds
and deletes of this process are serialised by a lock so that "id taken" (409) and "unknown id"
(404) hold against this server's own requests; writers in other processes are Milvus' business
(an add there is an upsert: the last write of an id wins). Replicas of this server on one
collection check ids in Milvus too, so an id one added is 409 in all; two adds of one id at the
same moment in two replicas may both pass the check, and Milvus keeps one row of it.

A Milvus Lite file (`milvus:FILE`) is opened by one process at a time: while it is served,
`invedge index add --store milvus:FILE` cannot open it, so changes go through POST/DELETE
/v1/gallery; with a Milvus server (`milvus://HOST:PORT`) any number of processes share it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import IndexFileError, InvedgeError
from ..index.result import SearchResult
from .errors import ServeError, from_invedge

if TYPE_CHECKING:  # pragma: no cover (imported when opened: pymilvus is an extra)
    from ..milvus_store.gallery import MilvusGallery

ADD_TO_STORE = "'invedge index add --store'"  # the CLI command that adds items to a served collection
STRONG = "Strong"  # the level of the count an add or delete answers (collection.CONSISTENCY's value)


class StoreGallery:
    """The collection `collection` in the Milvus `store`; every method is safe from any thread."""

    def __init__(self, gallery: MilvusGallery) -> None:
        self._gallery = gallery
        self._writing = threading.Lock()
        self.on_change: Callable[[int], None] | None = None  # told the size it read (the metrics gauge)

    @classmethod
    def open(cls, store: str, collection: str, consistency: str | None = None) -> StoreGallery:
        """Connect; the one-line error of `open_gallery` when unreachable, in use, missing, not ours or
        incomplete (a build that stopped midway); a warning for each add or remove of it that did."""
        from .. import console
        from ..milvus_store.collection import consistency_level
        from ..milvus_store.gallery import open_gallery

        gallery = open_gallery(store, collection)
        if consistency is not None:
            gallery.consistency = consistency_level(consistency)
        for line in gallery.stopped_writes():
            console.warn(line)
        return cls(gallery)

    def close(self) -> None:
        self._gallery.close()

    def __enter__(self) -> StoreGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """The gallery part of /v1/info: the store as shown (never a token) and the collection."""
        gallery = self._gallery
        return {
            "items": self.count(),
            "kind": gallery.kind,
            "store": gallery.store.shown,
            "collection": gallery.collection,
            "consistency": gallery.consistency.lower(),
        }

    def current(self) -> MilvusGallery:
        """The open `MilvusGallery`."""
        return self._gallery

    def count(self, consistency: str | None = None) -> int:
        """The items in the collection now (asked of Milvus at `consistency`; default: the service's)."""
        with store_errors():
            items = self._gallery.count(consistency)
        self._changed(items)
        return items

    def ready(self) -> int:
        """The items in the collection now; 503 when Milvus cannot answer (/readyz)."""
        return self.count()

    def search(self, queries: np.ndarray, k: int, space_id: str | None) -> tuple[MilvusGallery, SearchResult]:
        """Top-k for each query row, and the gallery that answered (for its space): Milvus' count and
        search, no more (space and dimension are checked before either)."""
        gallery = self._gallery
        with store_errors():
            return gallery, gallery.search(queries, k=k, space_id=space_id)

    def add(self, item_id: str, vector: np.ndarray, space_id: str, location: str = "") -> int:
        """Add one item: 409/422 for a vector of another space/dimension (no call to Milvus), then
        409 when the id is taken (Milvus would replace it: an upsert). Returns the gallery size, read
        at Strong whatever the service's level: it counts this write."""
        with self._writing, store_errors():
            self._gallery.add(
                vector[None, :],
                [item_id],
                space_id=space_id,
                locations=[location],
                source="the upload",
                upsert=False,
            )
        return self.count(STRONG)

    def remove(self, item_id: str) -> int:
        """Delete one item; 404 when no item has that id. Returns the gallery size (read at Strong)."""
        with self._writing, store_errors(missing=404):
            self._gallery.remove([item_id])
        return self.count(STRONG)

    def location(self, item_id: str) -> str | None:
        """The location recorded for `item_id` (None: unknown id or none recorded); data, not a
        file to serve: files.ImageRoots decides that."""
        with store_errors():
            return self._gallery.location(item_id)

    def _changed(self, items: int) -> None:
        if self.on_change is not None:
            self.on_change(items)


@contextlib.contextmanager
def store_errors(missing: int = 422) -> Iterator[None]:
    """The store's refusals as HTTP errors (`from_invedge`): a gallery rule → its status, a problem
    of the collection (IndexFileError: an id it cannot hold, a closed gallery) → `missing` (422;
    404 for a remove), any other toolkit error (Milvus unreachable, a dropped connection) → 503 with
    its one-line message: the request may be retried; a collection dropped while served → 503 too,
    saying that retrying will not help."""
    try:
        yield
    except IndexFileError as exc:
        raise ServeError(missing, exc.message, exc.hint or "") from exc
    except InvedgeError as exc:
        if collection_gone(exc.message):
            raise ServeError(
                503,
                f"{exc.message} (dropped while served)",
                "Build the collection again ('invedge index build EMBEDDINGS --store S --collection C'), "
                "then restart 'invedge serve'",
            ) from exc
        raise from_invedge(exc, ADD_TO_STORE) from exc


def collection_gone(message: str) -> bool:
    """Milvus' words for a collection that no longer exists (dropped by another client)."""
    text = message.lower()
    return "collection" in text and ("does not exist" in text or "not found" in text)
