"""The gallery in an index file: `Index`, the one object callers hold (build, load, save, add, remove,
search), and `changing`, the one way to change an index file (lock, re-read, change, save).

`Index` is a `Gallery` (the root gallery.py: the interface and its rules) joining three jobs, each in
its own module: the items and the rules they keep (items.py), which engine answers and keeping the
engines in step (dispatch.py), and building and tuning a new index (build.py). The file format is
index_file.py's. The vectors are always kept, so adding and removing items never loses anything
and an approximate index can be rebuilt or searched exactly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import gallery as rules
from ..errors import IndexFileError
from ..gallery import IN_MEMORY, Gallery, Where
from . import build as building
from . import faiss_engines, index_file
from .dispatch import Engines
from .items import Items
from .result import SearchResult
from .settings import DEFAULT_K, RECALL_QUERIES


class Index(Gallery):
    """Build with `Index.build` or `Index.from_embeddings`, search with `search`, persist with `save`."""

    format = index_file.FORMAT

    def __init__(
        self,
        vectors: np.ndarray,
        ids: list[str],
        space: dict[str, Any],
        kind: str = "flat",
        params: dict[str, Any] | None = None,
        locations: list[str] | None = None,
        model: dict[str, Any] | None = None,
        recall_at_10: float | None = None,
        threads: int = 0,
    ) -> None:
        self.items = Items(vectors, ids, space, locations if locations is not None else [], model or {})
        self.kind = kind
        self.recall_at_10 = recall_at_10
        self.threads = threads
        self.engines = Engines(kind, params or {}, threads)
        self.path: Path | None = None  # the index file it was read from (`load`)

    # Index.build(vectors, ids, space, kind="flat", *, locations, model, nlist, nprobe, m, ef_search,
    # ef_construction, target_recall, threads, seed): check, build, measure and tune (build.py)
    build = classmethod(building.build_index)

    @classmethod
    def from_embeddings(cls, embeddings: Any, kind: str = "flat", **kwargs: Any) -> Index:
        """From an `embeddings.EmbeddingSet` (as written by `invedge embed`)."""
        return cls.build(
            np.asarray(embeddings.vectors, dtype=np.float32),
            embeddings.ids,
            embeddings.space,
            kind,
            locations=embeddings.locations(),
            model=embeddings.manifest.get("model", {}),
            **kwargs,
        )

    # --- what it holds (items.py) ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    @property
    def vectors(self) -> np.ndarray:
        return self.items.vectors  # (N, d) float32

    @property
    def ids(self) -> list[str]:
        return self.items.ids

    @property
    def locations(self) -> list[str]:
        return self.items.locations

    @property
    def space(self) -> dict[str, Any]:
        return self.items.space

    @property
    def model(self) -> dict[str, Any]:
        return self.items.model

    @property
    def dim(self) -> int:
        return self.items.dim

    @property
    def params(self) -> dict[str, Any]:
        """The kind's settings as stored (IVF: nlist, nprobe, seed; HNSW: m, ef_search, ef_construction)."""
        return self.engines.params

    def where(self) -> Where:
        """The index file it was read from (in memory when built here and not read)."""
        return Where(str(self.path), str(self.path)) if self.path is not None else IN_MEMORY

    def contains(self, ids: list[str]) -> set[str]:
        return set(ids).intersection(self.ids)

    def location(self, item_id: str) -> str | None:
        try:
            row = self.ids.index(item_id)
        except ValueError:
            return None
        return self.locations[row] or None

    # --- search (dispatch.py) -------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int = DEFAULT_K, space_id: str | None = None, exact: bool = False
    ) -> SearchResult:
        """Top-k gallery items for each query row; `space_id` (ModelMeta.space_id) is checked."""
        self.check_space(space_id)
        queries = rules.check_queries(queries, self.dim)
        rules.check_k(k, len(self))
        engine = self.engines.pick(self.items, exact)
        scores, rows = engine.search(queries, k)
        result = SearchResult(scores, rows, self.ids, self.locations, engine.name)
        if result.short:
            result.notes.append(self.engines.short_note(result.found, result.k, result.short))
        return result

    def use_device(self, device: str = "cuda", device_id: int = 0) -> str:
        """Answer exact searches with the Gemm + TopK graph on an ONNX Runtime device."""
        return self.engines.use_device(self.items, device, device_id)

    def follow_backend(self, info: Any) -> str | None:
        """Search on the embedding backend's GPU when it has one; None when it moved, else why not."""
        return self.engines.follow_backend(self.items, info)

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Trade speed for recall at search time (not saved unless the index is saved afterwards)."""
        self.engines.set_search_params(nprobe, ef_search)

    def measure_recall(self, k: int = 10, n_queries: int = RECALL_QUERIES, seed: int = 0) -> float:
        """recall@k of this index against exact search, gallery items as queries (each minus itself)."""
        return building.measure_recall(self, k, n_queries, seed)

    # --- changes --------------------------------------------------------------------------------

    def add(
        self,
        vectors: np.ndarray,
        ids: list[str],
        space_id: str | None = None,
        locations: list[str] | None = None,
        source: str = "the new items",
    ) -> int:
        """Append items (their space must be the gallery's; ids must be new). `source`: for errors."""
        self.check_space(space_id, adding=source)
        start = self.items.append(vectors, ids, locations, source)
        self.engines.added(self.items, start)
        return len(self) - start

    def remove(self, ids: list[str]) -> int:
        """Remove items by id; unknown ids are an error (nothing is removed then). Returns the count."""
        removed = self.items.drop(ids)
        self.engines.removed(self.items, removed)
        return len(removed)

    # --- persistence (index_file.py) ------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write atomically; returns the file size in bytes."""
        faiss = self.engines.ann.to_bytes() if self.engines.ann is not None else None
        return index_file.write_index(path, self.info(), self.vectors, self.ids, self.locations, faiss)

    @classmethod
    def load(cls, path: str | os.PathLike[str], threads: int = 0) -> Index:
        """Read and verify an index file; damaged, truncated or foreign files raise IndexFileError."""
        stored = index_file.read_index(path)
        header = stored.header
        index = cls(
            stored.vectors,
            stored.ids,
            header["space"],
            header["kind"],
            header.get("params") or {},
            locations=stored.locations,
            model=header.get("model") or {},
            recall_at_10=header.get("recall_at_10"),
            threads=threads,
        )
        index.path = Path(path)
        if "faiss" in header["sections"] and faiss_engines.faiss_module() is not None:
            try:
                index.engines.restore(stored.faiss() or b"", len(index), index.dim)
            except Exception as exc:  # faiss raises RuntimeError for a blob it cannot read
                raise IndexFileError(
                    f"{path} holds a faiss index that does not match its gallery ({_first_line(exc)})",
                    index_file.REBUILD,
                ) from exc
        return index


@dataclass
class Change:
    """One change of an index file: its gallery as read under the lock, and the size it was saved at."""

    index: Index
    size_bytes: int = 0  # of the file written (0 until it is)


@contextlib.contextmanager
def changing(
    path: str | os.PathLike[str],
    timeout: float | None = None,
    load: Callable[[Path], Index] | None = None,
    saved: Callable[[Index], None] | None = None,
) -> Iterator[Change]:
    """Lock, re-read, change, save: the gallery of index file `path`, read under the file's lock for
    one change (the block changes `.index`), then written atomically with the lock still held, so
    that no other writer's change in between is lost; `.size_bytes` is then the file's size. Nothing
    is written when the block raises.

    `timeout`: the longest wait for the lock (then LockedError naming its holder). `load`: how to
    read the file (default `Index.load`). `saved(index)`: called once it is written, the lock still
    held (to serve what was written).
    """
    with index_file.writing(path, timeout=timeout) as locked:
        change = Change(load(locked) if load is not None else Index.load(locked))
        yield change
        change.size_bytes = change.index.save(locked)
        if saved is not None:
            saved(change.index)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:200]
