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
        """JSON-ready: one record per query with its ranked neighbours (`found` ≤ k of them); a
        query or neighbour that is a video frame (`SOURCE#t=SECONDS`) also says its time."""
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
            for hit in hits:
                hit |= frame_time(hit["id"])
            query = queries[q] if queries else q
            record = {"query": query} | (frame_time(query) if isinstance(query, str) else {})
            out.append(record | {"found": len(hits), "neighbours": hits})
        return out


def frame_time(item_id: str) -> dict[str, Any]:
    """{"time": seconds, "at": as people read it} for an id that names a video frame, else {}."""
    from ..sources.frame import format_time, frame_of

    frame = frame_of(item_id)
    return {} if frame is None else {"time": frame["time"], "at": format_time(frame)}
