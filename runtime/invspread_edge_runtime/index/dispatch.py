"""Which engine answers a search, and keeping every engine in step with the gallery's changes.

A flat gallery is searched exactly: ONNX on the embedding backend's GPU when it has one
(`follow_backend`), else faiss `IndexFlatIP`, else numpy, chosen on the first exact search. An
`ivf` / `hnsw` gallery also has faiss' approximate index, which answers unless a search asks to be
exact (or faiss is missing: then it is searched exactly, with one warning).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import faiss_engines
from .engine import Rows, SearchEngine
from .faiss_engines import FaissAnn, FaissFlat
from .topk import NumpyExact


class Engines:
    """The gallery's engines: an approximate one for `ivf` / `hnsw`, an exact one made when needed."""

    def __init__(
        self, kind: str, params: dict[str, Any], threads: int = 0, ann: FaissAnn | None = None
    ) -> None:
        self.kind, self.threads = kind, threads
        self._params = dict(params)  # a flat index's; an approximate one's live in its engine
        self.ann: FaissAnn | None = None if kind == "flat" else ann or FaissAnn(kind, self._params, threads)
        self._exact: SearchEngine | None = None  # chosen on the first exact search
        self._warned = False

    @property
    def params(self) -> dict[str, Any]:
        """The kind's settings as stored (IVF: nlist, nprobe, seed; HNSW: m, ef_search, ef_construction)."""
        return self.ann.params if self.ann is not None else self._params

    def pick(self, gallery: Rows, exact: bool) -> SearchEngine:
        """The approximate engine unless `exact` (or faiss is missing), else the exact one."""
        if not exact and self.ann is not None:
            if self.ann.ready:
                return self.ann
            if not self._warned:
                from .. import console

                console.warn(f"faiss is not installed: searching this {self.kind} index exactly instead")
                self._warned = True
        exact = self._exact
        if exact is None:  # built whole before it is published: another thread may search meanwhile
            exact = FaissFlat(self.threads) if faiss_engines.faiss_module() is not None else NumpyExact()
            exact.build(gallery)
            self._exact = exact
        return exact

    def added(self, gallery: Rows, start: int) -> None:
        for engine in self._live():
            engine.add(gallery, start)

    def removed(self, gallery: Rows, ids: list[str]) -> None:
        for engine in self._live():
            engine.remove(gallery, ids)

    def _live(self) -> list[SearchEngine]:
        return [engine for engine in (self._exact, self.ann) if engine is not None]

    def use_device(self, gallery: Rows, device: str = "cuda", device_id: int = 0) -> str:
        """Answer exact searches with the Gemm + TopK graph on an ONNX Runtime device."""
        from .search_graph import OnnxExact

        engine = OnnxExact(device, device_id)
        engine.build(gallery)
        self._exact = engine
        return engine.name

    def follow_backend(self, gallery: Rows, info: Any) -> str | None:
        """Search on the embedding backend's GPU when it has one (`BackendInfo.device` "cuda:N ...").

        Only exact (flat) indexes move; returns None when the search moved to the GPU, else why not.
        """
        device = str(getattr(info, "device", "cpu"))
        if getattr(info, "name", None) == "triton":  # its model_path names the server, no credentials
            return f"the embedding model runs on the Triton server {info.model_path}"
        if not device.startswith("cuda"):
            return "the embedding backend runs on the CPU"
        if self.kind != "flat":
            return f"{self.kind} indexes are searched by faiss on the CPU"
        try:
            self.use_device(gallery, "cuda", int(device.split(":")[1].split()[0]))
        except Exception as exc:  # onnxruntime without a usable CUDA provider
            return f"GPU search unavailable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        return None

    def restore(self, blob: bytes, rows: int, dim: int) -> None:
        """The faiss index stored in an index file; ValueError (or faiss' RuntimeError) when it does
        not fit the gallery. Checked whatever the kind: a file that holds one must hold a good one."""
        ann = FaissAnn.from_bytes(self.kind, self.params, blob, rows, dim, self.threads)
        if self.ann is not None:
            self.ann = ann

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        if self.ann is not None:
            self.ann.set_search_params(nprobe, ef_search)

    def short_note(self, found: np.ndarray, k: int, short: int) -> str:
        """Why an approximate search found fewer than k neighbours, and what to do."""
        knob = (
            f"--nprobe (now {self.params.get('nprobe')} of {self.params.get('nlist')} lists)"
            if self.kind == "ivf"
            else f"--ef-search (now {self.params.get('ef_search')})"
        )
        return (
            f"{short} of {len(found)} quer{'y' if len(found) == 1 else 'ies'} found "
            f"fewer than k = {k} neighbours (fewest: {int(found.min())}) in this "
            f"{self.kind} index. Raise {knob}, or pass --exact"
        )
