"""The served gallery when it lives in Milvus (`--store S --collection C`): every call asks Milvus.

A Milvus collection may hold more items than this process could copy, and other servers or
`invedge index add --store` may change it at any time, so Milvus is its one holder: this class
keeps only the open client (a `MilvusGallery`) and no items, ids or counts. It offers the methods
the routes and the service use of `LiveGallery` (current, count, ready, search, add, remove,
location, on_change) with the same refusals and HTTP statuses.

Concurrency: searches run in parallel on the one client (its gRPC channel is thread-safe). Adds
and deletes of this process are serialised by a lock so that "id taken" (409) and "unknown id"
(404) hold against this server's own requests; writers in other processes are Milvus' business
(an add there is an upsert: the last write of an id wins).

A Milvus Lite file (`milvus:FILE`) is opened by one process at a time: while it is served,
`invedge index add --store milvus:FILE` cannot open it, so changes go through POST/DELETE
/v1/gallery; with a Milvus server (`milvus://HOST:PORT`) any number of processes share it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import IndexFileError, InvedgeError
from ..index.result import SearchResult
from .errors import ServeError, from_invedge
from .gallery import check_k, check_vectors


class StoreGallery:
    """The collection `collection` in the Milvus `store`; every method is safe from any thread."""

    def __init__(self, gallery: Any) -> None:
        self._gallery = gallery  # a milvus_store.MilvusGallery (imported lazily: pymilvus is an extra)
        self._writing = threading.Lock()
        self.on_change: Callable[[int], None] | None = None  # told the size it read (the metrics gauge)

    @classmethod
    def open(cls, store: str, collection: str) -> StoreGallery:
        """Connect; the one-line error of `open_gallery` when unreachable, in use, missing, not ours or
        incomplete (a build that stopped midway); a warning for each add or remove of it that did."""
        from .. import console
        from ..milvus_store import open_gallery

        gallery = open_gallery(store, collection)
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
        }

    def current(self) -> Any:
        """The open `MilvusGallery` (its space, dimension, kind and `check_space` as `Index`'s)."""
        return self._gallery

    def count(self) -> int:
        """The items in the collection now (asked of Milvus)."""
        with store_errors():
            items = len(self._gallery)
        self._changed(items)
        return items

    def ready(self) -> int:
        """The items in the collection now; 503 when Milvus cannot answer (/readyz)."""
        return self.count()

    def search(self, queries: np.ndarray, k: int, space_id: str | None) -> tuple[Any, SearchResult]:
        """Top-k for each query row, and the gallery that answered (for its space).

        Space and dimension are checked here (no call to Milvus); the gallery's size only when
        Milvus' search refused k, so that a search costs the store's count and search, no more."""
        gallery = self._gallery
        check_vectors(gallery, queries, space_id)
        try:
            with store_errors():
                return gallery, gallery.search(queries, k=k, space_id=space_id)
        except ServeError as refused:
            if refused.status == 422:  # an empty gallery or k past its size: the file gallery's words
                self._check_k(k)
            raise

    def add(self, item_id: str, vector: np.ndarray, space_id: str, location: str = "") -> int:
        """Add one item (an upsert in Milvus); 409 when the id is taken. Returns the gallery size."""
        gallery = self._gallery
        check_vectors(gallery, vector[None, :], space_id)
        with self._writing, store_errors():
            if gallery.contains([item_id]):
                raise ServeError(
                    409, f"id {item_id!r} is already in the gallery", "Choose another id, or DELETE it first"
                )
            gallery.add(
                vector[None, :], [item_id], space_id=space_id, locations=[location], source="the upload"
            )
        return self.count()

    def remove(self, item_id: str) -> int:
        """Delete one item; 404 when no item has that id. Returns the gallery size."""
        gallery = self._gallery
        with self._writing, store_errors(missing=404):
            if not gallery.contains([item_id]):
                raise ServeError(
                    404, f"no gallery item has the id {item_id!r}", "See the ids in the search results"
                )
            gallery.remove([item_id])
        return self.count()

    def location(self, item_id: str) -> str | None:
        """The location recorded for `item_id` (None: unknown id or none recorded); data, not a
        file to serve: files.ImageRoots decides that."""
        with store_errors():
            return self._gallery.location(item_id)

    def _check_k(self, k: int) -> None:
        """409 for an empty gallery, 422 for k past its size (the file gallery's refusals)."""
        check_k(self.count(), k, "'invedge index add --store'")

    def _changed(self, items: int) -> None:
        if self.on_change is not None:
            self.on_change(items)


@contextlib.contextmanager
def store_errors(missing: int = 422) -> Iterator[None]:
    """The store's refusals as HTTP errors: a gallery check (IndexFileError) → `missing` (422: bad
    vector or k; 404 for a remove), any other toolkit error (Milvus unreachable, a dropped
    connection) → 503 with its one-line message: the request may be retried; a collection dropped
    while served → 503 too, saying that retrying will not help."""
    try:
        yield
    except IndexFileError as exc:
        raise from_invedge(exc, missing) from exc
    except InvedgeError as exc:
        if collection_gone(exc.message):
            raise ServeError(
                503,
                f"{exc.message} (dropped while served)",
                "Build the collection again ('invedge index build EMBEDDINGS --store S --collection C'), "
                "then restart 'invedge serve'",
            ) from exc
        raise ServeError(503, exc.message, exc.hint or "Retry later", {"Retry-After": "1"}) from exc


def collection_gone(message: str) -> bool:
    """Milvus' words for a collection that no longer exists (dropped by another client)."""
    text = message.lower()
    return "collection" in text and ("does not exist" in text or "not found" in text)
