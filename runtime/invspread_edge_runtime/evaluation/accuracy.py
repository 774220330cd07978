"""Embedding quality, in numpy: one implementation for training, export checks and the benchmark.

- weighted kNN (Wu et al. 2018, used by Ye et al. 2019): k neighbours by cosine, votes exp(cos / T);
- Recall@K and NMI for unseen-class retrieval;
- agreement between two embeddings of the same images (after quantizing, after FP16).
All inputs are L2-normalised float arrays (N, d). The kernels take k and T from their caller: the
protocol's values (k = 200, T = 0.1, and the k clamp on small sets) are `protocol`'s.
"""

from __future__ import annotations

import numpy as np

TIE_FRACTION = 0.1  # top-1 agreement: neighbours this close (share of the similarity spread) are tied


def knn_predict(
    memory: np.ndarray,
    memory_labels: np.ndarray,
    queries: np.ndarray,
    k: int,
    temperature: float,
    num_classes: int | None = None,
    exclude_self: bool = False,
    block: int = 512,
) -> np.ndarray:
    """Weighted kNN class predictions (N_q,). `exclude_self`: queries are the memory (leave-one-out)."""
    memory = np.asarray(memory, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    labels = np.asarray(memory_labels, dtype=np.int64)
    num_classes = int(num_classes or labels.max() + 1)
    k = min(k, len(memory) - int(exclude_self))
    if k < 1:
        raise ValueError("kNN needs at least two memory items")
    preds = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ memory.T  # (b, N)
        if exclude_self:
            rows = np.arange(sims.shape[0])
            sims[rows, rows + start] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (b, k), unordered
        top_sims = np.take_along_axis(sims, top, axis=1)
        weights = np.exp(
            (top_sims - 1.0) / temperature
        )  # shifted by the max cosine: same argmax, no overflow
        votes = np.zeros((sims.shape[0], num_classes), dtype=np.float64)
        np.add.at(votes, (np.arange(sims.shape[0])[:, None], labels[top]), weights)
        preds[start : start + block] = votes.argmax(axis=1)
    return preds


def knn_accuracy(
    memory: np.ndarray,
    memory_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    k: int,
    temperature: float,
) -> float:
    """Top-1 weighted kNN accuracy in [0, 1]: train set as memory, test set as queries."""
    num_classes = int(max(memory_labels.max(), query_labels.max()) + 1)
    preds = knn_predict(memory, memory_labels, queries, k, temperature, num_classes)
    return float((preds == np.asarray(query_labels)).mean())


def nearest_neighbours(embeddings: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """(N, k) indices of each item's k nearest others (itself excluded), most similar first."""
    x = np.asarray(embeddings, dtype=np.float32)
    k = min(k, len(x) - 1)
    out = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), block):
        sims = x[start : start + block] @ x.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start : start + block] = np.take_along_axis(top, order, axis=1)
    return out


def recall_at_k(embeddings: np.ndarray, labels: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    """Fraction of queries with a same-class item among their K nearest others (each item a query)."""
    labels = np.asarray(labels)
    neighbours = nearest_neighbours(embeddings, max(ks))
    hits = labels[neighbours] == labels[:, None]
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


def kmeans(x: np.ndarray, n_clusters: int, seed: int = 0, iters: int = 100, n_init: int = 10) -> np.ndarray:
    """Lloyd's k-means with k-means++ starts; the best of `n_init` starts (lowest inertia) wins.

    One start can settle in a poor local minimum (two true clusters sharing a centre), which
    would make NMI depend on the seed rather than on the embedding.
    """
    x = np.asarray(x, dtype=np.float32)
    best, best_inertia = None, np.inf
    for rng in np.random.default_rng(seed).spawn(n_init):
        assign, inertia = _kmeans_once(x, n_clusters, rng, iters)
        if inertia < best_inertia:
            best, best_inertia = assign, inertia
    assert best is not None
    return best


def _kmeans_once(
    x: np.ndarray, n_clusters: int, rng: np.random.Generator, iters: int
) -> tuple[np.ndarray, float]:
    sq = (x * x).sum(axis=1)
    centers = [x[rng.integers(len(x))]]
    for _ in range(1, n_clusters):
        d2 = np.min(
            sq[:, None] - 2.0 * x @ np.stack(centers).T + (np.stack(centers) ** 2).sum(axis=1), axis=1
        )
        d2 = d2.clip(min=0)
        total = d2.sum()
        centers.append(x[rng.choice(len(x), p=d2 / total if total > 0 else None)])
    c = np.stack(centers)
    assign = np.full(len(x), -1)
    for _ in range(iters):
        new = np.argmax(x @ c.T - 0.5 * (c * c).sum(axis=1), axis=1)  # argmin of squared distance
        if np.array_equal(new, assign):
            break
        assign = new
        for j in range(n_clusters):
            members = x[assign == j]
            c[j] = members.mean(axis=0) if len(members) else x[rng.integers(len(x))]
    inertia = float((sq - 2.0 * (x * c[assign]).sum(axis=1) + (c[assign] ** 2).sum(axis=1)).sum())
    return assign, inertia


def nmi(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Normalised mutual information between k-means clusters (k = #classes) and the labels."""
    labels = np.asarray(labels)
    _, true = np.unique(labels, return_inverse=True)
    pred = kmeans(embeddings, int(true.max() + 1), seed=seed)
    return normalized_mutual_info(true, pred)


def normalized_mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """NMI with the arithmetic-mean normaliser (scikit-learn's default)."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    ha = float(-(pa[pa > 0] * np.log(pa[pa > 0])).sum())
    hb = float(-(pb[pb > 0] * np.log(pb[pb > 0])).sum())
    denom = (ha + hb) / 2
    return mi / denom if denom > 0 else 1.0


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labellings of the same items (Hubert & Arabie 1985; scikit-learn's).

    Pairs of items counted from the contingency table n_ij: index = Σ C(n_ij, 2), expected =
    Σ C(a_i, 2) · Σ C(b_j, 2) / C(n, 2), maximum = (Σ C(a_i, 2) + Σ C(b_j, 2)) / 2; ARI = (index −
    expected) / (maximum − expected): 1 for the same partition, about 0 for a random one. 1.0 when
    the maximum equals the expected (both one cluster, or both all singletons), as scikit-learn.
    """
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1), dtype=np.float64)
    np.add.at(joint, (a, b), 1)

    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1) / 2).sum())

    index = pairs(joint)
    rows, cols = pairs(joint.sum(axis=1)), pairs(joint.sum(axis=0))
    total = pairs(np.array([float(len(a))]))
    expected = rows * cols / total if total else 0.0
    maximum = (rows + cols) / 2
    return (index - expected) / (maximum - expected) if maximum != expected else 1.0


def cosine_stats(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(mean, min) cosine similarity row by row between two embeddings of the same images."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cos.mean()), float(cos.min())


def top1_agreement(
    reference: np.ndarray, candidate: np.ndarray, *, ties: bool = False, accepted_cosine: float | None = None
) -> float:
    """Fraction of items whose nearest other item under `candidate` is the one under `reference`.

    Strict (the default; what the export report and `invedge bench` give): the same neighbour
    exactly. With `ties` (what the probe check judges): the neighbour the candidate picks is, under
    the reference, the nearest or as near as makes no difference: within TIE_FRACTION of that item's
    similarity spread (nearest minus median), or within what the error `accepted_cosine` allows (the
    precision's mean-cosine threshold) moves a similarity gap. A few dozen probes of ten classes
    hold near-ties (two shirts equally close to a third) whose order flips on any 1e-4 change; an
    untrained network, whose embeddings all point one way (every similarity above 0.999), is all
    ties. The floor depends on the threshold, never on the candidate's own error: a broken engine
    picks neighbours no nearer than the median and fails. `ties` holds an (N, N) matrix: for small
    sets only.
    """
    ref_nn = nearest_neighbours(reference, 1)[:, 0]
    cand_nn = nearest_neighbours(candidate, 1)[:, 0]
    if not ties:
        return float((ref_nn == cand_nn).mean())
    sims = (reference @ reference.T).astype(np.float64)
    np.fill_diagonal(sims, np.nan)
    rows = np.arange(len(reference))
    best = sims[rows, ref_nn]
    median = np.nanmedian(sims, axis=1)
    tolerance = np.maximum(
        TIE_FRACTION * np.maximum(best - median, 0.0), gap_noise(accepted_cosine, reference)
    )
    tied = sims[rows, cand_nn] >= best - tolerance
    return float(tied.mean())


def gap_noise(accepted_cosine: float | None, reference: np.ndarray) -> float:
    """How far an embedding error at `accepted_cosine` typically moves the gap between two similarities.

    An error of length e = sqrt(2 (1 - cos)) on unit vectors in d dimensions moves a similarity
    a·b by about e·sqrt(2/d) (two independent terms Δa·b and a·Δb, each of spread e/sqrt(d)), and the
    gap between two of them by 2e/sqrt(d): one spread of it. 0 when no threshold is given.
    """
    if accepted_cosine is None or not 0.0 < accepted_cosine < 1.0:
        return 0.0
    error = np.sqrt(2.0 * (1.0 - accepted_cosine))
    return float(2.0 * error / np.sqrt(reference.shape[1]))
