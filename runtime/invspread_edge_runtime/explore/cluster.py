"""Groups in an embedding: spherical k-means (faiss) with k chosen by silhouette, or HDBSCAN.

    clustering = cluster_items(open_items("photos.emb"), ClusterOptions(k=None))  # k auto
    print(clustering.k, clustering.sizes, clustering.to_dict()["nmi"])

- k-means: faiss `Kmeans`, spherical (centres kept on the unit sphere, items assigned by cosine),
  trained on a seeded sample of at most TRAIN_PER_CENTRE items per centre (faiss's own default
  cap: more items barely move the centres), the best of RESTARTS starts; then every item is
  assigned to its nearest centre in blocks. Without faiss, the evaluation's numpy k-means
  (evaluation/accuracy.kmeans) trains on the same sample.
- `k=None` (`--k auto`): k-means for each k = 2..k_max on a seeded sample of `sample` items, and
  the k with the highest mean cosine silhouette on that sample wins (ties: the smaller k); the
  criterion and every k's score are in the result.
- HDBSCAN (scikit-learn): clusters of any count and shape from density; items in no dense region
  are noise (cluster -1), left unassigned and reported. Euclidean distance on the unit rows,
  which orders neighbours as cosine does.
Clusters are numbered by size, 0 the largest; each item's cosine to its cluster's centre orders
the members (the most typical first). With class sub-folders under the images' root
(`items.labels()`), NMI and ARI against them say how well the clusters found the classes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import bounds
from ..bounds import check_bounds
from ..errors import ConfigError, EmptyGalleryError, MissingDependency
from ..index.manage import Progress, no_progress
from .items import EXPLORE_EXTRA

if TYPE_CHECKING:
    from .items import ExploreItems

KMEANS, HDBSCAN = "kmeans", "hdbscan"
METHODS = (KMEANS, HDBSCAN)
DEFAULT_K_MAX = 30
DEFAULT_SAMPLE = 5000
DEFAULT_NITER = 25
DEFAULT_MIN_CLUSTER_SIZE = 5
TRAIN_PER_CENTRE = 256  # k-means trains on at most this many items per centre (faiss's default)
RESTARTS = 3  # k-means starts; the best objective wins (one start can merge two true clusters)
# below this many multiply-adds per iteration (rows × k × d) one thread trains faster: OpenMP's
# start-up, and on a busy machine its waiting, cost more than the work (measured on 2 busy cores:
# 500 items, k = 2..15, 0.3 s on one thread, 17 s on two)
ONE_THREAD_WORK = 1 << 26
BLOCK = 65_536  # rows per assignment step: a (BLOCK, k) score matrix at a time
NOISE = -1

OPTION_BOUNDS = {
    "k": bounds.CLUSTER_K,
    "k_max": bounds.CLUSTER_K_MAX,
    "sample": bounds.SILHOUETTE_SAMPLE,
    "min_cluster_size": bounds.MIN_CLUSTER_SIZE,
    "niter": bounds.CLUSTER_NITER,
    "seed": bounds.EXPLORE_SEED,
}


@dataclass(frozen=True)
class ClusterOptions:
    """How to cluster. `k`: the number of k-means clusters, None for auto (silhouette over 2..k_max
    on `sample` items); `method`: kmeans or hdbscan (`min_cluster_size`: its smallest group)."""

    k: int | None = None
    method: str = KMEANS
    k_max: int = DEFAULT_K_MAX
    sample: int = DEFAULT_SAMPLE
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE
    niter: int = DEFAULT_NITER
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"Invalid --method {self.method!r}. Only {', '.join(METHODS)} are supported")
        check_bounds(OPTION_BOUNDS, vars(self))
        if self.method == HDBSCAN and self.k is not None:
            raise ConfigError(
                "--k is for k-means: hdbscan finds the number of clusters itself",
                "Leave out --k, or use --method kmeans",
            )


def parse_k(text: str) -> int | None:
    """`--k`: a whole number, or auto (None)."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"--k {text!r} is not a number", "Give a whole number such as 20, or auto"
        ) from None


@dataclass
class Clustering:
    """Each item's cluster (numbered by size, 0 the largest; -1: noise) and how it was chosen."""

    method: str
    assignments: np.ndarray  # (N,) int64
    closeness: np.ndarray  # (N,) float32: cosine to the own cluster's centre (nan for noise)
    centres: np.ndarray  # (k, d) float32 unit rows
    ids: list[str]
    locations: list[str]
    source: str = ""
    criterion: str = ""
    k_scores: dict[int, float] = field(default_factory=dict)  # --k auto: each k tried → silhouette
    silhouette: float | None = None  # mean cosine silhouette of the result (assigned items)
    classes: int = 0  # class folders compared with (0: none)
    nmi: float | None = None
    ari: float | None = None
    seed: int = 0
    seconds: float = 0.0
    _order: np.ndarray = field(init=False, repr=False)
    _starts: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # members grouped by cluster (noise first), each cluster's most typical first
        self._order = np.lexsort((-np.nan_to_num(self.closeness, nan=-2.0), self.assignments))
        self._starts = np.searchsorted(self.assignments[self._order], np.arange(NOISE, self.k + 1))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def k(self) -> int:
        return len(self.centres)

    @property
    def sizes(self) -> list[int]:
        return [int(n) for n in np.diff(self._starts[1:])]

    @property
    def noise(self) -> int:
        return int(self._starts[1] - self._starts[0])

    def members(self, cluster: int) -> np.ndarray:
        """Row numbers of `cluster`'s items, nearest its centre first (NOISE: the noise, in row order)."""
        at = cluster - NOISE
        return self._order[self._starts[at] : self._starts[at + 1]]

    def to_dict(self, examples: int = 5) -> dict[str, Any]:
        """What `invedge cluster --json` prints: counts, how k was chosen, NMI/ARI, each id's cluster."""
        return {
            "source": self.source,
            "method": self.method,
            "count": len(self),
            "k": self.k,
            "sizes": self.sizes,
            "noise": self.noise,
            "criterion": self.criterion,
            "k_scores": [{"k": k, "silhouette": round(s, 6)} for k, s in self.k_scores.items()],
            "silhouette": None if self.silhouette is None else round(self.silhouette, 6),
            "classes": self.classes,
            "nmi": self.nmi,
            "ari": self.ari,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "clusters": [
                {
                    "cluster": c,
                    "size": size,
                    "typical": [self.ids[i] for i in self.members(c)[:examples]],
                }
                for c, size in enumerate(self.sizes)
            ],
            "assignments": {item: int(c) for item, c in zip(self.ids, self.assignments, strict=True)},
        }


def cluster_items(
    items: ExploreItems, options: ClusterOptions | None = None, *, progress: Progress = no_progress
) -> Clustering:
    """Cluster `items` as `options` say (default: k-means, k auto); see the module docstring."""
    options = options or ClusterOptions()
    started = time.perf_counter()
    n = len(items)
    _check_count(items, options)
    vectors = items.vectors
    k_scores: dict[int, float] = {}
    if options.method == HDBSCAN:
        raw = hdbscan_labels(vectors, options.min_cluster_size)
        criterion = f"HDBSCAN, min cluster size {options.min_cluster_size}; noise left unassigned"
    else:
        k = options.k
        if k is None:
            k_scores = silhouette_scan(vectors, options, progress=progress)
            k = max(k_scores, key=lambda each: (k_scores[each], -each))
            criterion = (
                f"k = {k}: the highest mean cosine silhouette of k-means on {min(options.sample, n):,} "
                f"items (seed {options.seed}), k = 2..{max(k_scores)}"
            )
        else:
            criterion = f"k = {k}, as given"
        raw, _ = spherical_kmeans(vectors, k, seed=options.seed, niter=options.niter, progress=progress)
    assignments, centres = _by_size(vectors, raw)
    closeness = _closeness(vectors, assignments, centres)
    clustering = Clustering(
        options.method,
        assignments,
        closeness,
        centres,
        list(items.ids),
        list(items.locations),
        source=items.source,
        criterion=criterion,
        k_scores=k_scores,
        silhouette=_overall_silhouette(vectors, assignments, len(centres)),
        seed=options.seed,
    )
    _compare_with_classes(clustering, items.labels())
    clustering.seconds = time.perf_counter() - started
    return clustering


def _check_count(items: ExploreItems, options: ClusterOptions) -> None:
    n = len(items)
    if n == 0:
        raise EmptyGalleryError(f"{items.source} holds no items", "Cluster a folder of embedded images")
    if options.method == HDBSCAN:
        flag, needed = f"--min-cluster-size {options.min_cluster_size}", options.min_cluster_size
    else:  # --k auto: the silhouette needs two clusters, one with two items
        flag, needed = (f"--k {options.k}", options.k) if options.k is not None else ("--k auto", 3)
    if n < needed:
        raise ConfigError(
            f"{flag} needs at least {needed} items; {items.source} holds {n}",
            "Embed more images first" if flag == "--k auto" else f"Use a smaller {flag.split()[0]}",
        )
    if options.method == HDBSCAN and n > bounds.HDBSCAN_ITEMS.high:
        raise ConfigError(
            f"--method hdbscan takes at most {bounds.HDBSCAN_ITEMS.high:,} items; {items.source} holds {n:,}",
            "Use k-means (the default), which scales to millions",
        )


# --- k-means ----------------------------------------------------------------------------------------


def spherical_kmeans(
    vectors: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    niter: int = DEFAULT_NITER,
    progress: Progress = no_progress,
) -> tuple[np.ndarray, np.ndarray]:
    """(assignments (N,) int64, centres (k, d) float32 unit rows): k-means by cosine over unit rows.

    Trained on a seeded sample of at most TRAIN_PER_CENTRE · k rows (faiss, or numpy without
    it), then every row goes to its most similar centre, BLOCK rows at a time (`progress` counts
    them).
    """
    n = len(vectors)
    if not 1 <= k <= n:
        raise ConfigError(f"k-means with k = {k} needs at least {k} items, {n} given", "Use a smaller --k")
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(n, TRAIN_PER_CENTRE * k, replace=False)) if n > TRAIN_PER_CENTRE * k else None
    train = _unit(vectors if take is None else vectors[take])
    centres = _train_centres(train, k, seed, niter)
    with progress(n, f"k-means (k = {k})") as on_progress:
        assignments = _nearest_centre(vectors, centres, on_progress)
    return assignments, centres


def _train_centres(train: np.ndarray, k: int, seed: int, niter: int) -> np.ndarray:
    from ..index.faiss_engines import faiss_module

    faiss = faiss_module()
    if faiss is None:
        from ..evaluation.accuracy import kmeans

        assign = kmeans(train, k, seed=seed, iters=niter, n_init=RESTARTS)
        return _centres_of(train, assign, k)
    extra = {"init_method": faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS}
    if not hasattr(faiss.ClusteringParameters(), "init_method"):  # an older faiss: random starts
        extra = {}
    model = faiss.Kmeans(
        train.shape[1],
        k,
        niter=niter,
        nredo=RESTARTS,
        spherical=True,
        seed=seed,
        min_points_per_centroid=1,  # few items per centre is the user's choice: no warning on stderr
        max_points_per_centroid=max(TRAIN_PER_CENTRE, -(-len(train) // k)),  # sampled already
        verbose=False,
        **extra,
    )
    with _threads_for(faiss, len(train) * k * train.shape[1]):
        model.train(train)
    return _unit(model.centroids)


@contextlib.contextmanager
def _threads_for(faiss: Any, work: int) -> Iterator[None]:
    """One OpenMP thread for a small training (`work`: multiply-adds per iteration), faiss's default
    for a large one; the setting is restored after."""
    if work >= ONE_THREAD_WORK:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _nearest_centre(vectors: np.ndarray, centres: np.ndarray, on_progress: Any = None) -> np.ndarray:
    out = np.empty(len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), BLOCK):
        block = _unit(vectors[start : start + BLOCK])
        out[start : start + len(block)] = np.argmax(block @ centres.T, axis=1)
        if on_progress is not None:
            on_progress(start + len(block), len(vectors))
    return out


def _centres_of(vectors: np.ndarray, assignments: np.ndarray, k: int) -> np.ndarray:
    """(k, d) the unit mean direction of each cluster's rows (a zero row for an empty cluster)."""
    sums = np.zeros((k, vectors.shape[1]), dtype=np.float64)
    for start in range(0, len(vectors), BLOCK):
        rows = assignments[start : start + BLOCK]
        keep = rows >= 0
        np.add.at(sums, rows[keep], _unit(vectors[start : start + BLOCK])[keep])
    return _unit(sums)


# --- choosing k: silhouette ------------------------------------------------------------------------


def silhouette_scan(
    vectors: np.ndarray, options: ClusterOptions, *, progress: Progress = no_progress
) -> dict[int, float]:
    """k → mean cosine silhouette of k-means on a seeded sample, for k = 2..k_max (at most the
    sample's size − 1: the silhouette needs a cluster with two items and two clusters)."""
    n = len(vectors)
    if n > options.sample:
        vectors = vectors[
            np.sort(np.random.default_rng(options.seed).choice(n, options.sample, replace=False))
        ]
    sample = _unit(vectors)
    ks = range(2, min(options.k_max, len(sample) - 1) + 1)
    scores: dict[int, float] = {}
    with progress(len(ks), "choosing k (silhouette)") as on_progress:
        for done, k in enumerate(ks, 1):
            assign, _ = spherical_kmeans(sample, k, seed=options.seed, niter=options.niter)
            scores[k] = silhouette(sample, assign)
            if on_progress is not None:
                on_progress(done, len(ks))
    return scores


def silhouette(vectors: np.ndarray, assignments: np.ndarray) -> float:
    """Mean silhouette (Rousseeuw 1987) with cosine distance, over the items with a cluster (≥ 0).

    Per item: a = mean distance to the other members of its cluster, b = the smallest mean
    distance to another cluster's members, s = (b − a) / max(a, b) (0 for an item alone in its
    cluster). On unit rows the distance 1 − x·y is linear in y, so a cluster's mean distance is
    1 − x·(mean of its rows): O(N·k·d), no N × N matrix, BLOCK rows at a time (scikit-learn's
    `silhouette_score` with metric="cosine" gives the same numbers). Fewer than 2 clusters: 0.
    """
    keep = assignments >= 0
    _, labels = np.unique(assignments[keep], return_inverse=True)
    k = int(labels.max()) + 1 if len(labels) else 0
    if k < 2:
        return 0.0
    rows_kept = np.flatnonzero(keep)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, vectors.shape[1]), dtype=np.float64)
    for start in range(0, len(rows_kept), BLOCK):
        np.add.at(sums, labels[start : start + BLOCK], _unit(vectors[rows_kept[start : start + BLOCK]]))
    total = 0.0
    for start in range(0, len(rows_kept), BLOCK):
        x = _unit(vectors[rows_kept[start : start + BLOCK]]).astype(np.float64)
        own = labels[start : start + BLOCK]
        at = np.arange(len(x))
        dots = x @ sums.T  # (b, k): Σ over each cluster of x·y
        others = counts[own] - 1
        selves = (x * x).sum(axis=1)  # x·x ≈ 1: the item itself, left out of its own cluster
        a = (others - (dots[at, own] - selves)) / np.maximum(others, 1)
        mean_dist = 1.0 - dots / counts
        mean_dist[at, own] = np.inf
        b = mean_dist.min(axis=1)
        widest = np.maximum(a, b)
        s = np.where((others == 0) | (widest <= 0), 0.0, (b - a) / np.where(widest > 0, widest, 1.0))
        total += float(s.sum())
    return total / len(rows_kept)


def _overall_silhouette(vectors: np.ndarray, assignments: np.ndarray, k: int) -> float | None:
    return silhouette(vectors, assignments) if k >= 2 else None


# --- HDBSCAN ----------------------------------------------------------------------------------------


def hdbscan_labels(vectors: np.ndarray, min_cluster_size: int) -> np.ndarray:
    """(N,) int64 scikit-learn HDBSCAN labels over the unit rows (-1: noise)."""
    try:
        from sklearn.cluster import HDBSCAN as SklearnHDBSCAN
    except ImportError:
        raise MissingDependency("scikit-learn", "invedge cluster --method hdbscan", EXPLORE_EXTRA) from None
    x = _unit(vectors)
    labels = SklearnHDBSCAN(min_cluster_size=min_cluster_size, metric="euclidean", copy=True).fit_predict(x)
    return np.where(labels >= 0, labels, NOISE).astype(np.int64)


# --- the result -------------------------------------------------------------------------------------


def _by_size(vectors: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters by size (0 the largest; equal sizes by first row), drop empty ones, and
    compute each one's centre: the unit mean of its rows."""
    found = np.unique(raw[raw >= 0])
    if not len(found):
        return np.full(len(raw), NOISE, dtype=np.int64), np.zeros((0, vectors.shape[1]), np.float32)
    sizes = np.bincount(raw[raw >= 0])[found]
    ranked = found[np.lexsort((_first_rows(raw, found), -sizes))]
    new = np.full(int(found.max()) + 1, NOISE, dtype=np.int64)
    new[ranked] = np.arange(len(ranked))
    assignments = np.where(raw >= 0, new[np.maximum(raw, 0)], NOISE)
    return assignments, _centres_of(vectors, assignments, len(ranked))


def _first_rows(raw: np.ndarray, found: np.ndarray) -> np.ndarray:
    rows = np.full(int(found.max()) + 1, len(raw), dtype=np.int64)
    keep = np.flatnonzero(raw >= 0)
    np.minimum.at(rows, raw[keep], keep)
    return rows[found]


def _closeness(vectors: np.ndarray, assignments: np.ndarray, centres: np.ndarray) -> np.ndarray:
    out = np.full(len(vectors), np.nan, dtype=np.float32)
    for start in range(0, len(vectors), BLOCK):
        own = assignments[start : start + BLOCK]
        keep = own >= 0
        rows = _unit(vectors[start : start + BLOCK])
        out[start : start + len(own)][keep] = (rows[keep] * centres[own[keep]]).sum(axis=1)
    return out


def _compare_with_classes(clustering: Clustering, labels: list[str] | None) -> None:
    """NMI and ARI of the clusters against the class folders, over the items with a cluster."""
    from ..evaluation.accuracy import adjusted_rand_index, normalized_mutual_info

    if labels is None:
        return
    keep = clustering.assignments >= 0
    if not keep.any():
        return
    truth = np.asarray(labels)[keep]
    found = clustering.assignments[keep]
    clustering.classes = len(set(labels))
    clustering.nmi = round(normalized_mutual_info(truth, found), 6)
    clustering.ari = round(adjusted_rand_index(truth, found), 6)


def _unit(x: np.ndarray) -> np.ndarray:
    """float32 copy of `x` with unit rows (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)
