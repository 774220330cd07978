"""The gallery: the items (vectors, ids, locations, embedding space) and which engine answers a search.

`Index` checks everything a caller can get wrong (space, dimension, ids, k) and leaves the search
to an engine (engine.py): the exact one (ONNX on the embedding backend's GPU when it has one,
else faiss `IndexFlatIP`, else numpy) and, for `ivf` / `hnsw`, faiss' approximate index. The
vectors are always kept, so adding and removing items never loses anything and an approximate
index can be rebuilt or searched exactly.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import IndexFileError
from . import faiss_engines, index_file
from .engine import SearchEngine
from .faiss_engines import FaissAnn, FaissFlat
from .result import SearchResult
from .settings import DEFAULT_K, EF_CONSTRUCTION, EF_SEARCH, HNSW_M, KINDS, RECALL_QUERIES, TARGET_RECALL
from .topk import NumpyExact


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
        self.vectors = vectors  # (N, d) float32
        self.ids = ids
        self.space = space  # {"space_id", "checkpoint_sha256", "embedding_dim", ...}
        self.kind = kind
        self.locations = locations if locations is not None else [""] * len(ids)
        self.model = model or {}  # the model that embedded the gallery
        self.recall_at_10 = recall_at_10
        self.threads = threads
        self._params = dict(params or {})  # a flat index's; an approximate one's live in its engine
        self._ann: FaissAnn | None = FaissAnn(kind, self._params, threads) if kind != "flat" else None
        self._exact: SearchEngine | None = None  # chosen on the first exact search
        self._warned = False

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: list[str],
        space: dict[str, Any],
        kind: str = "flat",
        *,
        locations: list[str] | None = None,
        model: dict[str, Any] | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        m: int = HNSW_M,
        ef_search: int = EF_SEARCH,
        ef_construction: int = EF_CONSTRUCTION,
        target_recall: float = TARGET_RECALL,
        threads: int = 0,
        seed: int = 0,
    ) -> Index:
        """Make an index; for `ivf`/`hnsw` also measure recall@10 against exact search.

        Unless `nprobe` (IVF) or `ef_search` (HNSW) is given, it is doubled from a small start
        until recall@10 reaches `target_recall`: the fastest setting that is accurate enough.
        """
        if kind not in KINDS:
            raise IndexFileError(f"Invalid index kind {kind!r}. Only {', '.join(KINDS)} are supported.")
        vectors = _as_matrix(vectors)
        if len(vectors) == 0:
            raise IndexFileError("the gallery is empty: nothing to index", "Embed some images first")
        if len(ids) != len(vectors):
            raise IndexFileError(f"{len(ids)} ids for {len(vectors)} vectors")
        _check_unique(ids)
        dim = int(space.get("embedding_dim", vectors.shape[1]))
        if vectors.shape[1] != dim:
            raise IndexFileError(f"vectors have dimension {vectors.shape[1]}, the space says {dim}")
        params = (
            FaissAnn.settings(
                kind,
                len(vectors),
                nlist=nlist,
                nprobe=nprobe,
                m=m,
                ef_search=ef_search,
                ef_construction=ef_construction,
                seed=seed,
            )
            if kind != "flat"
            else {}
        )
        index = cls(
            vectors,
            list(ids),
            dict(space),
            kind,
            params,
            locations=_copy(locations, ids),
            model=dict(model or {}),
            threads=threads,
        )
        if index._ann is not None:
            index._ann.build(index)
            index.recall_at_10 = index.measure_recall(k=10, seed=seed)
            if (kind == "ivf" and nprobe is None) or (kind == "hnsw" and ef_search == EF_SEARCH):
                index.recall_at_10 = index._ann.tune(
                    target_recall, index.recall_at_10, lambda: index.measure_recall(k=10, seed=seed)
                )
        return index

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

    # --- queries --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def space_id(self) -> str:
        return str(self.space.get("space_id", ""))

    @property
    def params(self) -> dict[str, Any]:
        """The kind's settings as stored (IVF: nlist, nprobe, seed; HNSW: m, ef_search, ef_construction)."""
        return self._ann.params if self._ann is not None else self._params

    def check_space(self, space_id: str | None, adding: str | None = None, model: str | None = None) -> None:
        """Refuse vectors embedded by a model of another embedding space.

        `adding`: the vectors are new gallery items (from this folder), not queries. `model`: the
        model file that embedded the queries, named in the error.
        """
        if space_id is None or not self.space_id or space_id == self.space_id:
            return
        ours = self.model.get("path", "see 'invedge index info'")
        if adding is not None:
            raise IndexFileError(
                f"{adding} was embedded by a model of another embedding space ({space_id}) than "
                f"the gallery ({self.space_id}): mixed in one index, its scores would be meaningless",
                f"Embed those images with the gallery's model ({ours}), or build a separate index from them",
            )
        by = f" (embedded by {model})" if model else ""
        raise IndexFileError(
            f"the queries{by} come from another embedding space ({space_id}) than the gallery "
            f"({self.space_id}): their scores would be meaningless",
            f"Embed the queries with the model that embedded the gallery ({ours}), or rebuild the gallery",
        )

    def search(
        self, queries: np.ndarray, k: int = DEFAULT_K, space_id: str | None = None, exact: bool = False
    ) -> SearchResult:
        """Top-k gallery items for each query row; `space_id` (ModelMeta.space_id) is checked."""
        self.check_space(space_id)
        queries = _as_matrix(queries, "queries")
        if queries.shape[1] != self.dim:
            raise IndexFileError(
                f"queries have dimension {queries.shape[1]}, the gallery {self.dim}",
                "Embed the queries with the gallery's model",
            )
        if len(self) == 0:
            raise IndexFileError("the gallery is empty", "Add items with 'invedge index add'")
        if not 1 <= k <= len(self):
            raise IndexFileError(
                f"k = {k} but the gallery holds {len(self)} item{'s' * (len(self) != 1)}",
                f"Use --k between 1 and {len(self)}",
            )
        engine = self._engine(exact)
        scores, rows = engine.search(queries, k)
        result = SearchResult(scores, rows, self.ids, self.locations, engine.name)
        if result.short:
            result.notes.append(self._short_note(result))
        return result

    def _engine(self, exact: bool) -> SearchEngine:
        """The approximate engine unless `exact` (or faiss is missing), else the exact one."""
        if not exact and self._ann is not None:
            if self._ann.ready:
                return self._ann
            if not self._warned:
                from .. import console

                console.warn(f"faiss is not installed: searching this {self.kind} index exactly instead")
                self._warned = True
        if self._exact is None:
            self._exact = (
                FaissFlat(self.threads) if faiss_engines.faiss_module() is not None else NumpyExact()
            )
            self._exact.build(self)
        return self._exact

    def _short_note(self, result: SearchResult) -> str:
        """Why an approximate search found fewer than k neighbours, and what to do."""
        knob = (
            f"--nprobe (now {self.params.get('nprobe')} of {self.params.get('nlist')} lists)"
            if self.kind == "ivf"
            else f"--ef-search (now {self.params.get('ef_search')})"
        )
        return (
            f"{result.short} of {len(result.found)} quer{'y' if len(result.found) == 1 else 'ies'} found "
            f"fewer than k = {result.k} neighbours (fewest: {int(result.found.min())}) in this "
            f"{self.kind} index. Raise {knob}, or pass --exact"
        )

    def use_device(self, device: str = "cuda", device_id: int = 0) -> str:
        """Answer exact searches with the Gemm + TopK graph on an ONNX Runtime device."""
        from .search_graph import OnnxExact

        engine = OnnxExact(device, device_id)
        engine.build(self)
        self._exact = engine
        return engine.name

    def follow_backend(self, info: Any) -> str | None:
        """Search on the embedding backend's GPU when it has one (`BackendInfo.device` "cuda:N ...").

        Only exact (flat) indexes move; returns None when the search moved to the GPU, else why not.
        """
        device = str(getattr(info, "device", "cpu"))
        if not device.startswith("cuda"):
            return "the embedding backend runs on the CPU"
        if self.kind != "flat":
            return f"{self.kind} indexes are searched by faiss on the CPU"
        try:
            self.use_device("cuda", int(device.split(":")[1].split()[0]))
        except Exception as exc:  # onnxruntime without a usable CUDA provider
            return f"GPU search unavailable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        return None

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Trade speed for recall at search time (not saved unless the index is saved afterwards)."""
        if self._ann is not None:
            self._ann.set_search_params(nprobe, ef_search)

    def measure_recall(self, k: int = 10, n_queries: int = RECALL_QUERIES, seed: int = 0) -> float:
        """recall@k of this index against exact search, gallery items as queries (each minus itself)."""
        if len(self) < 2:
            return 1.0
        k = min(k, len(self) - 1)
        rng = np.random.default_rng(seed)
        rows = rng.choice(len(self), size=min(n_queries, len(self)), replace=False)
        queries = self.vectors[rows]
        _, exact_rows = self._engine(exact=True).search(queries, k + 1)
        _, approx_rows = self._engine(exact=False).search(queries, k + 1)
        hits = 0
        for row, truth, found in zip(rows, exact_rows, approx_rows, strict=True):
            truth_set = [i for i in truth if i != row][:k]
            found_set = {i for i in found if i != row and i >= 0}
            hits += len(found_set.intersection(truth_set))
        return hits / (k * len(rows))

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
        self.check_space(space_id, adding=source)
        vectors = _as_matrix(vectors)
        if vectors.shape[1] != self.dim:
            raise IndexFileError(f"new vectors have dimension {vectors.shape[1]}, the gallery {self.dim}")
        if len(ids) != len(vectors):
            raise IndexFileError(f"{len(ids)} ids for {len(vectors)} vectors")
        _check_unique(list(ids), f"repeated in {source}")
        _check_unique(list(self.ids) + list(ids), f"of {source} already in the gallery")
        if locations is not None:
            self._check_new_locations(ids, locations, source)
        start = len(self)
        self.vectors = np.concatenate([self.vectors, vectors])
        self.ids.extend(ids)
        self.locations.extend(_copy(locations, ids))
        for engine in self._engines():
            engine.add(self, start)

    def _check_new_locations(self, ids: list[str], locations: list[str], source: str) -> None:
        """Refuse an image file already in the gallery under another id (two folders that overlap)."""
        held = {os.path.normpath(loc): i for loc, i in zip(self.locations, self.ids, strict=True) if loc}
        again = [
            (new, held[os.path.normpath(loc)])
            for new, loc in zip(ids, locations, strict=True)
            if loc and os.path.normpath(loc) in held
        ]
        if again:
            raise IndexFileError(
                f"{len(again)} image{'s' * (len(again) != 1)} of {source} already in the gallery under "
                f"another id ({again[0][0]} is the file of {again[0][1]}): each would be found twice",
                "Remove them first with 'invedge index remove', or embed only the new images",
            )

    def remove(self, ids: list[str]) -> int:
        """Remove items by id; unknown ids are an error (nothing is removed then). Returns the count."""
        wanted = set(ids)
        missing = wanted.difference(self.ids)
        if missing:
            shown = ", ".join(sorted(missing)[:3])
            raise IndexFileError(
                f"{len(missing)} id{'s' * (len(missing) != 1)} not in the gallery: {shown}",
                "See the ids with 'invedge index info INDEX --ids'",
            )
        keep = np.array([i not in wanted for i in self.ids], dtype=bool)
        self.vectors = np.ascontiguousarray(self.vectors[keep])
        self.ids = [i for i, k in zip(self.ids, keep, strict=True) if k]
        self.locations = [p for p, k in zip(self.locations, keep, strict=True) if k]
        for engine in self._engines():
            engine.remove(self, keep)
        return int((~keep).sum())

    def _engines(self) -> list[SearchEngine]:
        return [engine for engine in (self._exact, self._ann) if engine is not None]

    # --- persistence ----------------------------------------------------------------------------

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
        faiss = self._ann.to_bytes() if self._ann is not None else None
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
            try:  # checked whatever the kind: a file that holds a faiss index must hold a good one
                ann = FaissAnn.from_bytes(
                    index.kind, index.params, stored.faiss() or b"", len(index), index.dim, threads
                )
                index._ann = ann if index._ann is not None else None
            except Exception as exc:  # faiss raises RuntimeError for a blob it cannot read
                raise IndexFileError(
                    f"{path} holds a faiss index that does not match its gallery ({_first_line(exc)})",
                    index_file.REBUILD,
                ) from exc
        return index


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:200]


def _copy(locations: list[str] | None, ids: list[str]) -> list[str]:
    """The items' image files, or "" each when unknown."""
    return list(locations) if locations is not None else [""] * len(ids)


def _as_matrix(vectors: np.ndarray, what: str = "vectors") -> np.ndarray:
    array = np.asarray(vectors)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise IndexFileError(f"{what} must be a (N, d) matrix, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_unique(ids: list[str], what: str = "repeated") -> None:
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dupes = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        raise IndexFileError(
            f"{len(dupes)} id{'s' * (len(dupes) != 1)} {what}: {', '.join(dupes[:3])}",
            "Remove them first with 'invedge index remove', or use other ids",
        )
