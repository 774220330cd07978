"""The interface every search engine of the gallery implements: the seam for other stores.

The gallery (`gallery.Index`, its items in `items.Items`) owns what it holds: vectors, ids,
locations and embedding space; it checks every query and change before an engine sees it. An
engine answers top-k inner-product queries over the gallery's rows and is told of each change in
the gallery's own terms: the ids added (rows `start:`, with their vectors) and the ids removed. It
never decides what the gallery holds. Engines here: `topk.NumpyExact`, `faiss_engines.FaissFlat`,
`faiss_engines.FaissAnn` (ivf / hnsw, with its tuning) and `search_graph.OnnxExact` (exact on a
GPU through ONNX Runtime); `dispatch.Engines` chooses which one answers.

A remote store (Milvus, issue 15) implements the same five methods: `build` inserts every row with
its gallery id as the primary key; `add` inserts `gallery.ids[start:]` with
`gallery.vectors[start:]` (the caller's new vectors, in this process at that moment); `remove`
deletes `removed` by id; `search` asks the store and turns the ids it answers into rows through
`gallery.ids` (the engine keeps the `gallery` it was built on: the same object, kept current;
-1 where it found fewer than k); `describe` gives the settings to store in the index file (the
collection and its parameters, never a password). What such a store needs beyond this interface,
for the issue that adds it:
- the gallery keeps a local copy of every vector (the index file, exact search, recall@10 and
  rebuilding read it); a store that is the only holder needs `Items` to read vectors on demand;
- `Index.load` makes engines from the file (faiss: its blob); a store needs a way back to its
  collection from `describe()`'s params, and a check that the collection holds the file's ids;
- changes reach the engine one at a time: the caller (the CLI, or `invedge serve` under the same
  lock) serialises writers; concurrent searches during a change are the store's to make safe.
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
