"""The gallery: `Index`, the one object callers hold (build, load, save, add, remove, search).

`Index` joins three jobs, each in its own module: the items and every check a caller can fail
(items.py), which engine answers and keeping the engines in step (dispatch.py), and building and
tuning a new index (build.py). The file format is index_file.py's. The vectors are always kept, so
adding and removing items never loses anything and an approximate index can be rebuilt or
searched exactly.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import IndexFileError
from . import build as building
from . import faiss_engines, index_file
from .dispatch import Engines
from .items import Items
from .result import SearchResult
from .settings import DEFAULT_K, RECALL_QUERIES


class Index:
    """Build with `Index.build` or `Index.from_embeddings`, search with `search`, persist with `save`."""

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
    def space_id(self) -> str:
        return self.items.space_id

    @property
    def params(self) -> dict[str, Any]:
        """The kind's settings as stored (IVF: nlist, nprobe, seed; HNSW: m, ef_search, ef_construction)."""
        return self.engines.params

    def check_space(self, space_id: str | None, adding: str | None = None, model: str | None = None) -> None:
        """Refuse vectors of another embedding space (`Items.check_space`)."""
        self.items.check_space(space_id, adding, model)

    # --- search (dispatch.py) -------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int = DEFAULT_K, space_id: str | None = None, exact: bool = False
    ) -> SearchResult:
        """Top-k gallery items for each query row; `space_id` (ModelMeta.space_id) is checked."""
        queries = self.items.check_queries(queries, k, space_id)
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
    ) -> None:
        """Append items (their space must be the gallery's; ids must be new). `source`: for errors."""
        start = self.items.append(vectors, ids, space_id, locations, source)
        self.engines.added(self.items, start)

    def remove(self, ids: list[str]) -> int:
        """Remove items by id; unknown ids are an error (nothing is removed then). Returns the count."""
        removed = self.items.drop(ids)
        self.engines.removed(self.items, removed)
        return len(removed)

    # --- persistence (index_file.py) ------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "format": index_file.FORMAT,
            "kind": self.kind,
            "count": len(self),
            "dim": self.dim,
            "space": self.space,
            "model": self.model,
            "params": self.params,
            "recall_at_10": self.recall_at_10,
        }

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
        if "faiss" in header["sections"] and faiss_engines.faiss_module() is not None:
            try:
                index.engines.restore(stored.faiss() or b"", len(index), index.dim)
            except Exception as exc:  # faiss raises RuntimeError for a blob it cannot read
                raise IndexFileError(
                    f"{path} holds a faiss index that does not match its gallery ({_first_line(exc)})",
                    index_file.REBUILD,
                ) from exc
        return index


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:200]
