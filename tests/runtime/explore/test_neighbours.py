"""Nearest neighbours and pairs above a score: exact (faiss or numpy) against a brute-force answer,
approximate (HNSW) close to it, the item itself never its own neighbour."""

from __future__ import annotations

import numpy as np
import pytest
from dedup_testing import unit

from invspread_edge_runtime.errors import ConfigError, MissingDependency
from invspread_edge_runtime.explore import neighbours as nb
from invspread_edge_runtime.explore.neighbours import nearest, pairs_above


def vectors_with_copies(n: int = 600, d: int = 16, seed: int = 0) -> np.ndarray:
    """Random unit rows; row 5 copied exactly into rows 10 and 11, row 7 nearly into the last row."""
    rng = np.random.default_rng(seed)
    x = unit(rng.standard_normal((n, d)))
    x[10] = x[11] = x[5]
    x[-1] = unit(x[7:8] + 0.01 * rng.standard_normal((1, d)))[0]
    return x


TIE = 1e-5  # pairs this close to the threshold may fall either side with another CPU's rounding


def brute_pairs(x: np.ndarray, threshold: float) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(the pairs i < j at or above `threshold`, the pairs within TIE of it), in float64."""
    sims = x.astype(np.float64) @ x.astype(np.float64).T

    def pairs(mask: np.ndarray) -> set[tuple[int, int]]:
        i, j = np.nonzero(np.triu(mask, k=1))
        return set(zip(i.tolist(), j.tolist(), strict=True))

    return pairs(sims >= threshold), pairs(np.abs(sims - threshold) < TIE)


@pytest.fixture(params=["faiss", "numpy"])
def engine(request, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setattr(nb, "faiss_module", lambda: None)
    else:
        pytest.importorskip("faiss")
    return request.param


@pytest.mark.parametrize("threshold", [0.5, 0.9, 0.999])
def test_exact_pairs_are_every_pair_at_or_above_the_threshold(engine, threshold, monkeypatch):
    monkeypatch.setattr(nb, "PAIR_BLOCK", 128)  # several blocks and tiles
    monkeypatch.setattr(nb, "PAIR_TILE", 200)
    x = vectors_with_copies()
    first, second, scores = pairs_above(x, threshold)
    expected, near_ties = brute_pairs(x, threshold)
    assert len(expected - near_ties) >= 3  # the copies at least: something to find
    assert set(zip(first.tolist(), second.tolist(), strict=True)) - near_ties == expected - near_ties
    assert np.all(first < second) and np.all(scores >= threshold)
    np.testing.assert_allclose(scores, np.sum(x[first] * x[second], axis=1), atol=1e-5)
    assert list(zip(first, second, strict=True)) == sorted(zip(first, second, strict=True))


def test_exact_nearest_matches_brute_force_and_excludes_the_item(engine, monkeypatch):
    monkeypatch.setattr(nb, "BLOCK", 100)
    x = vectors_with_copies()
    found = nearest(x, 4)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    assert found.exact and found.scores.shape == (600, 4) and found.indices.dtype == np.int64
    assert not np.any(found.indices == np.arange(600)[:, None])
    np.testing.assert_allclose(found.scores, -np.sort(-sims, axis=1)[:, :4], atol=1e-5)
    assert set(found.indices[5, :2]) == {10, 11} and set(found.indices[10, :2]) == {5, 11}  # exact copies
    assert np.all(np.diff(found.scores, axis=1) <= 1e-6)  # most similar first


def test_fewer_items_than_k_leave_minus_one(engine):
    found = nearest(unit(np.random.default_rng(0).standard_normal((3, 4))), 5)
    assert np.all(found.indices[:, 2:] == -1) and np.all(found.scores[:, 2:] == nb.MISSING)
    assert all(set(found.indices[r, :2]) == set(range(3)) - {r} for r in range(3))


def test_approximate_search_finds_nearly_all_of_the_exact_answer():
    pytest.importorskip("faiss")
    x = vectors_with_copies(n=2000, d=16)
    exact, approximate = nearest(x, 5), nearest(x, 5, exact=False)
    assert not approximate.exact
    recall = np.mean(
        [len(set(a) & set(e)) / 5 for a, e in zip(approximate.indices, exact.indices, strict=True)]
    )
    assert recall > 0.95
    first, second, _ = pairs_above(x, 0.95, exact=False)
    assert {(5, 10), (5, 11), (10, 11), (7, 1999)} <= set(zip(first.tolist(), second.tolist(), strict=True))


def test_beyond_the_exact_limit_the_search_is_approximate(monkeypatch):
    pytest.importorskip("faiss")
    monkeypatch.setattr(nb, "EXACT_LIMIT", 100)
    x = vectors_with_copies(n=300)
    assert not nearest(x, 3).exact and nearest(x, 3, exact=True).exact


def test_approximate_without_faiss_names_the_extra(monkeypatch):
    monkeypatch.setattr(nb, "faiss_module", lambda: None)
    with pytest.raises(MissingDependency, match="faiss") as caught:
        nearest(vectors_with_copies(n=50), 3, exact=False)
    assert "invspread-edge-runtime[explore]" in caught.value.hint


def test_a_threshold_that_matches_too_many_pairs_is_refused(monkeypatch):
    monkeypatch.setattr(nb, "MAX_PAIRS", 1000)
    with pytest.raises(ConfigError, match="too low"):
        pairs_above(vectors_with_copies(n=200), -1.0)


def test_progress_hears_every_block(monkeypatch):
    import contextlib

    monkeypatch.setattr(nb, "PAIR_BLOCK", 64)
    heard: list[tuple[int, int]] = []

    @contextlib.contextmanager
    def progress(total, what):
        yield lambda done, total: heard.append((done, total))

    pairs_above(vectors_with_copies(n=200), 0.9, progress=progress)
    assert heard == [(64, 200), (128, 200), (192, 200), (200, 200)]
