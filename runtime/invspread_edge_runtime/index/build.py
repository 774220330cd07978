"""Building an index: check the items, choose the kind's settings, build faiss' index and tune it.

An approximate (`ivf` / `hnsw`) index is measured when built: recall@10 against exact search, the
gallery's own items as queries. Unless `nprobe` (IVF) or `ef_search` (HNSW) is given, that setting
is doubled from a small start until recall@10 reaches `target_recall`: the fastest setting that is
accurate enough.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import IndexFileError
from ..gallery import as_matrix, check_unique, copy_locations
from .faiss_engines import FaissAnn
from .settings import EF_CONSTRUCTION, EF_SEARCH, HNSW_M, KINDS, RECALL_QUERIES, TARGET_RECALL

if TYPE_CHECKING:  # pragma: no cover
    from .gallery import Index


def build_index(
    cls: type[Index],
    vectors: np.ndarray,
    ids: list[str],
    space: dict[str, Any],
    kind: str = "flat",
    *,
    locations: list[str] | None = None,
    model: dict[str, Any] | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    m: int = HNSW_M,
    ef_search: int = EF_SEARCH,
    ef_construction: int = EF_CONSTRUCTION,
    target_recall: float = TARGET_RECALL,
    threads: int = 0,
    seed: int = 0,
) -> Index:
    """Make an index (`Index.build`); for `ivf`/`hnsw` also measure recall@10 against exact search.

    Unless `nprobe` (IVF) or `ef_search` (HNSW) is given, it is doubled from a small start until
    recall@10 reaches `target_recall`: the fastest setting that is accurate enough.
    """
    if kind not in KINDS:
        raise IndexFileError(f"Invalid index kind {kind!r}. Only {', '.join(KINDS)} are supported.")
    vectors = as_matrix(vectors)
    if len(vectors) == 0:
        raise IndexFileError("the gallery is empty: nothing to index", "Embed some images first")
    if len(ids) != len(vectors):
        raise IndexFileError(f"{len(ids)} ids for {len(vectors)} vectors")
    check_unique(ids)
    dim = int(space.get("embedding_dim", vectors.shape[1]))
    if vectors.shape[1] != dim:
        raise IndexFileError(f"vectors have dimension {vectors.shape[1]}, the space says {dim}")
    params = (
        FaissAnn.settings(
            kind,
            len(vectors),
            nlist=nlist,
            nprobe=nprobe,
            m=m,
            ef_search=ef_search,
            ef_construction=ef_construction,
            seed=seed,
        )
        if kind != "flat"
        else {}
    )
    index = cls(
        vectors,
        list(ids),
        dict(space),
        kind,
        params,
        locations=copy_locations(locations, ids),
        model=dict(model or {}),
        threads=threads,
    )
    ann = index.engines.ann
    if ann is not None:
        ann.build(index.items)
        index.recall_at_10 = measure_recall(index, k=10, seed=seed)
        if (kind == "ivf" and nprobe is None) or (kind == "hnsw" and ef_search == EF_SEARCH):
            index.recall_at_10 = ann.tune(
                target_recall, index.recall_at_10, lambda: measure_recall(index, k=10, seed=seed)
            )
    return index


def measure_recall(index: Index, k: int = 10, n_queries: int = RECALL_QUERIES, seed: int = 0) -> float:
    """recall@k of `index` against exact search, gallery items as queries (each minus itself)."""
    items = index.items
    if len(items) < 2:
        return 1.0
    k = min(k, len(items) - 1)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(items), size=min(n_queries, len(items)), replace=False)
    queries = items.vectors[rows]
    _, exact_rows = index.engines.pick(items, exact=True).search(queries, k + 1)
    _, approx_rows = index.engines.pick(items, exact=False).search(queries, k + 1)
    hits = 0
    for row, truth, found in zip(rows, exact_rows, approx_rows, strict=True):
        truth_set = [i for i in truth if i != row][:k]
        found_set = {i for i in found if i != row and i >= 0}
        hits += len(found_set.intersection(truth_set))
    return hits / (k * len(rows))
