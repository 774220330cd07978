"""The interface every search engine of the gallery implements: the seam for other stores.

The gallery (`gallery.Index`, its items in `items.Items`) owns what it holds: vectors, ids,
locations and embedding space; it checks every query and change before an engine sees it. An
engine answers top-k inner-product queries over the gallery's rows and is told of each change in
the gallery's own terms: the ids added (rows `start:`, with their vectors) and the ids removed. It
never decides what the gallery holds. Engines here: `topk.NumpyExact`, `faiss_engines.FaissFlat`,
`faiss_engines.FaissAnn` (ivf / hnsw, with its tuning) and `search_graph.OnnxExact` (exact on a
GPU through ONNX Runtime); `dispatch.Engines` chooses which one answers.

A remote store is not one of these engines: `milvus_store.MilvusGallery` is a Milvus collection
as a gallery whose only holder is Milvus (a 100M-image gallery cannot be copied into the process,
and this interface hands engines the gallery's vectors), so it is not an engine of `Index` but a
gallery of its own: both are the root gallery.py's `Gallery` (len, kind, params, info, search,
check_space, add, remove, location), with the same rules and messages, the Milvus one searched on
Milvus' own servers. Its settings and embedding space live in the collection's properties, not in
an index file; adds are upserts (idempotent), in batches with retries. See docs/milvus.md.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Rows(Protocol):
    """What an engine sees of the gallery: row r is `vectors[r]`, named `ids[r]`."""

    vectors: np.ndarray  # (N, d) float32, L2-normalised rows
    ids: list[str]


class SearchEngine(Protocol):
    """Top-k inner product over the gallery's rows, kept in step with its changes."""

    @property
    def name(self) -> str:
        """Which engine answered, as `SearchResult.searcher` shows it: "numpy", "faiss-ivf", ..."""
        ...

    def build(self, gallery: Rows) -> None:
        """Index every row of `gallery` (replacing whatever was indexed)."""

    def add(self, gallery: Rows, start: int) -> None:
        """Rows `start:` of `gallery` (`ids[start:]`, `vectors[start:]`) are new, after the ones indexed."""

    def remove(self, gallery: Rows, removed: list[str]) -> None:
        """The items `removed` (ids) are gone; `gallery` holds the rest, renumbered in their order."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) float32 scores, most similar first, and (Q, k) int64 rows (-1: fewer than k found)."""
        ...

    def describe(self) -> dict[str, Any]:
        """The engine's settings, stored in the index file's header as "params" (JSON-ready)."""
        ...
