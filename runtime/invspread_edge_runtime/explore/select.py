"""A diverse subset to label first: greedy k-center (farthest-point) selection over the embeddings.

    picked = select_items(open_items("photos.emb"), SelectOptions(count=500))
    print(picked.ids[:5], picked.coverage_max)

Greedy k-center (Gonzalez): start from one item, then pick again and again the item farthest, in
cosine distance (1 − cos), from every item picked so far. The coverage radius it reaches (the
largest distance from any item to its nearest pick) is at most twice the best any set of that size
can reach, and every pick is as unlike the earlier ones as the data allows: few near-copies, the
rare kinds early. The start is the most typical item (the highest mean cosine to all items, which
is the item nearest the mean direction: one pass), or a seeded random one.

One pick is one pass over the N × d vectors, in blocks of BLOCK rows (a read-only memmap is read in
place; no N × d temporary): memory is the vectors plus one float32 per item, time is count × N × d.
With `exclude_duplicates`, the near-duplicate groups at that cosine (dedup.find_duplicates) leave
only their kept item eligible; the others still count as items to cover.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import bounds
from ..bounds import check_bounds
from ..errors import ConfigError, EmptyGalleryError
from ..index.manage import Log, Progress, no_progress
from .ranked import rounded

if TYPE_CHECKING:
    from .items import ExploreItems

BLOCK = 65_536  # rows per step of a pass: a (BLOCK,) score vector at a time
CENTRES_AT_ONCE = 128  # rows picked before, scored together: a (BLOCK, this) block of scores
CURVE_COUNTS = (1, 2, 5)  # the coverage curve in --json: at 1, 2, 5, 10, 20, 50, … picks and the last

OPTION_BOUNDS = {
    "count": bounds.SELECT_COUNT,
    "seed": bounds.EXPLORE_SEED,
    "exclude_duplicates": bounds.EXCLUDE_DUPLICATES,
}


@dataclass(frozen=True)
class SelectOptions:
    """`count` items to pick; `seed`: start from a seeded random item instead of the most typical;
    `exclude_duplicates`: a cosine from which items are near-duplicates (one per group is eligible);
    `exact`: for that duplicate search (None: exact up to neighbours.EXACT_LIMIT items); `already`:
    ids selected before, which count as picks (not repeated) so the new ones go where they are not."""

    count: int
    seed: int | None = None
    exclude_duplicates: float | None = None
    exact: bool | None = None
    already: tuple[str, ...] = ()  # ids picked before (labelled already): the new picks cover the rest

    def __post_init__(self) -> None:
        check_bounds(OPTION_BOUNDS, vars(self))


@dataclass
class Selection:
    """The items picked, in pick order, and the coverage they reach.

    `distances[t]`: pick t's cosine distance to its nearest earlier pick (nan for the first): how
    new each pick was. `curve_max[t]`, `curve_mean[t]`: the largest and mean distance from any item
    to its nearest pick once t + 1 items are picked.
    """

    indices: np.ndarray  # (count,) int64 rows of the items
    ids: list[str]
    locations: list[str]
    distances: np.ndarray  # (count,) float32
    curve_max: np.ndarray  # (count,) float32
    curve_mean: np.ndarray  # (count,) float32
    total: int  # items in the target
    source: str
    start: str  # "typical", "seed N" or "after N selected before" (--already)
    excluded: int = 0  # near-duplicates left out of the choice
    exclude_duplicates: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def coverage_max(self) -> float:
        """The largest cosine distance from any item to its nearest pick (the coverage radius)."""
        return float(self.curve_max[-1])

    @property
    def coverage_mean(self) -> float:
        """The mean cosine distance from an item to its nearest pick."""
        return float(self.curve_mean[-1])

    def curve(self) -> list[dict[str, Any]]:
        """The coverage after 1, 2, 5, 10, 20, 50, … picks and after the last."""
        counts = [c for c in _nice_counts(len(self)) if c <= len(self)]
        return [
            {
                "count": c,
                "max_distance": rounded(self.curve_max[c - 1]),
                "mean_distance": rounded(self.curve_mean[c - 1]),
            }
            for c in counts
        ]

    def to_dict(self) -> dict[str, Any]:
        """What `invedge select --json` prints."""
        return {
            "source": self.source,
            "items": self.total,
            "count": len(self),
            "start": self.start,
            "exclude_duplicates": self.exclude_duplicates,
            "excluded": self.excluded,
            "coverage": {
                "max_distance": rounded(self.coverage_max),
                "mean_distance": rounded(self.coverage_mean),
            },
            "curve": self.curve(),
            "selected": [
                {"rank": r + 1, "id": i, "location": loc, "distance": rounded(d)}
                for r, (i, loc, d) in enumerate(zip(self.ids, self.locations, self.distances, strict=True))
            ],
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def select_items(
    items: ExploreItems, options: SelectOptions, *, log: Log | None = None, progress: Progress = no_progress
) -> Selection:
    """Pick `options.count` items of `items` by greedy k-center (all eligible ones, in pick order,
    when there are fewer); `log(line)` hears what the picks are about to do."""
    if len(items) == 0:
        raise EmptyGalleryError(f"{items.source} holds no items: nothing to select")
    started = time.perf_counter()
    eligible = _eligible(items, options, progress)
    already = _rows_of(items, options.already)
    excluded = 0 if eligible is None else len(items) - int(eligible.sum())
    if len(already):
        eligible = np.ones(len(items), dtype=bool) if eligible is None else eligible
        eligible[already] = False
    available = len(items) if eligible is None else int(eligible.sum())
    if not available:
        raise ConfigError(
            f"nothing left to select in {items.source}: every item is already selected or a near-duplicate",
            "Leave out --already or --exclude-duplicates",
        )
    count, notes = options.count, []
    if count > available:
        count = available
        what = "items" if eligible is None else "items not selected already nor near-duplicates"
        notes.append(
            f"{items.source} holds {available:,} {what}: all are selected (--count {options.count:,})"
        )
    if log is not None:
        log(f"selecting {count:,} of {len(items):,} items: one pass over them per pick")
    first = None if len(already) else _start(items.vectors, eligible, options.seed)
    picked = farthest_first(items.vectors, count, first, eligible, already=already, progress=progress)
    indices, distances, curve_max, curve_mean = picked
    return Selection(
        indices=indices,
        ids=[items.ids[i] for i in indices],
        locations=[items.locations[i] for i in indices],
        distances=distances,
        curve_max=curve_max,
        curve_mean=curve_mean,
        total=len(items),
        source=items.source,
        start=_started(len(already), options.seed),
        excluded=excluded,
        exclude_duplicates=options.exclude_duplicates,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def farthest_first(
    vectors: np.ndarray,
    count: int,
    first: int | None,
    eligible: np.ndarray | None = None,
    *,
    already: np.ndarray | None = None,
    progress: Progress = no_progress,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Greedy k-center on unit rows: `count` picks from row `first` on (or, given `already` rows
    picked before, from the row farthest from them), each the eligible row of lowest best-cosine
    to the picks before it. A row is never picked twice (nor one of `already`), even where copies
    tie with a pick at cosine 1.

    Returns (indices, distances, curve_max, curve_mean), each (count,): the rows picked, each pick's
    cosine distance to its nearest earlier pick (nan for the very first), and the largest and mean
    distance from any row (eligible or not) to its nearest pick after each pick.
    """
    n = len(vectors)
    best = np.full(n, -np.inf, dtype=np.float32)  # each row's cosine to its nearest pick so far
    barred = (
        np.zeros(n, np.float32) if eligible is None else np.where(eligible, 0.0, np.inf).astype(np.float32)
    )
    if already is not None and len(already):
        barred[already] = np.inf
        for at in range(0, len(already), CENTRES_AT_ONCE):
            centres = np.asarray(vectors[already[at : at + CENTRES_AT_ONCE]], dtype=np.float32)
            _closer(vectors, centres.T, best)
        first = int(np.argmin(best + barred))
    assert first is not None, "farthest_first needs a first row or rows picked before"
    indices = np.empty(count, dtype=np.int64)
    distances = np.full(count, np.nan, dtype=np.float32)
    curve_max = np.empty(count, dtype=np.float32)
    curve_mean = np.empty(count, dtype=np.float32)
    pick = first
    with progress(count, "selecting") as on_progress:
        for t in range(count):
            if best[pick] > -np.inf:  # not the very first pick
                distances[t] = 1.0 - best[pick]
            indices[t] = pick
            barred[pick] = np.inf  # a copy of a pick scores 1 like the pick itself: never picked again
            _closer(vectors, np.array(vectors[pick], dtype=np.float32), best)
            curve_max[t] = 1.0 - best.min()
            curve_mean[t] = 1.0 - best.mean(dtype=np.float64)
            pick = int(np.argmin(best + barred))
            if on_progress is not None:
                on_progress(t + 1, count)
    np.clip(distances, 0.0, 2.0, out=distances)
    np.clip(curve_max, 0.0, 2.0, out=curve_max)
    np.clip(curve_mean, 0.0, 2.0, out=curve_mean)
    return indices, distances, curve_max, curve_mean


def _closer(vectors: np.ndarray, centres: np.ndarray, best: np.ndarray) -> None:
    """best = max(best, vectors @ centres), block by block (no N × d temporary); `centres`: (d,)
    one centre, or (d, m) several (the row-wise max over them)."""
    for start in range(0, len(vectors), BLOCK):
        stop = min(start + BLOCK, len(vectors))
        scores = np.asarray(vectors[start:stop], dtype=np.float32) @ centres
        np.maximum(best[start:stop], scores if scores.ndim == 1 else scores.max(axis=1), out=best[start:stop])


def typical(vectors: np.ndarray, eligible: np.ndarray | None = None) -> int:
    """The row of highest mean cosine to all rows: the one nearest the mean direction (two passes)."""
    mean = np.zeros(vectors.shape[1], dtype=np.float64)
    for start in range(0, len(vectors), BLOCK):
        mean += np.asarray(vectors[start : start + BLOCK], dtype=np.float32).sum(axis=0, dtype=np.float64)
    scores = np.full(len(vectors), -np.inf, dtype=np.float32)
    _closer(vectors, mean.astype(np.float32), scores)
    if eligible is not None:
        scores[~eligible] = -np.inf
    return int(np.argmax(scores))


def _started(already: int, seed: int | None) -> str:
    if already:
        return f"after {already:,} selected before"
    return "typical" if seed is None else f"seed {seed}"


def _rows_of(items: ExploreItems, ids: tuple[str, ...]) -> np.ndarray:
    """The rows of `ids` (--already); ConfigError naming those the target does not hold."""
    if not ids:
        return np.zeros(0, dtype=np.int64)
    row = {item_id: r for r, item_id in enumerate(items.ids)}
    unknown = [i for i in ids if i not in row]
    if unknown:
        raise ConfigError(
            f"{len(unknown):,} ids of --already are not in {items.source} (the first: {unknown[0]!r})",
            "Give the ids of earlier selections of the same items (ids as --out .txt writes them)",
        )
    return np.unique(np.array([row[i] for i in ids], dtype=np.int64))


def _start(vectors: np.ndarray, eligible: np.ndarray | None, seed: int | None) -> int:
    if seed is None:
        return typical(vectors, eligible)
    rows = np.arange(len(vectors)) if eligible is None else np.flatnonzero(eligible)
    return int(rows[np.random.default_rng(seed).integers(len(rows))])


def _eligible(items: ExploreItems, options: SelectOptions, progress: Progress) -> np.ndarray | None:
    """Rows that may be picked: all (None), or with near-duplicates, each group's kept item only."""
    if options.exclude_duplicates is None:
        return None
    from .dedup import find_duplicates

    groups = find_duplicates(items, options.exclude_duplicates, exact=options.exact, progress=progress)
    eligible = np.ones(len(items), dtype=bool)
    for group in groups.groups:
        eligible[[row for row in group.members if row != group.kept]] = False
    return eligible


def write_curve(selection: Selection, out: Any) -> Any:
    """The coverage curve (largest and mean distance to the nearest pick vs picks) as a PNG."""
    from pathlib import Path

    from ..errors import MissingDependency
    from ..files import atomic_path

    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependency(
            "matplotlib", "The coverage curve (--curve)", "pip install matplotlib"
        ) from exc
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4), dpi=120)
    ax = fig.add_subplot()
    picks = np.arange(1, len(selection) + 1)
    ax.plot(picks, selection.curve_max, label="largest distance (coverage radius)")
    ax.plot(picks, selection.curve_mean, label="mean distance")
    ax.set_xscale("log")
    ax.set_xlabel("items selected")
    ax.set_ylabel("cosine distance to the nearest selected item")
    ax.set_title(f"invedge select — {selection.source} ({selection.total:,} items)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def _nice_counts(last: int) -> list[int]:
    counts, scale = [], 1
    while scale <= last:
        counts += [c * scale for c in CURVE_COUNTS if c * scale <= last]
        scale *= 10
    return sorted(set(counts) | {last})
