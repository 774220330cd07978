"""What a search answers: scores and gallery rows per query, ids and locations looked up on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np


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
