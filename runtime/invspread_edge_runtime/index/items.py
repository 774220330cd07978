"""The gallery's items: vectors, ids, image files and embedding space.

`Items` is the bookkeeping only: which rows the gallery holds, in which space, and whether a new
item or a removal keeps the gallery's rules (the functions of the root gallery.py, shared with the
Milvus gallery; `gallery.Index` checks the embedding space and the queries). It never searches;
the engines (engine.py) see it as their `Rows` and are told about each change by `gallery.Index`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import gallery as rules


@dataclass
class Items:
    """Row r is `vectors[r]`, named `ids[r]`, from image file `locations[r]` ("" when unknown)."""

    vectors: np.ndarray  # (N, d) float32, L2-normalised rows
    ids: list[str]
    space: dict[str, Any]  # {"space_id", "checkpoint_sha256", "embedding_dim", ...}
    locations: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)  # the model that embedded the gallery

    def __post_init__(self) -> None:
        if not self.locations:
            self.locations = [""] * len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def append(self, vectors: np.ndarray, ids: list[str], locations: list[str] | None, source: str) -> int:
        """Append new items (ids and files must be new; their space is the gallery's to check);
        returns the first new row."""
        vectors = rules.check_new_items(vectors, ids, self.dim, source)
        rules.check_not_held(ids, set(self.ids), source)
        if locations is not None:
            self._check_new_locations(ids, locations, source)
        start = len(self)
        self.vectors = np.concatenate([self.vectors, vectors])
        self.ids.extend(ids)
        self.locations.extend(rules.copy_locations(locations, ids))
        return start

    def drop(self, ids: list[str]) -> list[str]:
        """Remove items by id; unknown ids are an error (nothing is removed then). Returns the ids
        removed, in their old rows' order."""
        wanted = set(ids)
        missing = wanted.difference(self.ids)
        if missing:
            raise rules.unknown_ids(missing)
        keep = np.array([i not in wanted for i in self.ids], dtype=bool)
        removed = [i for i, k in zip(self.ids, keep, strict=True) if not k]
        self.vectors = np.ascontiguousarray(self.vectors[keep])
        self.ids = [i for i, k in zip(self.ids, keep, strict=True) if k]
        self.locations = [p for p, k in zip(self.locations, keep, strict=True) if k]
        return removed

    def _check_new_locations(self, ids: list[str], locations: list[str], source: str) -> None:
        """Refuse an image file already in the gallery under another id (two folders that overlap)."""
        held = {os.path.normpath(loc): i for loc, i in zip(self.locations, self.ids, strict=True) if loc}
        again = [
            (new, held[os.path.normpath(loc)])
            for new, loc in zip(ids, locations, strict=True)
            if loc and os.path.normpath(loc) in held
        ]
        if again:
            raise rules.locations_held(again, source)
