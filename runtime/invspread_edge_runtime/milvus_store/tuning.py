"""recall@10 of a Milvus collection against exact search, and the tuning of its search parameter.

The file index's method (index/build.py), on the vectors the build has: gallery items as queries
(each minus itself), exact top-k by numpy (index/topk.py) against Milvus' answer. Unless given,
ef (HNSW) or nprobe (IVF) is doubled from its start until recall@10 reaches TARGET_RECALL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..index.settings import EF_SEARCH_LIMIT, RECALL_QUERIES, TARGET_RECALL
from ..index.topk import NumpyExact

if TYPE_CHECKING:  # pragma: no cover
    from .gallery import MilvusGallery


class _Rows:
    def __init__(self, vectors: np.ndarray, ids: list[str]) -> None:
        self.vectors, self.ids = vectors, ids


def measure_recall(
    gallery: MilvusGallery,
    vectors: np.ndarray,
    ids: list[str],
    k: int = 10,
    n_queries: int = RECALL_QUERIES,
    seed: int = 0,
) -> float:
    """recall@k of `gallery`'s own search against exact search over `vectors` (named `ids`)."""
    if len(ids) < 2:
        return 1.0
    k = min(k, len(ids) - 1)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(ids), size=min(n_queries, len(ids)), replace=False)
    exact = NumpyExact()
    exact.build(_Rows(vectors, ids))
    _, truth_rows = exact.search(vectors[rows], k + 1)
    found = gallery.search(vectors[rows], k + 1).ids
    hits = 0
    for row, truth, got in zip(rows, truth_rows, found, strict=True):
        me = ids[row]
        truth_ids = [ids[i] for i in truth if i >= 0 and ids[i] != me][:k]
        hits += len({i for i in got if i != me}.intersection(truth_ids))
    return hits / (k * len(rows))


def tune(gallery: MilvusGallery, vectors: np.ndarray, ids: list[str], target: float = TARGET_RECALL) -> float:
    """Double ef / nprobe until recall@10 reaches `target` (or its limit); returns the recall reached."""
    name, limit = (
        ("nprobe", int(gallery.params.get("nlist", 1)))
        if gallery.kind == "ivf"
        else ("ef_search", EF_SEARCH_LIMIT)
    )
    recall = measure_recall(gallery, vectors, ids)
    while recall < target and int(gallery.params[name]) < limit:
        gallery.set_search_params(**{name: min(limit, int(gallery.params[name]) * 2)})
        recall = measure_recall(gallery, vectors, ids)
    return recall
