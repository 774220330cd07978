"""Each item's nearest neighbours among the items themselves, and every pair above a cosine score.

Exact up to EXACT_LIMIT items, approximate beyond (faiss HNSW), unless told otherwise. Exact
neighbours: faiss flat inner product (blocked numpy products without faiss). Exact pairs: blocked
numpy products over the upper triangle, each pair once (50 000 × 128 on this machine: 11 s, where a
faiss range search of every row, which computes each pair twice, took 20 s). The rows are unit
vectors, so the inner product is the cosine. Rows are handled a block at a time: memory is the
vectors plus one block's products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, MissingDependency
from ..index.faiss_engines import faiss_module
from ..index.manage import Progress, no_progress
from .items import EXPLORE_EXTRA

EXACT_LIMIT = 300_000  # items above which `exact=None` means approximate (faiss HNSW)
BLOCK = 4096  # query rows per step
PAIR_BLOCK, PAIR_TILE = 2048, 16384  # pairs: a product of this many rows by this many (128 MB)
MAX_PAIRS = 50_000_000  # pairs held in memory (16 bytes each) before the threshold is called too low
HNSW_M = 32
HNSW_EF_SEARCH = 128
HNSW_PAIR_K = 32  # neighbours looked at per item when pairs are found approximately
MISSING = -1.0  # the score where fewer than k neighbours were found (index -1)


@dataclass
class Neighbours:
    """`scores` (N, k) float32, most similar first, the item itself excluded; `indices` (N, k)
    int64 rows, -1 (score MISSING) where fewer were found; `exact`: whether the search was exact."""

    scores: np.ndarray
    indices: np.ndarray
    exact: bool


def nearest(
    vectors: np.ndarray, k: int, *, exact: bool | None = None, progress: Progress = no_progress
) -> Neighbours:
    """The `k` nearest other items of each item (by cosine)."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, not {k}")
    n = len(vectors)
    exact = decide_exact(n, exact)
    wanted = min(k + 1, n)  # one more: the item itself is among its own nearest
    search = _flat_search(vectors) if exact else _hnsw_search(vectors)
    scores = np.full((n, k), MISSING, np.float32)
    indices = np.full((n, k), -1, np.int64)
    with progress(n, "nearest neighbours") as on_progress:
        for start in range(0, n, BLOCK):
            block = _rows(vectors, start)
            found_scores, found = search(block, wanted)
            _drop_self(found_scores, found, start, scores, indices)
            if on_progress is not None:
                on_progress(min(start + BLOCK, n), n)
    return Neighbours(scores, indices, exact)


def pairs_above(
    vectors: np.ndarray,
    threshold: float,
    *,
    exact: bool | None = None,
    progress: Progress = no_progress,
    max_pairs: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i, j, score) with i < j and cosine score ≥ `threshold`, sorted by i then j.

    Exact: blocked matrix products over the upper triangle; approximate: each item's HNSW_PAIR_K
    HNSW neighbours above the threshold (a pair may be missed). More than `max_pairs` (default
    MAX_PAIRS) is a ConfigError (the threshold is too low), raised as soon as they are found."""
    n = len(vectors)
    exact = decide_exact(n, exact)
    if exact:
        found = _exact_pairs(vectors, float(threshold), progress, max_pairs)
    else:
        found = _approximate_pairs(vectors, float(threshold), progress, max_pairs)
    first, second, scores = found
    order = np.lexsort((second, first))
    return first[order], second[order], scores[order]


def decide_exact(n: int, exact: bool | None) -> bool:
    """Whether a search of `n` items is exact: as asked, else exact up to EXACT_LIMIT (the one
    place that decides); approximate needs faiss (MissingDependency)."""
    if exact is None:
        exact = n <= EXACT_LIMIT
    if not exact and faiss_module() is None:
        raise MissingDependency("faiss-cpu", "an approximate neighbour search", EXPLORE_EXTRA)
    return exact


def _rows(vectors: np.ndarray, start: int, size: int = BLOCK) -> np.ndarray:
    return np.ascontiguousarray(vectors[start : start + size], dtype=np.float32)


def _all_rows(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _flat_search(vectors: np.ndarray) -> Any:
    """search(block, k) → (scores, indices) over every row, exactly: faiss flat, or numpy."""
    faiss = faiss_module()
    if faiss is not None:
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(_all_rows(vectors))
        return index.search
    every = _all_rows(vectors)

    def search(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = block @ every.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.argsort(-sims, axis=1)
        picked = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        return np.take_along_axis(picked, order, axis=1), np.take_along_axis(top, order, axis=1)

    return search


def _hnsw_search(vectors: np.ndarray) -> Any:
    """search(block, k) → (scores, indices), approximately: a faiss HNSW graph over every row."""
    faiss = faiss_module()
    index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = HNSW_EF_SEARCH
    for start in range(0, len(vectors), 65536):
        index.add(_rows(vectors, start, 65536))
    return index.search


def _drop_self(
    found_scores: np.ndarray, found: np.ndarray, start: int, scores: np.ndarray, indices: np.ndarray
) -> None:
    """Write each block row's neighbours, without the row itself (wherever it ranks: an exact copy
    may come first), into `scores`/`indices` from row `start`."""
    k = scores.shape[1]
    rows = np.arange(start, start + len(found))[:, None]
    keep = (found != rows) & (found >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # the kept ones first, in rank order
    kept = np.take_along_axis(keep, order, axis=1)
    width = order.shape[1]
    end = start + len(found)
    scores[start:end, :width] = np.where(kept, np.take_along_axis(found_scores, order, axis=1), MISSING)
    indices[start:end, :width] = np.where(kept, np.take_along_axis(found, order, axis=1), -1)


def _exact_pairs(
    vectors: np.ndarray, threshold: float, progress: Progress, max_pairs: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair above the threshold from blocked matrix products over the upper triangle only
    (each pair computed once: half the work of a range search of every row against all)."""
    n = len(vectors)
    every = _all_rows(vectors)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    held = 0
    with progress(n, "pairs above the threshold") as on_progress:
        for start in range(0, n, PAIR_BLOCK):
            block = every[start : start + PAIR_BLOCK]
            for column in range(start, n, PAIR_TILE):
                found = _tile_pairs(block, every[column : column + PAIR_TILE], start, column, threshold)
                held += len(found[0])
                _check_held(held, threshold, max_pairs)
                parts.append(found)
            if on_progress is not None:
                on_progress(min(start + PAIR_BLOCK, n), n)
    return _joined(parts)


def _tile_pairs(
    block: np.ndarray, tile: np.ndarray, start: int, column: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs (i < j) of rows `start`… against rows `column`… scoring at least the threshold."""
    sims = block @ tile.T
    rows, cols = np.nonzero(sims >= threshold)
    first, second = rows.astype(np.int64) + start, cols.astype(np.int64) + column
    keep = second > first
    return first[keep], second[keep], sims[rows[keep], cols[keep]].astype(np.float32)


def _approximate_pairs(
    vectors: np.ndarray, threshold: float, progress: Progress, max_pairs: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    found = nearest(vectors, min(HNSW_PAIR_K, max(len(vectors) - 1, 1)), exact=False, progress=progress)
    rows = np.repeat(np.arange(len(vectors), dtype=np.int64), found.indices.shape[1])
    cols, scores = found.indices.reshape(-1), found.scores.reshape(-1)
    keep = (cols >= 0) & (scores >= threshold)
    first, second = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
    _check_held(len(first), threshold, max_pairs)
    _, where = np.unique(first * len(vectors) + second, return_index=True)
    return first[where], second[where], scores[keep][where].astype(np.float32)


def _check_held(held: int, threshold: float, max_pairs: int | None) -> None:
    limit = MAX_PAIRS if max_pairs is None else max_pairs
    if held > limit:
        raise ConfigError(
            f"more than {limit:,} pairs score ≥ {threshold:g}: the threshold is too low for near-duplicates",
            "Raise --threshold (look at the histogram of nearest-neighbour scores: --histogram PNG)",
        )


def _joined(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )
