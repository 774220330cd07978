"""A gallery of embeddings searched by inner product (= cosine on L2-normalised rows).

Kinds:
- `flat` (default): exact. faiss `IndexFlatIP` when faiss is installed, else the blocked numpy
  kernel of `topk.py` (on par with faiss here), or on a GPU backend the Gemm + TopK ONNX graph of
  `search_graph.py` (`Index.use_device`).
- `ivf`, `hnsw`: faiss approximate indexes for large galleries; recall@10 against exact search is
  measured when they are built and stored with them.

The vectors are always kept, so adding and removing items never loses anything and an approximate
index can be rebuilt or searched exactly.

File format (no pickle): magic `IVEIDX01`, u64 header length, a JSON header (kind, space, params,
section offsets), the raw sections (vectors float32, ids JSON, locations JSON, the faiss index in
faiss' own binary format), and the sha256 of everything before it: a damaged, truncated or
foreign file is rejected on load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import IndexFileError, InvedgeError, MissingDependency
from .files import atomic_path, check_regular, pause_for_test, remove_leftovers
from .locks import exclusive_lock
from .topk import exact_topk

FORMAT = "invspread-edge-index/1"
MAGIC = b"IVEIDX01"
KINDS = ("flat", "ivf", "hnsw")
RECALL_QUERIES = 1000


@dataclass
class SearchResult:
    """Top-k neighbours of each query: rows follow the queries, columns the rank."""

    scores: np.ndarray  # (Q, k) float32, most similar first
    indices: np.ndarray  # (Q, k) int64 rows of the gallery; -1 where an approximate index found fewer
    gallery_ids: list[str] = field(repr=False)
    gallery_locations: list[str] = field(repr=False)
    searcher: str  # which engine answered: "faiss-flat", "numpy", "onnx-topk:cuda", "faiss-ivf", ...
    notes: list[str] = field(default_factory=list)  # what the caller must know (fewer than k found)

    # ids and locations are looked up when asked for: building Q × k Python lists on every search
    # cost a third of a 10k-gallery search (1 000 queries), for callers that only need indices.
    @cached_property
    def ids(self) -> list[list[str]]:
        return [[self.gallery_ids[i] for i in row if i >= 0] for row in self.indices]

    @cached_property
    def locations(self) -> list[list[str]]:
        return [[self.gallery_locations[i] for i in row if i >= 0] for row in self.indices]

    @property
    def k(self) -> int:
        return int(self.indices.shape[1]) if self.indices.ndim == 2 else 0

    @cached_property
    def found(self) -> np.ndarray:
        """(Q,) neighbours found per query: k, or fewer where an approximate index fell short."""
        return (self.indices >= 0).sum(axis=1)

    @property
    def short(self) -> int:
        """How many queries got fewer than k neighbours."""
        return int((self.found < self.k).sum())

    def records(self, queries: list[str] | None = None) -> list[dict[str, Any]]:
        """JSON-ready: one record per query with its ranked neighbours (`found` ≤ k of them)."""
        out = []
        for q, row in enumerate(self.indices):
            kept = [r for r in range(len(row)) if row[r] >= 0]
            hits = [
                {
                    "rank": rank + 1,
                    "id": self.gallery_ids[row[r]],
                    "score": round(float(self.scores[q, r]), 6),
                }
                for rank, r in enumerate(kept)
            ]
            out.append({"query": queries[q] if queries else q, "found": len(hits), "neighbours": hits})
        return out


@dataclass
class Index:
    """Build with `Index.build` or `Index.from_embeddings`, search with `search`, persist with `save`."""

    vectors: np.ndarray  # (N, d) float32
    ids: list[str]
    space: dict[str, Any]  # {"space_id", "checkpoint_sha256", "embedding_dim", ...}
    kind: str = "flat"
    params: dict[str, Any] = field(default_factory=dict)
    locations: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)  # the model that embedded the gallery
    recall_at_10: float | None = None
    threads: int = 0
    _ann: Any = field(default=None, repr=False)  # faiss IVF/HNSW index
    _flat: Any = field(default=None, repr=False)  # faiss IndexFlatIP, made on first search
    _device: Any = field(default=None, repr=False)  # search_graph.OrtTopK
    _warned: bool = field(default=False, repr=False)

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
        m: int = 32,
        ef_search: int = 64,
        ef_construction: int = 80,
        target_recall: float = 0.95,
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
        params: dict[str, Any] = {}
        if kind == "ivf":
            nlist = nlist or _default_nlist(len(vectors))
            params = {"nlist": int(nlist), "nprobe": int(nprobe or max(1, nlist // 32)), "seed": seed}
        elif kind == "hnsw":
            params = {"m": m, "ef_search": ef_search, "ef_construction": ef_construction}
        index = cls(
            vectors=vectors,
            ids=list(ids),
            space=dict(space),
            kind=kind,
            params=params,
            locations=list(locations) if locations is not None else [""] * len(ids),
            model=dict(model or {}),
            threads=threads,
        )
        if kind != "flat":
            index._ann = index._build_ann(vectors)
            index.recall_at_10 = index.measure_recall(k=10, seed=seed)
            tune = (kind == "ivf" and nprobe is None) or (kind == "hnsw" and ef_search == 64)
            if tune:
                index._tune(target_recall, seed)
        return index

    def _tune(self, target_recall: float, seed: int) -> None:
        """Raise nprobe / efSearch (doubling) until recall@10 reaches the target or the limit."""
        name, limit = ("nprobe", self.params.get("nlist", 1)) if self.kind == "ivf" else ("ef_search", 1024)
        while (self.recall_at_10 or 0.0) < target_recall and self.params[name] < limit:
            value = min(limit, self.params[name] * 2)
            self.set_search_params(**{name: value})
            self.recall_at_10 = self.measure_recall(k=10, seed=seed)

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
        self, queries: np.ndarray, k: int = 5, space_id: str | None = None, exact: bool = False
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
        scores, indices, searcher = self._search(queries, k, exact)
        result = SearchResult(scores, indices, self.ids, self.locations, searcher)
        if result.short:
            result.notes.append(self._short_note(result))
        return result

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

    def _search(self, queries: np.ndarray, k: int, exact: bool) -> tuple[np.ndarray, np.ndarray, str]:
        if self.kind != "flat" and not exact:
            if self._ann is not None:
                self._set_threads()
                scores, indices = self._ann.search(queries, k)
                return scores, indices.astype(np.int64), f"faiss-{self.kind}"
            if not self._warned:
                from . import console

                console.warn(f"faiss is not installed: searching this {self.kind} index exactly instead")
                self._warned = True
        if self._device is not None:
            scores, indices = self._device.search(queries, k)
            return scores, indices, self._device.name
        faiss = _faiss()
        if faiss is not None:
            if self._flat is None:
                self._flat = faiss.IndexFlatIP(self.dim)
                self._flat.add(self.vectors)
            self._set_threads()
            scores, indices = self._flat.search(queries, k)
            return scores, indices.astype(np.int64), "faiss-flat"
        scores, indices = exact_topk(queries, self.vectors, k)
        return scores, indices, "numpy"

    def use_device(self, device: str = "cuda", device_id: int = 0) -> str:
        """Answer exact searches with the Gemm + TopK graph on an ONNX Runtime device."""
        from .search_graph import OrtTopK

        self._device = OrtTopK(self.vectors, device=device, device_id=device_id)
        return self._device.name

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

    def measure_recall(self, k: int = 10, n_queries: int = RECALL_QUERIES, seed: int = 0) -> float:
        """recall@k of this index against exact search, gallery items as queries (each minus itself)."""
        if len(self) < 2:
            return 1.0
        k = min(k, len(self) - 1)
        rng = np.random.default_rng(seed)
        rows = rng.choice(len(self), size=min(n_queries, len(self)), replace=False)
        queries = self.vectors[rows]
        exact_scores, exact_idx, _ = self._search(queries, k + 1, exact=True)
        _, approx_idx, _ = self._search(queries, k + 1, exact=False)
        hits = 0
        for row, truth, found in zip(rows, exact_idx, approx_idx, strict=True):
            truth_set = [i for i in truth if i != row][:k]
            found_set = {i for i in found if i != row and i >= 0}
            hits += len(found_set.intersection(truth_set))
        del exact_scores
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
        if locations is not None:  # one image file under two ids (two folders that overlap)
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
        self.vectors = np.concatenate([self.vectors, vectors])
        self.ids.extend(ids)
        self.locations.extend(locations if locations is not None else [""] * len(ids))
        self._changed()
        if self._ann is not None and self.kind == "ivf":
            self._ann.add(vectors)  # the trained coarse quantizer still applies
        elif self._ann is not None:
            self._ann.add(vectors)  # HNSW inserts incrementally

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
        self._changed()
        if self._ann is not None:
            self._ann = self._rebuild_ann()
        return int((~keep).sum())

    def _changed(self) -> None:
        self._flat = None
        if self._device is not None:
            self.use_device(self._device.device)

    # --- faiss approximate indexes --------------------------------------------------------------

    def _build_ann(self, vectors: np.ndarray) -> Any:
        faiss = _faiss()
        if faiss is None:
            raise MissingDependency("faiss-cpu", f"A {self.kind} index", "pip install faiss-cpu")
        self._set_threads()
        if self.kind == "ivf":
            nlist = min(self.params["nlist"], len(vectors))
            self.params["nlist"] = nlist
            self.params["nprobe"] = min(self.params["nprobe"], nlist)
            quantizer = faiss.IndexFlatIP(self.dim)
            ann = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ann.cp.seed = int(self.params.get("seed", 0))
            ann.cp.min_points_per_centroid = 1  # small galleries: no warning, a few points per list
            ann.train(vectors)
            ann.nprobe = self.params["nprobe"]
        else:
            ann = faiss.IndexHNSWFlat(self.dim, int(self.params["m"]), faiss.METRIC_INNER_PRODUCT)
            ann.hnsw.efConstruction = int(self.params["ef_construction"])
            ann.hnsw.efSearch = int(self.params["ef_search"])
        ann.add(vectors)
        return ann

    def _rebuild_ann(self) -> Any:
        if self.kind == "ivf":
            self._ann.reset()  # keeps the trained quantizer; positions are renumbered by re-adding
            if len(self):
                self._ann.add(self.vectors)
            return self._ann
        return self._build_ann(self.vectors)

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Trade speed for recall at search time (not saved unless the index is saved afterwards)."""
        if nprobe is not None and self.kind == "ivf":
            self.params["nprobe"] = int(nprobe)
            if self._ann is not None:
                self._ann.nprobe = int(nprobe)
        if ef_search is not None and self.kind == "hnsw":
            self.params["ef_search"] = int(ef_search)
            if self._ann is not None:
                self._ann.hnsw.efSearch = int(ef_search)

    def _set_threads(self) -> None:
        faiss = _faiss()
        if faiss is not None and self.threads > 0:
            faiss.omp_set_num_threads(self.threads)

    # --- persistence ----------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
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
        flat = np.ascontiguousarray(self.vectors, dtype="<f4").reshape(-1).view(np.uint8)
        sections: list[tuple[str, bytes | memoryview, dict[str, Any]]] = [
            (
                "vectors",
                memoryview(flat),  # (0, d) too: an empty gallery is a valid index
                {"dtype": "float32", "shape": list(self.vectors.shape)},
            ),
            ("ids", json.dumps(self.ids).encode("utf-8"), {}),
            ("locations", json.dumps(self.locations).encode("utf-8"), {}),
        ]
        faiss = _faiss()
        if self._ann is not None and faiss is not None:
            sections.append(("faiss", faiss.serialize_index(self._ann).tobytes(), {}))
        header = self.info() | {
            "toolkit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        header["sections"] = {}
        offset = 0
        for name, data, extra in sections:
            header["sections"][name] = {"offset": offset, "nbytes": len(data), **extra}
            offset += len(data)
        header_bytes = json.dumps(header).encode("utf-8")
        digest = hashlib.sha256()
        chunks = [MAGIC, struct.pack("<Q", len(header_bytes)), header_bytes, *(d for _, d, _ in sections)]
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            for number, chunk in enumerate(chunks):
                fh.write(chunk)
                digest.update(chunk)
                if number == 3:
                    fh.flush()
                    pause_for_test("index-save")  # a kill here: a half-written temporary file
            fh.write(digest.digest())
        return Path(path).stat().st_size

    @classmethod
    def load(cls, path: str | os.PathLike[str], threads: int = 0) -> Index:
        """Read and verify an index file; damaged, truncated or foreign files raise IndexFileError."""
        path = Path(path)
        rebuild = "Build the index again with 'invedge index build EMBEDDINGS --out FILE --overwrite'"
        try:
            check_regular(path, "index")
        except InvedgeError as exc:
            raise IndexFileError(exc.message, "Give the index file written by 'invedge index build'") from exc
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise IndexFileError(
                f"index not found: {path}", "Build one with 'invedge index build EMBEDDINGS --out FILE'"
            ) from exc
        except IsADirectoryError as exc:
            hint = (
                f"It is an embeddings folder: build an index from it with 'invedge index build {path} --out FILE'"
                if (path / "manifest.json").is_file()
                else "Give the index file written by 'invedge index build'"
            )
            raise IndexFileError(f"{path} is a folder, not an index file", hint) from exc
        except OSError as exc:
            raise IndexFileError(
                f"cannot read {path}: {exc.strerror or exc}", "Check its permissions"
            ) from exc
        if not data.startswith(MAGIC):
            raise IndexFileError(
                f"{path} is not an invspread-edge index (wrong magic bytes)",
                "Give the file written by 'invedge index build'",
            )
        if len(data) < len(MAGIC) + 8 + 32 or hashlib.sha256(data[:-32]).digest() != data[-32:]:
            raise IndexFileError(f"{path} is damaged or truncated (checksum mismatch)", rebuild)
        (header_len,) = struct.unpack_from("<Q", data, len(MAGIC))
        body = len(MAGIC) + 8 + header_len
        try:
            header, vectors, ids, locations = _parse(data, body)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError) as exc:
            raise IndexFileError(f"{path} has an unreadable header or sections ({exc})", rebuild) from exc
        index = cls(
            vectors=vectors,
            ids=ids,
            space=header["space"],
            kind=header["kind"],
            params=header.get("params") or {},
            locations=locations,
            model=header.get("model") or {},
            recall_at_10=header.get("recall_at_10"),
            threads=threads,
        )
        sections = header["sections"]
        if "faiss" in sections:
            faiss = _faiss()
            if faiss is not None:
                spec = sections["faiss"]
                start = body + int(spec["offset"])
                blob = np.frombuffer(data[start : start + int(spec["nbytes"])], dtype=np.uint8)
                try:
                    index._ann = faiss.deserialize_index(blob.copy())
                    if index._ann.ntotal != len(ids) or index._ann.d != index.dim:
                        raise ValueError(f"{index._ann.ntotal} × {index._ann.d} vectors")
                    index.set_search_params(index.params.get("nprobe"), index.params.get("ef_search"))
                except Exception as exc:  # faiss raises RuntimeError for a blob it cannot read
                    raise IndexFileError(
                        f"{path} holds a faiss index that does not match its gallery ({_first_line(exc)})",
                        rebuild,
                    ) from exc
        return index


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], timeout: float | None = None) -> Iterator[Path]:
    """Hold the lock of index file `path` for a read-modify-write (build, add, remove).

    Also removes the temporary files that writers of `path` killed mid-save left beside it.
    """
    path = Path(path)
    with exclusive_lock(path, "index", timeout=timeout):
        remove_leftovers(path.absolute().parent, [path.name])
        yield path


def _parse(data: bytes, body: int) -> tuple[dict[str, Any], np.ndarray, list[str], list[str]]:
    """Header and sections of a checksummed index file; ValueError/KeyError/TypeError if odd."""
    header = json.loads(data[len(MAGIC) + 8 : body].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("the header is not an object")
    if header.get("format") != FORMAT:
        raise ValueError(f"format {header.get('format')!r}")
    sections = header["sections"]
    if not isinstance(sections, dict) or not isinstance(header.get("space"), dict):
        raise ValueError("no sections or space")
    if header.get("kind") not in KINDS or not isinstance(header.get("params") or {}, dict):
        raise ValueError(f"kind {header.get('kind')!r}")

    def section(name: str) -> bytes:
        spec = sections[name]
        start, nbytes = int(spec["offset"]), int(spec["nbytes"])
        if start < 0 or nbytes < 0 or body + start + nbytes > len(data) - 32:
            raise ValueError(f"section {name} out of bounds")
        return data[body + start : body + start + nbytes]

    shape = tuple(int(n) for n in sections["vectors"]["shape"])
    if len(shape) != 2 or shape[1] < 1:
        raise ValueError(f"vectors of shape {shape}")
    vectors = np.frombuffer(section("vectors"), dtype="<f4").reshape(shape).astype(np.float32)
    ids = json.loads(section("ids"))
    locations = json.loads(section("locations"))
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("ids are not a list of strings")
    if not isinstance(locations, list) or not all(isinstance(i, str) for i in locations):
        raise ValueError("locations are not a list of strings")
    if len(ids) != shape[0] or len(locations) != shape[0] or len(set(ids)) != len(ids):
        raise ValueError("inconsistent sections")
    return header, vectors, ids, locations


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:200]


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _default_nlist(n: int) -> int:
    """About 4·√N lists, and at least ~39 training points per list (faiss' own advice)."""
    return int(max(1, min(4 * np.sqrt(n), n // 39)))


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
