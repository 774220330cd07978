"""faiss engines: exact `IndexFlatIP`, and the approximate IVF and HNSW indexes with their tuning.

faiss is optional (no Jetson wheel): `faiss_module()` is the one place it is imported, and the
gallery falls back to the numpy engine without it. An approximate index is tuned when built:
nprobe (IVF) or efSearch (HNSW) is doubled from a small start until recall@10 against exact search
reaches the target, the fastest setting that is accurate enough. Its faiss index is stored in the
index file in faiss' own binary format (`to_bytes`, `from_bytes`); the vectors stay in the gallery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import MissingDependency
from .engine import Rows
from .settings import EF_CONSTRUCTION, EF_SEARCH, EF_SEARCH_LIMIT, HNSW_M


def faiss_module() -> Any:
    """The faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _set_threads(threads: int) -> None:
    faiss = faiss_module()
    if faiss is not None and threads > 0:
        faiss.omp_set_num_threads(threads)


class FaissFlat:
    """Exact search with faiss `IndexFlatIP`, made from the gallery's vectors on the first search."""

    name = "faiss-flat"

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._vectors = np.zeros((0, 0), np.float32)
        self._flat: Any = None

    def build(self, gallery: Rows) -> None:
        self._vectors, self._flat = gallery.vectors, None

    def add(self, gallery: Rows, start: int) -> None:
        self.build(gallery)

    def remove(self, gallery: Rows, removed: list[str]) -> None:
        self.build(gallery)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        flat = self._flat
        if flat is None:  # built whole before it is published: another thread may search meanwhile
            flat = faiss_module().IndexFlatIP(self._vectors.shape[1])
            flat.add(self._vectors)
            self._flat = flat
        _set_threads(self.threads)
        scores, rows = flat.search(queries, k)
        return scores, rows.astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return {}


class FaissAnn:
    """An IVF or HNSW faiss index; `ready` is False when faiss is missing (the gallery searches exactly)."""

    def __init__(self, kind: str, params: dict[str, Any], threads: int = 0, ann: Any = None) -> None:
        self.kind, self.params, self.threads = kind, dict(params), threads
        self._ann = ann

    @staticmethod
    def settings(
        kind: str,
        count: int,
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        m: int = HNSW_M,
        ef_search: int = EF_SEARCH,
        ef_construction: int = EF_CONSTRUCTION,
        seed: int = 0,
    ) -> dict[str, Any]:
        """The params of a new `kind` index of `count` items (IVF: about 4·√N lists)."""
        if kind == "ivf":
            nlist = nlist or _default_nlist(count)
            return {"nlist": int(nlist), "nprobe": int(nprobe or max(1, nlist // 32)), "seed": seed}
        return {"m": m, "ef_search": ef_search, "ef_construction": ef_construction}

    @property
    def name(self) -> str:
        return f"faiss-{self.kind}"

    @property
    def ready(self) -> bool:
        return self._ann is not None

    def build(self, gallery: Rows) -> None:
        """Train (IVF) and fill a new faiss index; MissingDependency without faiss."""
        faiss = faiss_module()
        if faiss is None:
            raise MissingDependency("faiss-cpu", f"A {self.kind} index", "pip install faiss-cpu")
        _set_threads(self.threads)
        vectors = gallery.vectors
        dim = vectors.shape[1]
        if self.kind == "ivf":
            nlist = min(self.params["nlist"], len(vectors))
            self.params["nlist"] = nlist
            self.params["nprobe"] = min(self.params["nprobe"], nlist)
            quantizer = faiss.IndexFlatIP(dim)
            ann = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ann.cp.seed = int(self.params.get("seed", 0))
            ann.cp.min_points_per_centroid = 1  # small galleries: no warning, a few points per list
            ann.train(vectors)
            ann.nprobe = self.params["nprobe"]
        else:
            ann = faiss.IndexHNSWFlat(dim, int(self.params["m"]), faiss.METRIC_INNER_PRODUCT)
            ann.hnsw.efConstruction = int(self.params["ef_construction"])
            ann.hnsw.efSearch = int(self.params["ef_search"])
        ann.add(vectors)
        self._ann = ann

    def add(self, gallery: Rows, start: int) -> None:
        if self._ann is not None:  # IVF: the trained coarse quantizer still applies; HNSW inserts
            self._ann.add(gallery.vectors[start:])

    def remove(self, gallery: Rows, removed: list[str]) -> None:
        if self._ann is None:
            return
        if self.kind == "ivf":
            self._ann.reset()  # keeps the trained quantizer; positions are renumbered by re-adding
            if len(gallery.vectors):
                self._ann.add(gallery.vectors)
        else:
            self.build(gallery)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _set_threads(self.threads)
        scores, rows = self._ann.search(queries, k)
        return scores, rows.astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return dict(self.params)

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Trade speed for recall at search time (IVF: nprobe; HNSW: efSearch)."""
        if nprobe is not None and self.kind == "ivf":
            self.params["nprobe"] = int(nprobe)
            if self._ann is not None:
                self._ann.nprobe = int(nprobe)
        if ef_search is not None and self.kind == "hnsw":
            self.params["ef_search"] = int(ef_search)
            if self._ann is not None:
                self._ann.hnsw.efSearch = int(ef_search)

    def tune(self, target_recall: float, recall: float, measure: Callable[[], float]) -> float:
        """Double nprobe / efSearch until `measure()` (recall@10) reaches the target or the limit."""
        name, limit = (
            ("nprobe", self.params.get("nlist", 1)) if self.kind == "ivf" else ("ef_search", EF_SEARCH_LIMIT)
        )
        while recall < target_recall and self.params[name] < limit:
            self.set_search_params(**{name: min(limit, self.params[name] * 2)})
            recall = measure()
        return recall

    def to_bytes(self) -> bytes | None:
        """The faiss index in faiss' own format, for the index file (None when there is none)."""
        return None if self._ann is None else faiss_module().serialize_index(self._ann).tobytes()

    @classmethod
    def from_bytes(
        cls, kind: str, params: dict[str, Any], blob: bytes, rows: int, dim: int, threads: int = 0
    ) -> FaissAnn:
        """Read a stored faiss index; ValueError (or faiss' RuntimeError) when it does not fit the gallery."""
        ann = faiss_module().deserialize_index(np.frombuffer(blob, dtype=np.uint8).copy())
        if ann.ntotal != rows or ann.d != dim:
            raise ValueError(f"{ann.ntotal} × {ann.d} vectors")
        engine = cls(kind, params, threads, ann)
        engine.set_search_params(engine.params.get("nprobe"), engine.params.get("ef_search"))
        return engine


def _default_nlist(n: int) -> int:
    """About 4·√N lists, and at least ~39 training points per list (faiss' own advice)."""
    return int(max(1, min(4 * np.sqrt(n), n // 39)))
