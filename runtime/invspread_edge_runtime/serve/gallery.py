"""The served gallery: searched in memory, changed on disk under the CLI's lock, never losing an update.

Searches use the in-memory `Index`, reloaded when the file on disk is another one (its stat
identity changed: `invedge index add` replaced it). Adds and deletes go through
`index.gallery.changing` (lock, re-read, change, save: as `invedge index add/remove` do) and then
swap the in-memory reference: copy-on-write, so a search in flight keeps the object it started
with and a concurrent CLI writer's items are never overwritten. This process's own adds and deletes
go one at a time (a thread lock) before taking the file's lock, so that lock only ever waits for
other processes, at most `WRITE_WAIT_S` (then 503 naming the holder).

A file that cannot be read any more (damaged, deleted, unreadable, of another embedding space) is a
fault, not a crash: searches go on with the last good copy, `ready()` (/readyz) answers 503 with
the reason, and adds and deletes are refused (503): a change is written over the file on disk only
after reading that file, never from the stale copy over a damaged one (the damaged file stays for
whoever looks into it). The log says it once; the next good file (a new stamp) ends the fault.

The gallery's rules (empty, k, space, dimension, ids) are `Index`'s; their statuses, serve/errors.py's.
It is a `ServedGallery` (serve/service.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import console
from ..errors import IndexFileError, InvedgeError, LockedError, WriteError
from ..index import index_file
from ..index.gallery import Index, changing
from ..index.result import SearchResult
from ..locks import default_timeout
from .errors import ServeError, gallery_rules

Stamp = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns
WRITE_WAIT_S = 10.0  # longest an add or delete waits for another process writing the file


@dataclass(frozen=True)
class Fault:
    """The index file on disk is not the gallery served: the file seen (its stamp) and why."""

    stamp: Stamp | None
    error: InvedgeError


class LiveGallery:
    """The index file at `path`, kept current; every method is safe from any thread."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        self.path = Path(path)
        self.threads = threads
        self.space_id: str | None = None  # the served model's space: a file of another one is a fault
        self._swap = threading.Lock()  # guards `_index`/`_stamp`/`_fault` (readers copy the reference)
        self._writing = threading.Lock()  # this process's adds and deletes, one at a time
        stamp = _stamp(self.path)
        self._index, self._stamp = self._load(), stamp
        self._fault: Fault | None = None
        self.on_change: Callable[[int], None] | None = None  # told the new size (the metrics gauge)

    def current(self) -> Index:
        """The gallery as on disk now (reloaded when another writer replaced the file); while the
        file cannot be read, the last good copy (`ready()` says why)."""
        with self._swap:
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                self._set_fault(None)  # the file served is in place (again)
            elif self._fault is None or stamp != self._fault.stamp:
                self._reload(stamp)
            return self._index

    def count(self) -> int:
        return len(self.current())

    def ready(self) -> int:
        """The gallery's size when it is the file on disk; else 503 saying why (/readyz)."""
        index = self.current()
        fault = self._fault
        if fault is not None:
            raise unreadable(fault.error, len(index))
        return len(index)

    def describe(self) -> dict[str, Any]:
        """The gallery part of /v1/info (`problem`: why the file on disk is not served, if it is not)."""
        index = self.current()
        fault = self._fault
        described = {"items": len(index), "kind": index.kind, "path": str(self.path)}
        return (
            described
            if fault is None
            else described | {"problem": unreadable(fault.error, len(index)).message}
        )

    def search(self, queries: np.ndarray, k: int, space_id: str | None) -> tuple[Index, SearchResult]:
        """Top-k for each query row, and the index that answered (for its ids and locations)."""
        index = self.current()
        with gallery_rules():
            return index, index.search(queries, k, space_id=space_id)

    def add(self, item_id: str, vector: np.ndarray, space_id: str, location: str = "") -> int:
        """Add one item and write the file: 409/422 for a vector of another space/dimension, then 409
        when the id is taken (`Index.add`'s order). Returns the new gallery size."""
        return self._change(
            lambda index: index.add(
                vector[None, :], [item_id], space_id=space_id, locations=[location], source="the upload"
            )
        )

    def remove(self, item_id: str) -> int:
        """Delete one item and write the file; 404 when no item has that id. Returns the new size."""
        return self._change(lambda index: index.remove([item_id]))

    def location(self, item_id: str) -> str | None:
        """The location the index records for `item_id` (None: unknown id or none recorded); data,
        not a file to serve: files.ImageRoots decides that."""
        return self.current().location(item_id)

    def _change(self, change: Callable[[Index], object]) -> int:
        """One change of the file's gallery (`changing`: read under the file's lock, written, then
        served); the new size. A broken rule is its status; 503 when another process holds the lock
        past WRITE_WAIT_S, when the file cannot be read or written (nothing is written then)."""
        with self._writing:  # this process's changes one at a time: the file's lock waits for others only
            try:
                timeout = min(WRITE_WAIT_S, default_timeout())
                with (
                    changing(self.path, timeout, self._load_for_change, self._publish) as changed,
                    gallery_rules(),
                ):
                    change(changed.index)
            except (LockedError, WriteError) as exc:  # the lock's holder; a lock file or save not written
                raise not_changed(exc) from exc
        return len(changed.index)

    def _load_for_change(self, path: Path) -> Index:
        """The file's gallery under its lock; a file that cannot be read is a fault (503, nothing written)."""
        stamp = _stamp(path)
        try:
            return self._load_again()
        except InvedgeError as exc:
            with self._swap:
                self._set_fault(Fault(stamp, exc))
                raise unreadable(exc, len(self._index)) from exc

    def _publish(self, index: Index) -> None:
        """Swap in the index just written (called with the file lock held: the stamp is its file's)."""
        with self._swap:
            self._index, self._stamp = index, _stamp(self.path)
            self._set_fault(None)
        self._changed()

    def _load(self) -> Index:
        """The file's gallery; IndexFileError when it cannot be read or is of another space than served."""
        index = Index.load(self.path, threads=self.threads)
        if self.space_id and index.space_id and index.space_id != self.space_id:
            raise IndexFileError(
                f"{self.path} now holds a gallery of another embedding space ({index.space_id}) "
                f"than the served model ({self.space_id})",
                "Put back an index of the served model's embeddings, or restart 'invedge serve' with its model",
            )
        return index

    def _load_again(self) -> Index:
        """`_load` while serving: whatever keeps the file from loading is a fault, never a 500 per request."""
        try:
            return self._load()
        except InvedgeError:
            raise
        except Exception as exc:  # e.g. an engine section that passed the checks but does not load
            raise IndexFileError(
                f"{self.path} cannot be loaded ({type(exc).__name__}: {exc})", index_file.REBUILD
            ) from exc

    def _reload(self, stamp: Stamp | None) -> None:
        """Serve the file on disk (called with `_swap` held); a file that cannot be read is a fault."""
        try:
            index = self._load_again()
        except InvedgeError as exc:
            self._set_fault(Fault(stamp, exc))
            return
        self._index, self._stamp = index, stamp
        self._set_fault(None)
        self._changed()

    def _set_fault(self, fault: Fault | None) -> None:
        """Record why the file is not served (with `_swap` held); the log says it once, and when it ends."""
        before, self._fault = self._fault, fault
        if fault is not None and (before is None or before.error.message != fault.error.message):
            console.warn(
                f"{unreadable(fault.error, len(self._index)).message}. {fault.error.hint or ''}".rstrip(". ")
            )
        elif fault is None and before is not None:
            console.info(
                f"the index file {self.path} is readable again: serving it ({len(self._index)} items)"
            )

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(len(self._index))


def unreadable(error: InvedgeError, items: int) -> ServeError:
    """503: the index file cannot be read now (`error` says why); the last good copy answers searches."""
    return ServeError(
        503,
        f"{error.message}; searches use the last good copy ({items} items), changes are refused",
        f"{error.hint or 'Put a good index file back'}; the service picks up a good file at its next request",
    )


def not_changed(error: InvedgeError) -> ServeError:
    """503: a change that could not take the file's lock or write the file (nothing was changed)."""
    if isinstance(error, LockedError):
        return ServeError(
            503,
            f"{error.message}; the gallery was not changed",
            "Retry when it is done",
            {"Retry-After": "1"},
        )
    return ServeError(
        503,
        f"{error.message}; the gallery was not changed",
        "Give the service's user a writable index folder with free space, then retry",
    )


def _stamp(path: Path) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
