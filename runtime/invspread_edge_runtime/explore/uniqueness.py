"""How unlike the rest each item is, and the least typical items (`invedge outliers`).

    odd = find_outliers(open_items("photos.emb"), OutlierOptions(count=50))
    print(odd.ids[0], odd.scores[0])

Uniqueness of an item = 1 − the mean cosine to its k nearest other items (neighbours.nearest:
exact up to EXACT_LIMIT items, faiss HNSW beyond). It runs from 0 (its k nearest are exact copies
of it) to 2 (they point the opposite way); on a trained embedding a typical item scores well below
0.5 and an odd one (a corrupt image, a rare kind, a wrong class folder) near or above it. It is a
density estimate from k neighbours: a tight group of k or more odd items looks typical to itself,
so raise k to find groups of odd items rather than single ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import bounds
from ..bounds import check_bounds
from ..errors import ConfigError, EmptyGalleryError
from ..index.manage import Progress, no_progress
from .ranked import rounded

if TYPE_CHECKING:
    from .items import ExploreItems
    from .neighbours import Neighbours

DEFAULT_NEIGHBOURS = 10

OPTION_BOUNDS = {"count": bounds.OUTLIER_COUNT, "neighbours": bounds.EXPLORE_NEIGHBOURS}


def uniqueness(
    items: ExploreItems,
    neighbours: int = DEFAULT_NEIGHBOURS,
    *,
    exact: bool | None = None,
    progress: Progress = no_progress,
) -> np.ndarray:
    """(N,) float32: each item's 1 − mean cosine to its `neighbours` nearest other items."""
    return _scores(_nearest(items, neighbours, exact, progress))


def _nearest(items: ExploreItems, k: int, exact: bool | None, progress: Progress) -> Neighbours:
    from .neighbours import nearest

    if len(items) == 0:
        raise EmptyGalleryError(f"{items.source} holds no items: nothing to score")
    if k >= len(items):
        raise ConfigError(
            f"--neighbours {k} needs more than {k} item{'s' if k != 1 else ''}; "
            f"{items.source} holds {len(items):,}",
            f"Use --neighbours {len(items) - 1} or fewer" if len(items) > 1 else "Add items first",
        )
    return nearest(items.vectors, k, exact=exact, progress=progress)


def _scores(found: Neighbours) -> np.ndarray:
    """1 − the mean over the neighbours found (-1: none there); 1 for an item with none found."""
    valid = found.indices >= 0
    counts = valid.sum(axis=1)
    sums = np.where(valid, found.scores, 0.0).sum(axis=1, dtype=np.float64)
    mean = np.divide(sums, counts, out=np.zeros(len(counts)), where=counts > 0)
    return (1.0 - mean).astype(np.float32)


@dataclass(frozen=True)
class OutlierOptions:
    """`count` least typical items to report, by uniqueness over `neighbours` nearest (None:
    DEFAULT_NEIGHBOURS, or all other items of a smaller gallery); `exact`: the neighbour search
    (None: exact up to neighbours.EXACT_LIMIT items)."""

    count: int
    neighbours: int | None = None
    exact: bool | None = None

    def __post_init__(self) -> None:
        check_bounds(OPTION_BOUNDS, vars(self))


@dataclass
class Outliers:
    """The least typical items, the most unique first, with each one's nearest other item."""

    indices: np.ndarray  # (count,) int64 rows
    ids: list[str]
    locations: list[str]
    scores: np.ndarray  # (count,) float32 uniqueness
    nearest_ids: list[str | None]  # each one's nearest other item (None: none found)
    nearest_scores: np.ndarray  # (count,) float32 cosine to it (nan: none found)
    neighbours: int
    exact: bool
    total: int
    source: str
    median: float  # the median uniqueness of all items, to read the scores against
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict[str, Any]:
        """What `invedge outliers --json` prints."""
        rows = zip(self.ids, self.locations, self.scores, self.nearest_ids, self.nearest_scores, strict=True)
        return {
            "source": self.source,
            "items": self.total,
            "count": len(self),
            "neighbours": self.neighbours,
            "exact": self.exact,
            "score": "uniqueness: 1 - mean cosine to the k nearest other items",
            "median_uniqueness": rounded(self.median),
            "outliers": [
                {
                    "rank": r + 1,
                    "id": i,
                    "location": loc,
                    "uniqueness": rounded(s),
                    "nearest": {"id": near, "score": rounded(near_score)} if near is not None else None,
                }
                for r, (i, loc, s, near, near_score) in enumerate(rows)
            ],
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def find_outliers(
    items: ExploreItems, options: OutlierOptions, *, progress: Progress = no_progress
) -> Outliers:
    """The `options.count` items of highest uniqueness (all items, ranked, when there are fewer)."""
    started = time.perf_counter()
    notes: list[str] = []
    k = options.neighbours
    if k is None:
        k = min(DEFAULT_NEIGHBOURS, max(len(items) - 1, 1))
        if k < DEFAULT_NEIGHBOURS:
            notes.append(
                f"{items.source} holds {len(items):,} items: uniqueness over the {k} others "
                f"(--neighbours {DEFAULT_NEIGHBOURS})"
            )
    found = _nearest(items, k, options.exact, progress)
    scores = _scores(found)
    count = min(options.count, len(items))
    if count < options.count:
        notes.append(f"{items.source} holds {len(items):,} items: all are ranked (--count {options.count:,})")
    order = np.argsort(-scores, kind="stable")[:count]  # ties: the earlier item first
    first = found.indices[order, 0]
    return Outliers(
        indices=order.astype(np.int64),
        ids=[items.ids[i] for i in order],
        locations=[items.locations[i] for i in order],
        scores=scores[order],
        nearest_ids=[items.ids[j] if j >= 0 else None for j in first],
        nearest_scores=np.where(first >= 0, found.scores[order, 0], np.nan).astype(np.float32),
        neighbours=k,
        exact=bool(found.exact),
        total=len(items),
        source=items.source,
        median=float(np.median(scores)),
        seconds=time.perf_counter() - started,
        notes=notes,
    )
