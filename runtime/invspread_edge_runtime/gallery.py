"""A gallery: the one interface of every store of embedded images, and the rules each one keeps.

`Gallery` is what the CLI, `invedge search` and `invedge serve` use of a store: `index.gallery.Index`
(an index file, searched in this process) and `milvus_store.gallery.MilvusGallery` (a Milvus
collection, searched by Milvus). Both subclass it: what each store must provide is abstract (a store
that lacks one cannot be made), and the facts derived alike (`space_id`, `check_space`, `info`)
are written once, here. `Where` is where a gallery lives, as every message names it.

The rules (an empty gallery, k out of range, another embedding space, another dimension, unknown
or repeated ids) are the functions below: each store calls them, and each raises the typed error
of errors.py, which the CLI prints as one line and the service answers with its status
(serve/errors.py).
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import (
    DimensionMismatchError,
    DuplicateIdsError,
    EmptyGalleryError,
    GalleryError,
    KOutOfRangeError,
    SpaceMismatchError,
    UnknownIdsError,
)
from .index.settings import DEFAULT_K

if TYPE_CHECKING:  # pragma: no cover
    from .index.result import SearchResult

ADD_ITEMS = "'invedge index add'"  # the command that adds items, when the gallery's place is not known


@dataclass(frozen=True)
class Where:
    """Where a gallery lives, as messages name it."""

    name: str  # in a sentence: "photos.index", "photos in milvus:g.db"
    flags: str  # what 'invedge index add' is given to reach it: "photos.index", "--store S --collection C"
    facts: dict[str, str] = field(default_factory=dict)  # for --json: a collection's store and name

    def add_command(self) -> str:
        """The command that adds items to this gallery, quoted as hints quote commands."""
        return f"'invedge index add {self.flags} EMBEDDINGS'"


IN_MEMORY = Where("in memory", "INDEX")  # a gallery not read from a file (built, not yet saved)


class Gallery(abc.ABC):
    """Embedded images of one embedding space, searched by inner product (cosine: rows are unit length)."""

    format: str  # the marker of what holds it (index file format, Milvus collection format)
    kind: str  # "flat" (exact), "ivf" or "hnsw" (approximate)
    dim: int
    space: dict[str, Any]  # {"space_id", "checkpoint_sha256", "embedding_dim", ...} of the model
    model: dict[str, Any]  # the model that embedded the gallery: {"path", "precision", ...}
    params: dict[str, Any]  # the kind's settings (IVF: nlist, nprobe; HNSW: m, ef_search, ...)
    recall_at_10: float | None  # measured against exact search when an approximate one was built

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def where(self) -> Where:
        """Where the gallery lives (an index file, a collection in a store)."""

    @abc.abstractmethod
    def search(
        self, queries: np.ndarray, k: int = DEFAULT_K, space_id: str | None = None, exact: bool = False
    ) -> SearchResult:
        """Top-k items for each (Q, d) query row, once the rules hold (space, dimension, empty, k)."""

    @abc.abstractmethod
    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Trade speed for recall in this process's searches."""

    @abc.abstractmethod
    def follow_backend(self, info: Any) -> str | None:
        """Search on the embedding backend's device when it can; None when it does, else why not."""

    @abc.abstractmethod
    def add(
        self,
        vectors: np.ndarray,
        ids: list[str],
        space_id: str | None = None,
        locations: list[str] | None = None,
        source: str = "the new items",
    ) -> int:
        """Add items of the gallery's space (`source`: where they come from, for errors); how many were new."""

    @abc.abstractmethod
    def remove(self, ids: list[str]) -> int:
        """Remove items by id; unknown ids are an error and nothing is removed then. Returns the count."""

    @abc.abstractmethod
    def contains(self, ids: list[str]) -> set[str]:
        """Those of `ids` the gallery holds."""

    @abc.abstractmethod
    def location(self, item_id: str) -> str | None:
        """The image file recorded for `item_id` (None when unknown or not held)."""

    # --- derived alike by every store ------------------------------------------------------------

    @property
    def space_id(self) -> str:
        return str(self.space.get("space_id", ""))

    def check_space(self, space_id: str | None, adding: str | None = None, model: str | None = None) -> None:
        """Refuse vectors of another embedding space (`check_space`)."""
        check_space(self.space_id, self.model, space_id, adding, model)

    def info(self) -> dict[str, Any]:
        """What `invedge index info` shows of every gallery (a store adds where it lives)."""
        return {
            "format": self.format,
            "kind": self.kind,
            "count": len(self),
            "dim": self.dim,
            "space": self.space,
            "model": self.model,
            "params": self.params,
            "recall_at_10": self.recall_at_10,
        }


# --- the rules ---------------------------------------------------------------------------------


def check_space(
    ours: str,
    model_of_gallery: dict[str, Any],
    space_id: str | None,
    adding: str | None = None,
    model: str | None = None,
) -> None:
    """Refuse vectors embedded by a model of another embedding space than `ours` (SpaceMismatchError).

    `adding`: the vectors are new gallery items (from this folder), not queries. `model`: the
    model file that embedded the queries, named in the error.
    """
    if space_id is None or not ours or space_id == ours:
        return
    theirs = model_of_gallery.get("path", "see 'invedge index info'")
    if adding is not None:
        raise SpaceMismatchError(
            f"{adding} was embedded by a model of another embedding space ({space_id}) than "
            f"the gallery ({ours}): mixed in one index, its scores would be meaningless",
            f"Embed those images with the gallery's model ({theirs}), or build a separate index from them",
            space_id=space_id,
            ours=ours,
        )
    by = f" (embedded by {model})" if model else ""
    raise SpaceMismatchError(
        f"the queries{by} come from another embedding space ({space_id}) than the gallery "
        f"({ours}): their scores would be meaningless",
        f"Embed the queries with the model that embedded the gallery ({theirs}), or rebuild the gallery",
        space_id=space_id,
        ours=ours,
    )


def check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """The queries as a (Q, dim) float32 matrix (DimensionMismatchError for another dimension)."""
    queries = as_matrix(queries, "queries")
    if queries.shape[1] != dim:
        raise DimensionMismatchError(
            f"queries have dimension {queries.shape[1]}, the gallery {dim}",
            "Embed the queries with the gallery's model",
            dim=queries.shape[1],
            ours=dim,
        )
    return queries


def check_k(k: int, count: int, where: Where | None = None) -> None:
    """A search for the `k` nearest of `count` items: EmptyGalleryError, or KOutOfRangeError unless
    1 ≤ k ≤ count. `where`: the gallery's place, named with the command that adds to it."""
    if count == 0:
        gallery, add = (
            (f"the gallery {where.name}", where.add_command()) if where else ("the gallery", ADD_ITEMS)
        )
        raise EmptyGalleryError(f"{gallery} is empty", f"Add items with {add}", add=add)
    if not 1 <= k <= count:
        raise KOutOfRangeError(
            f"k = {k} but the gallery holds {count} item{'s' * (count != 1)}",
            f"Use --k between 1 and {count}",
            count=count,
        )


def check_new_items(vectors: np.ndarray, ids: list[str], dim: int, source: str) -> np.ndarray:
    """New items' vectors as a (N, dim) float32 matrix, once there is one new id for each, none repeated."""
    vectors = as_matrix(vectors)
    if vectors.shape[1] != dim:
        raise DimensionMismatchError(
            f"new vectors have dimension {vectors.shape[1]}, the gallery {dim}",
            dim=vectors.shape[1],
            ours=dim,
        )
    if len(ids) != len(vectors):
        raise GalleryError(f"{len(ids)} ids for {len(vectors)} vectors")
    check_unique(list(ids), f"repeated in {source}")
    return vectors


def check_not_held(ids: list[str], held: Collection[str], source: str) -> None:
    """Refuse new ids the gallery holds already (DuplicateIdsError)."""
    taken = [item for item in ids if item in held]
    if taken:
        raise duplicate_ids(taken, f"of {source} already in the gallery")


def check_unique(ids: list[str], what: str = "repeated") -> None:
    """Refuse ids that repeat (DuplicateIdsError, `what` says where)."""
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dupes = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        raise duplicate_ids(dupes, what)


def duplicate_ids(dupes: list[str], what: str) -> DuplicateIdsError:
    return DuplicateIdsError(
        f"{len(dupes)} id{'s' * (len(dupes) != 1)} {what}: {', '.join(dupes[:3])}",
        "Remove them first with 'invedge index remove', or use other ids",
        ids=dupes,
    )


def unknown_ids(missing: Collection[str]) -> UnknownIdsError:
    """Ids to remove that the gallery does not hold (nothing is removed then)."""
    shown = sorted(missing)
    return UnknownIdsError(
        f"{len(shown)} id{'s' * (len(shown) != 1)} not in the gallery: {', '.join(shown[:3])}",
        "See the ids with 'invedge index info INDEX --ids'",
        ids=shown,
    )


def locations_held(again: list[tuple[str, str]], source: str) -> GalleryError:
    """New items whose image files the gallery holds under other ids: (new id, held id) each."""
    return GalleryError(
        f"{len(again)} image{'s' * (len(again) != 1)} of {source} already in the gallery under "
        f"another id ({again[0][0]} is the file of {again[0][1]}): each would be found twice",
        "Remove them first with 'invedge index remove', or embed only the new images",
    )


def as_matrix(vectors: np.ndarray, what: str = "vectors") -> np.ndarray:
    """A (N, d) C-ordered float32 matrix (one row given as a vector is one query)."""
    array = np.asarray(vectors)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise GalleryError(f"{what} must be a (N, d) matrix, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def copy_locations(locations: list[str] | None, ids: list[str]) -> list[str]:
    """The items' image files, or "" each when unknown."""
    return list(locations) if locations is not None else [""] * len(ids)
