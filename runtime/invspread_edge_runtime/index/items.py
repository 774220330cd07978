"""The gallery's items: vectors, ids, image files and embedding space, and every check a caller can fail.

`Items` is the bookkeeping only: which rows the gallery holds, in which space, and whether a
query, a new item or a removal makes sense. It never searches; the engines (engine.py) see it as
their `Rows` and are told about each change by `gallery.Index`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import IndexFileError


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

    @property
    def space_id(self) -> str:
        return str(self.space.get("space_id", ""))

    def check_space(self, space_id: str | None, adding: str | None = None, model: str | None = None) -> None:
        """Refuse vectors embedded by a model of another embedding space (`check_space`)."""
        check_space(self.space_id, self.model, space_id, adding, model)

    def check_queries(self, queries: np.ndarray, k: int, space_id: str | None) -> np.ndarray:
        """The queries as a (Q, d) float32 matrix, once space, dimension and k fit the gallery."""
        self.check_space(space_id)
        return check_query_matrix(queries, k, self.dim, len(self))

    def append(
        self,
        vectors: np.ndarray,
        ids: list[str],
        space_id: str | None,
        locations: list[str] | None,
        source: str,
    ) -> int:
        """Append new items (their space must be ours; ids and files must be new); returns the first new row."""
        self.check_space(space_id, adding=source)
        vectors = check_new_items(vectors, ids, self.dim, source)
        check_unique(list(self.ids) + list(ids), f"of {source} already in the gallery")
        if locations is not None:
            self._check_new_locations(ids, locations, source)
        start = len(self)
        self.vectors = np.concatenate([self.vectors, vectors])
        self.ids.extend(ids)
        self.locations.extend(copy_locations(locations, ids))
        return start

    def drop(self, ids: list[str]) -> list[str]:
        """Remove items by id; unknown ids are an error (nothing is removed then). Returns the ids
        removed, in their old rows' order."""
        wanted = set(ids)
        missing = wanted.difference(self.ids)
        if missing:
            raise missing_ids(missing)
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
            raise locations_held(again, source)


# The checks as functions of what they need, for a gallery that is not an `Items` (a Milvus
# collection, milvus_store/gallery.py): one wording of each refusal, wherever the gallery lives.


def check_space(
    ours: str,
    model_of_gallery: dict[str, Any],
    space_id: str | None,
    adding: str | None = None,
    model: str | None = None,
) -> None:
    """Refuse vectors embedded by a model of another embedding space than `ours`.

    `adding`: the vectors are new gallery items (from this folder), not queries. `model`: the
    model file that embedded the queries, named in the error.
    """
    if space_id is None or not ours or space_id == ours:
        return
    theirs = model_of_gallery.get("path", "see 'invedge index info'")
    if adding is not None:
        raise IndexFileError(
            f"{adding} was embedded by a model of another embedding space ({space_id}) than "
            f"the gallery ({ours}): mixed in one index, its scores would be meaningless",
            f"Embed those images with the gallery's model ({theirs}), or build a separate index from them",
        )
    by = f" (embedded by {model})" if model else ""
    raise IndexFileError(
        f"the queries{by} come from another embedding space ({space_id}) than the gallery "
        f"({ours}): their scores would be meaningless",
        f"Embed the queries with the model that embedded the gallery ({theirs}), or rebuild the gallery",
    )


def check_query_matrix(queries: np.ndarray, k: int, dim: int, count: int) -> np.ndarray:
    """The queries as a (Q, d) float32 matrix, once dimension and k fit a gallery of `count` items."""
    queries = as_matrix(queries, "queries")
    if queries.shape[1] != dim:
        raise IndexFileError(
            f"queries have dimension {queries.shape[1]}, the gallery {dim}",
            "Embed the queries with the gallery's model",
        )
    if count == 0:
        raise IndexFileError("the gallery is empty", "Add items with 'invedge index add'")
    if not 1 <= k <= count:
        raise IndexFileError(
            f"k = {k} but the gallery holds {count} item{'s' * (count != 1)}",
            f"Use --k between 1 and {count}",
        )
    return queries


def missing_ids(missing: set[str]) -> IndexFileError:
    """Ids to remove that the gallery does not hold (nothing is removed then)."""
    shown = ", ".join(sorted(missing)[:3])
    return IndexFileError(
        f"{len(missing)} id{'s' * (len(missing) != 1)} not in the gallery: {shown}",
        "See the ids with 'invedge index info INDEX --ids'",
    )


def locations_held(again: list[tuple[str, str]], source: str) -> IndexFileError:
    """New items whose image files the gallery holds under other ids: (new id, held id) each."""
    return IndexFileError(
        f"{len(again)} image{'s' * (len(again) != 1)} of {source} already in the gallery under "
        f"another id ({again[0][0]} is the file of {again[0][1]}): each would be found twice",
        "Remove them first with 'invedge index remove', or embed only the new images",
    )


def check_new_items(vectors: np.ndarray, ids: list[str], dim: int, source: str) -> np.ndarray:
    """New items' vectors as a (N, dim) float32 matrix, once there is one new id for each, none repeated."""
    vectors = as_matrix(vectors)
    if vectors.shape[1] != dim:
        raise IndexFileError(f"new vectors have dimension {vectors.shape[1]}, the gallery {dim}")
    if len(ids) != len(vectors):
        raise IndexFileError(f"{len(ids)} ids for {len(vectors)} vectors")
    check_unique(list(ids), f"repeated in {source}")
    return vectors


def copy_locations(locations: list[str] | None, ids: list[str]) -> list[str]:
    """The items' image files, or "" each when unknown."""
    return list(locations) if locations is not None else [""] * len(ids)


def as_matrix(vectors: np.ndarray, what: str = "vectors") -> np.ndarray:
    """A (N, d) C-ordered float32 matrix (one row given as a vector is one query)."""
    array = np.asarray(vectors)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise IndexFileError(f"{what} must be a (N, d) matrix, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def check_unique(ids: list[str], what: str = "repeated") -> None:
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dupes = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        raise IndexFileError(
            f"{len(dupes)} id{'s' * (len(dupes) != 1)} {what}: {', '.join(dupes[:3])}",
            "Remove them first with 'invedge index remove', or use other ids",
        )
