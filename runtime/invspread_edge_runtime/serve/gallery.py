"""The served gallery: searched in memory, changed on disk under the CLI's lock, never losing an update.

Searches use the in-memory `Index`, reloaded when the file on disk is another one (its stat
identity changed: `invedge index add` replaced it). Adds and deletes take `index_file.writing`
(the lock `invedge index add/remove` take), reload the file, change it, save it atomically and
swap the in-memory reference: copy-on-write, so a search in flight keeps the object it started
with and a concurrent CLI writer's items are never overwritten.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..index import Index, index_file
from ..index.result import SearchResult
from .errors import ServeError

Stamp = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


class LiveGallery:
    """The index file at `path`, kept current; every method is safe from any thread."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        self.path = Path(path)
        self.threads = threads
        self._swap = threading.Lock()  # guards `_index`/`_stamp` (readers copy the reference)
        self._index, self._stamp = self._read()
        self.on_change: Callable[[int], None] | None = None  # told the new size (the metrics gauge)

    def current(self) -> Index:
        """The gallery as on disk now (reloaded when another writer replaced the file)."""
        with self._swap:
            if _stamp(self.path) != self._stamp:
                self._index, self._stamp = self._read()
                self._changed()
            return self._index

    def count(self) -> int:
        return len(self.current())

    def describe(self) -> dict[str, Any]:
        """The gallery part of /v1/info."""
        index = self.current()
        return {"items": len(index), "kind": index.kind, "path": str(self.path)}

    def search(self, queries: np.ndarray, k: int, space_id: str | None) -> tuple[Index, SearchResult]:
        """Top-k for each query row, and the index that answered (for its ids and locations)."""
        index = self.current()
        check_vectors(index, queries, space_id)
        check_k(len(index), k, "'invedge index add'")
        return index, index.search(queries, k, space_id=space_id)

    def add(self, item_id: str, vector: np.ndarray, space_id: str, location: str = "") -> int:
        """Add one item and write the file; 409 when the id is taken. Returns the new gallery size."""
        with index_file.writing(self.path):
            index = Index.load(self.path, threads=self.threads)
            if item_id in set(index.ids):
                raise ServeError(
                    409, f"id {item_id!r} is already in the gallery", "Choose another id, or DELETE it first"
                )
            check_vectors(index, vector[None, :], space_id)
            index.add(
                vector[None, :], [item_id], space_id=space_id, locations=[location], source="the upload"
            )
            index.save(self.path)
            self._publish(index)
        return len(index)

    def remove(self, item_id: str) -> int:
        """Delete one item and write the file; 404 when no item has that id. Returns the new size."""
        with index_file.writing(self.path):
            index = Index.load(self.path, threads=self.threads)
            if item_id not in set(index.ids):
                raise ServeError(
                    404, f"no gallery item has the id {item_id!r}", "See the ids in the search results"
                )
            index.remove([item_id])
            index.save(self.path)
            self._publish(index)
        return len(index)

    def location(self, item_id: str) -> Path | None:
        """The image file the index records for `item_id` when it exists on this machine, else None."""
        index = self.current()
        try:
            row = index.ids.index(item_id)
        except ValueError:
            return None
        return existing_file(index.locations[row])

    def _publish(self, index: Index) -> None:
        """Swap in the index just written (called with the file lock held: the stamp is its file's)."""
        with self._swap:
            self._index, self._stamp = index, _stamp(self.path)
        self._changed()

    def _read(self) -> tuple[Index, Stamp | None]:
        stamp = _stamp(self.path)
        return Index.load(self.path, threads=self.threads), stamp

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(len(self._index))


def check_vectors(index: Index, vectors: np.ndarray, space_id: str | None) -> None:
    """409 for vectors of another embedding space, 422 for the wrong dimension."""
    if space_id is not None and index.space_id and space_id != index.space_id:
        raise ServeError(
            409,
            f"the vector comes from another embedding space ({space_id}) than the gallery ({index.space_id})",
            "Embed it with the gallery's model (GET /v1/info), or serve a gallery of its space",
        )
    if vectors.ndim != 2 or vectors.shape[1] != index.dim:
        got = vectors.shape[-1] if vectors.ndim else 0
        raise ServeError(
            422,
            f"the vector has dimension {got}, the gallery {index.dim}",
            "Send a vector of the gallery's dimension",
        )


def check_k(items: int, k: int, cli_add: str) -> None:
    """409 for an empty gallery, 422 for k past its size; `cli_add`: the CLI command that adds items."""
    if items == 0:
        raise ServeError(409, "the gallery is empty", f"Add items with POST /v1/gallery or {cli_add}")
    if k > items:
        raise ServeError(422, f"k = {k} but the gallery holds {items} items", f"Use k between 1 and {items}")


def existing_file(recorded: str | None) -> Path | None:
    """The image file a gallery records for an item, when it exists on this machine; else None."""
    if not recorded:
        return None
    path = Path(recorded).resolve()
    return path if path.is_file() else None


def _stamp(path: Path) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
