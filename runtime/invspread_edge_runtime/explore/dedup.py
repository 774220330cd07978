"""Near-duplicates: every pair of items whose cosine score reaches a threshold, joined into groups
(a copy of a copy is in its original's group), one item of each group kept.

    found = find_duplicates(open_items("photos.emb"), 0.95, keep="largest")
    found.to_dict()["groups"]      # [{"keep": id, "members": [{"id", "location", "score", "kept"}]}]

The threshold is the user's choice, with help: `nn_histogram` is the distribution of each item's
nearest-neighbour score (planted or accidental copies form a mode near 1, apart from the rest), and
`auto_threshold` puts the threshold in the valley between the two when there is one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import bounds
from ..bounds import check_bounds
from ..errors import ConfigError
from ..index.manage import Progress, no_progress
from .items import ExploreItems
from .neighbours import MISSING, decide_exact, nearest, pairs_above

KEEPS = ("first", "largest", "sharpest")
AUTO = "auto"
HIST_BINS = 400  # over the scores' range: fine enough to see a mode of copies at 0.99 apart from 0.97
MIN_BINS = 40
SMOOTH_BINS = 5
COPIES_FLOOR = 0.9  # a mode of nearest-neighbour scores below this cosine is a kind of image, not copies
SHARPNESS_PX = 256  # images are compared for sharpness at this size, so a bigger copy does not win by size


@dataclass
class NNHistogram:
    """Each item's nearest-neighbour cosine score and their histogram (`counts` over `edges`)."""

    scores: np.ndarray
    counts: np.ndarray
    edges: np.ndarray

    def quantiles(self) -> dict[str, float]:
        """The share of items whose nearest neighbour scores at least a few round values."""
        valid = self.scores[self.scores > MISSING]
        marks = (0.9, 0.95, 0.98, 0.99, 0.999)
        return {f"{mark:g}": float(np.mean(valid >= mark)) if len(valid) else 0.0 for mark in marks}

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": [round(float(e), 6) for e in self.edges],
            "counts": [int(c) for c in self.counts],
            "share_at_least": self.quantiles(),
        }


@dataclass
class DuplicateGroup:
    """Rows of one group: `kept` (the one to keep) and every member (kept first), with each member's
    cosine score to the kept one."""

    kept: int
    members: list[int]
    scores: list[float]


@dataclass
class DuplicateGroups:
    """What `find_duplicates` found; `to_dict()` is `invedge dedup --json`."""

    items: ExploreItems
    threshold: float
    chosen: str  # "given" or "auto"
    keep: str
    exact: bool
    groups: list[DuplicateGroup]
    histogram: NNHistogram | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        """Members that are not kept: what --move-to moves."""
        return sum(len(g.members) - 1 for g in self.groups)

    def member_dicts(self, group: DuplicateGroup) -> list[dict[str, Any]]:
        return [
            {
                "id": self.items.ids[row],
                "location": self.items.locations[row],
                "score": round(score, 6),
                "kept": row == group.kept,
            }
            for row, score in zip(group.members, group.scores, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.items.source,
            "items": len(self.items),
            "threshold": round(self.threshold, 6),
            "threshold_chosen": self.chosen,
            "keep": self.keep,
            "exact": self.exact,
            "counts": {
                "groups": len(self.groups),
                "in_groups": sum(len(g.members) for g in self.groups),
                "duplicates": self.duplicates,
            },
            "groups": [
                {"keep": self.items.ids[g.kept], "members": self.member_dicts(g)} for g in self.groups
            ],
            "nn_histogram": None if self.histogram is None else self.histogram.to_dict(),
            "notes": self.notes,
        }


def parse_threshold(text: str | float) -> float | str:
    """--threshold: a cosine score in DUP_THRESHOLD's range, or "auto"."""
    if isinstance(text, str) and text.strip().lower() == AUTO:
        return AUTO
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(
            f"--threshold {text!r} is neither a number nor auto", "Use a cosine score such as 0.95, or auto"
        ) from None
    check_bounds({"threshold": bounds.DUP_THRESHOLD}, {"threshold": value})
    return value


def check_keep(keep: str) -> str:
    if keep not in KEEPS:
        raise ConfigError(f"Invalid --keep {keep!r}", f"Use one of: {', '.join(KEEPS)}")
    return keep


def find_duplicates(
    items: ExploreItems,
    threshold: float | str,
    keep: str = "first",
    *,
    exact: bool | None = None,
    histogram: bool = False,
    progress: Progress = no_progress,
    max_pairs: int | None = None,
) -> DuplicateGroups:
    """Groups of near-duplicates among `items` at `threshold` (a cosine score, or "auto": the valley
    of the nearest-neighbour scores; ConfigError where there is none). `histogram`: also compute the
    nearest-neighbour histogram (always done for auto)."""
    threshold = parse_threshold(threshold)
    check_keep(keep)
    exact = decide_exact(len(items), exact)
    hist = None
    if histogram or threshold == AUTO:
        hist = nn_histogram(items.vectors, exact=exact, progress=progress)
    chosen = "given"
    if threshold == AUTO:
        threshold, chosen = auto_threshold(hist), "auto"
    first, second, _ = pairs_above(
        items.vectors, float(threshold), exact=exact, progress=progress, max_pairs=max_pairs
    )
    groups = [_group(items, members, keep) for members in union_groups(len(items), first, second)]
    groups.sort(key=lambda g: (-len(g.members), g.kept))
    return DuplicateGroups(items, float(threshold), chosen, keep, exact, groups, hist)


def union_groups(n: int, first: np.ndarray, second: np.ndarray) -> list[list[int]]:
    """The connected groups (of two or more rows) of the graph whose edges are the pairs, each in
    row order, groups in order of their first row. Vectorised union-find: hook each pair's larger
    root under the smaller, then jump pointers to the roots, until no pair joins two roots."""
    parent = np.arange(n, dtype=np.int64)
    while True:
        a, b = parent[first], parent[second]
        apart = a != b
        if not apart.any():
            break
        np.minimum.at(parent, np.maximum(a[apart], b[apart]), np.minimum(a[apart], b[apart]))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    rows = np.flatnonzero(np.bincount(parent, minlength=n)[parent] >= 2)
    order = np.argsort(parent[rows], kind="stable")
    rows, roots = rows[order], parent[rows[order]]
    cuts = np.flatnonzero(np.diff(roots)) + 1
    return [part.tolist() for part in np.split(rows, cuts)] if len(rows) else []


def _group(items: ExploreItems, members: list[int], keep: str) -> DuplicateGroup:
    kept = choose_kept(items.locations, members, keep)
    ordered = [kept] + [row for row in members if row != kept]
    vectors = np.asarray(items.vectors[ordered], dtype=np.float32)
    scores = np.clip(vectors @ vectors[0], -1.0, 1.0)
    return DuplicateGroup(kept, ordered, [float(s) for s in scores])


def choose_kept(locations: list[str], members: list[int], keep: str) -> int:
    """The member to keep: the first in the gallery's order, the largest image (pixels, then bytes)
    or the sharpest (variance of the Laplacian); ties and unreadable files go to the first."""
    if keep == "first":
        return members[0]
    measure = _size if keep == "largest" else sharpness
    scored = [(measure(locations[row]), -row) for row in members]
    return -max(scored)[1]


def _size(location: str) -> tuple[int, int]:
    """(pixels, bytes) of an image file; (-1, -1) when unknown or unreadable."""
    from PIL import Image

    from ..preprocess import _DECODE_ERRORS

    if not location:
        return (-1, -1)
    try:
        with Image.open(location) as img:
            pixels = img.width * img.height
        return (pixels, os.path.getsize(location))
    except _DECODE_ERRORS:  # a decompression bomb too: an unreadable file, never a traceback
        return (-1, -1)


def sharpness(location: str) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image at SHARPNESS_PX (larger: more fine
    detail, less blur); -1 when the file is unknown or unreadable."""
    from ..errors import DataError
    from ..preprocess import load_image

    if not location:
        return -1.0
    try:
        img = load_image(location).convert("L")
    except (DataError, OSError):
        return -1.0
    scale = SHARPNESS_PX / max(img.size)
    img = img.resize((max(3, round(img.width * scale)), max(3, round(img.height * scale))))
    grey = np.asarray(img, dtype=np.float32)
    laplacian = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1]
    return float(laplacian.var())


# --- the threshold ---------------------------------------------------------------------------------


def nn_histogram(
    vectors: np.ndarray, *, exact: bool | None = None, progress: Progress = no_progress
) -> NNHistogram:
    """Each item's nearest-neighbour score and their histogram (up to HIST_BINS bins, one per 8
    items at least MIN_BINS, up to just above 1)."""
    if len(vectors) < 2:
        raise ConfigError(
            "near-duplicates need at least 2 items", "Embed more images: invedge embed MODEL IMAGES --out DIR"
        )
    scores = nearest(vectors, 1, exact=exact, progress=progress).scores[:, 0]
    valid = scores[scores > MISSING]
    low = float(valid.min()) if len(valid) else 0.0
    high = max(1.0, float(valid.max()) if len(valid) else 1.0) + 1e-6
    bins = int(np.clip(len(valid) // 8, MIN_BINS, HIST_BINS))  # few items: wider bins, less noise
    counts, edges = np.histogram(valid, bins=bins, range=(min(low, high - 1e-3), high))
    return NNHistogram(scores, counts, edges)


def auto_threshold(hist: NNHistogram) -> float:
    """The valley between the mode of copies (near 1) and the bulk of nearest-neighbour scores.

    On the histogram smoothed by a moving mean of SMOOTH_BINS bins, each bin's dip is how far the
    lower of the highest bin below it and the highest bin above it rises over it; the valley is the
    deepest dip. Either mode may be the higher one: where most items have a copy, the copies' mode
    is. Where the valley is a flat run (an empty gap), the threshold is the run's middle.
    ConfigError (NoValleyError) when the lower mode does not rise to twice the valley's height and
    clear of its counting noise (by more than 2·√(peak + valley) + 1 items in a window of
    SMOOTH_BINS bins), or when the upper mode lies below COPIES_FLOOR: two kinds of images, not
    copies and the rest."""
    counts = hist.counts.astype(np.float64)
    smooth = np.convolve(counts, np.ones(SMOOTH_BINS) / SMOOTH_BINS, mode="same")
    below = np.maximum.accumulate(smooth)  # the highest bin at or below each bin
    above = np.maximum.accumulate(smooth[::-1])[::-1]  # the highest bin at or above it
    dip = np.minimum(below, above) - smooth
    valley = int(np.argmax(dip))
    floor = float(smooth[valley])
    top, low = SMOOTH_BINS * min(below[valley], above[valley]), SMOOTH_BINS * floor  # items in a window
    if dip[valley] <= 0 or top < 2 * low or top - low < 2 * np.sqrt(top + low) + 1:
        raise NoValleyError(hist)  # no second mode, or one that counting noise could make
    copies = valley + int(np.argmax(smooth[valley:]))
    if hist.edges[copies + 1] < COPIES_FLOOR:
        raise NoValleyError(hist)
    flat = [v for v in range(len(smooth)) if smooth[v] == floor]
    run = next(r for r in _runs(flat) if r[0] <= valley <= r[-1])
    edges = hist.edges
    return float((edges[run[0]] + edges[run[-1] + 1]) / 2)


def _runs(rows: list[int]) -> list[list[int]]:
    """`rows` (sorted) cut into runs of consecutive numbers."""
    runs: list[list[int]] = []
    for row in rows:
        if runs and row == runs[-1][-1] + 1:
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


class NoValleyError(ConfigError):
    """--threshold auto found no valley between the copies' mode and the rest. `histogram`: the one
    looked at (drawn for the message without a second neighbour search); `where`: its picture."""

    def __init__(self, histogram: NNHistogram | None = None, where: Path | None = None) -> None:
        self.histogram = histogram
        shown = f" at {where}" if where else " (write it with --histogram PNG)"
        super().__init__(
            "--threshold auto found no valley in the nearest-neighbour scores (no separate mode of copies)",
            f"Pick --threshold from the histogram{shown}",
        )


def draw_histogram(hist: NNHistogram, out: str | os.PathLike[str], threshold: float | None = None) -> Path:
    """A PNG of the nearest-neighbour histogram (log counts), the threshold drawn on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_path

    figure, axes = plt.subplots(figsize=(7, 3.2), dpi=110)
    try:
        widths = np.diff(hist.edges)
        axes.bar(hist.edges[:-1], np.maximum(hist.counts, 0), width=widths, align="edge", color="#4a78b0")
        axes.set_yscale("symlog", linthresh=1)
        axes.set_xlabel("cosine score of each image's nearest neighbour")
        axes.set_ylabel("images")
        if threshold is not None:
            axes.axvline(threshold, color="#c0392b", linestyle="--", label=f"threshold {threshold:.4f}")
            axes.legend(loc="upper left")
        figure.tight_layout()
        out = Path(out)
        with atomic_path(out) as tmp:
            figure.savefig(tmp, format="png")
    finally:
        plt.close(figure)
    return out
