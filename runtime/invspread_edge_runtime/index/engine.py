"""The interface every search engine of the gallery implements: the seam for other stores.

The gallery (`gallery.Index`) owns the items: their vectors, ids, locations and embedding space.
An engine answers top-k inner-product queries over the gallery's rows and is told about every
change; it never decides what the gallery holds. Engines here: `topk.NumpyExact`,
`faiss_engines.FaissFlat`, `faiss_engines.FaissAnn` (ivf / hnsw, with its tuning) and
`search_graph.OnnxExact` (exact on a GPU through ONNX Runtime).

A remote store (Milvus, issue 15) implements the same five methods: `build` inserts every row
with its gallery id as the primary key and keeps the ids in row order; `add` inserts
`gallery.ids[start:]` with their vectors; `remove` deletes the ids of the rows where `keep` is
False and drops them from its list; `search` asks the store and turns the ids it answers back
into rows (-1 where it found fewer than k); `describe` gives the settings to store in the index
file (the collection and its parameters, never a password). The space check stays in the gallery,
before any engine is called.
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
        """Rows `start:` of `gallery` are new, appended after the ones indexed."""

    def remove(self, gallery: Rows, keep: np.ndarray) -> None:
        """The rows where `keep` ((N_before,) bool) is False are gone; `gallery` holds the rest, renumbered."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) float32 scores, most similar first, and (Q, k) int64 rows (-1: fewer than k found)."""
        ...

    def describe(self) -> dict[str, Any]:
        """The engine's settings, stored in the index file's header as "params" (JSON-ready)."""
        ...
