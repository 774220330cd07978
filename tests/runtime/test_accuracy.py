import numpy as np
import pytest

from invspread_edge_runtime.evaluation import accuracy as acc


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _literal_knn(memory, labels, queries, k, t, num_classes, exclude_self=False):
    """(predictions, decided): the literal vote in float64, and whether each query's prediction is
    clear of float32 rounding. knn_predict sums its float32 similarities in another order (blocks
    of queries, a matrix product, not a vector product): they may differ from these by ~1e-6. Where
    the k-th and (k+1)-th neighbours are nearer than 1e-5, or the winning class's vote is within 1e-3
    (relative) of the runner-up's (a 1e-5 change of a similarity moves a vote by 1e-4 relative at
    t = 0.1), either answer is right."""
    memory, queries = np.asarray(memory, np.float64), np.asarray(queries, np.float64)
    preds, decided = [], []
    for qi, q in enumerate(queries):
        sims = memory @ q
        order = [j for j in np.argsort(-sims, kind="stable") if not (exclude_self and j == qi)]
        votes = np.zeros(num_classes)
        for j in order[:k]:
            votes[labels[j]] += np.exp(sims[j] / t)
        first, second = np.sort(votes)[::-1][:2]
        boundary_clear = k >= len(order) or sims[order[k - 1]] - sims[order[k]] > 1e-5
        preds.append(votes.argmax())
        decided.append(boundary_clear and first - second > 1e-3 * first)
    return np.array(preds), np.array(decided)


@pytest.mark.parametrize("k", [1, 5, 50])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_weighted_knn_matches_literal(k, exclude_self):
    rng = np.random.default_rng(k)
    memory = _unit(rng.normal(size=(300, 16)))
    labels = rng.integers(0, 4, 300)
    queries = memory[:40] if exclude_self else _unit(rng.normal(size=(40, 16)))
    got = acc.knn_predict(
        memory, labels, queries, k=k, temperature=0.1, num_classes=4, exclude_self=exclude_self, block=7
    )
    want, decided = _literal_knn(memory, labels, queries, k, 0.1, 4, exclude_self)
    assert decided.sum() >= 38  # these seeds leave one near-tie at most: the comparison keeps its power
    assert np.array_equal(got[decided], want[decided])


def test_knn_accuracy_on_separable_clusters():
    rng = np.random.default_rng(0)
    centers = _unit(rng.normal(size=(3, 32)))
    labels = rng.integers(0, 3, 500)
    x = _unit(centers[labels] + 0.05 * rng.normal(size=(500, 32)))
    assert acc.knn_accuracy(x[:400], labels[:400], x[400:], labels[400:], k=20, temperature=0.1) == 1.0
    noise = _unit(rng.normal(size=(500, 32)))
    assert acc.knn_accuracy(noise[:400], labels[:400], noise[400:], labels[400:], k=20, temperature=0.1) < 0.6


def test_recall_at_k_matches_literal():
    rng = np.random.default_rng(1)
    x = _unit(rng.normal(size=(120, 8)))
    labels = rng.integers(0, 5, 120)
    got = acc.recall_at_k(x, labels, ks=(1, 2, 4, 8))
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")
    for k, value in got.items():
        want = np.mean([(labels[order[i, :k]] == labels[i]).any() for i in range(120)])
        assert value == pytest.approx(want)
    assert got[1] <= got[2] <= got[4] <= got[8]


def test_nmi_extremes_and_kmeans():
    labels = np.repeat(np.arange(4), 50)
    assert acc.normalized_mutual_info(labels, labels) == pytest.approx(1.0)
    assert acc.normalized_mutual_info(labels, (labels + 1) % 4) == pytest.approx(1.0)  # names do not matter
    rng = np.random.default_rng(2)
    assert acc.normalized_mutual_info(labels, rng.permutation(labels)) < 0.1
    centers = _unit(rng.normal(size=(4, 16)) * 5)
    x = _unit(centers[labels] + 0.02 * rng.normal(size=(200, 16)))
    assert acc.nmi(x, labels) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(4))
def test_adjusted_rand_index_matches_scikit_learn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    a = rng.integers(0, rng.integers(1, 12), n)
    b = np.where(rng.random(n) < 0.6, a, rng.integers(0, 9, n))  # partly agreeing, partly random
    for x, y in [(a, b), (a, rng.permutation(a)), (a, (a + 3) * 7), (np.zeros(n), np.arange(n))]:
        assert acc.adjusted_rand_index(x, y) == pytest.approx(metrics.adjusted_rand_score(x, y), abs=1e-10)
    assert acc.adjusted_rand_index([0], [5]) == 1.0


def test_agreement_and_cosine():
    rng = np.random.default_rng(3)
    x = _unit(rng.normal(size=(100, 16)))
    assert acc.top1_agreement(x, x) == 1.0
    mean, low = acc.cosine_stats(x, x * 3.0)
    assert mean == pytest.approx(1.0) and low == pytest.approx(1.0)
    y = _unit(x + 0.5 * rng.normal(size=x.shape))
    mean, low = acc.cosine_stats(x, y)
    assert low < mean < 1.0
    assert acc.top1_agreement(x, y) < 1.0


def test_nmi_takes_the_best_of_several_kmeans_starts():
    # Ten clusters: single k-means++ starts land in poor minima (NMI down to 0.90 here, mean 0.954);
    # the best of ten starts by inertia is never below 0.954 and averages 0.98.
    rng = np.random.default_rng(7)
    centers = _unit(rng.normal(size=(10, 16)))
    labels = np.repeat(np.arange(10), 40)
    x = _unit(centers[labels] + 0.15 * rng.normal(size=(400, 16)))
    single = [acc.normalized_mutual_info(labels, acc.kmeans(x, 10, seed=s, n_init=1)) for s in range(12)]
    best = [acc.nmi(x, labels, seed=s) for s in range(6)]
    assert min(best) > min(single)
    assert np.mean(best) > np.mean(single) + 0.01
