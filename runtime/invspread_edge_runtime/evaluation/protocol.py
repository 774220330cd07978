"""The one evaluation protocol: which images are memory and queries, k, T, and the metrics.

The training monitor, `invedge eval`, export's accuracy check and `invedge bench` all measure
through this module, so their figures agree; it needs no torch (each caller embeds its own way).

- knn, data with a train/test split (Fashion-MNIST, CIFAR, STL): train split as memory, test split
  as queries (the paper's protocol: weighted kNN, k = 200, votes exp(cos / 0.1), Wu et al. 2018).
- knn, a folder (one set, no split): leave-one-out, each image a query against all the others.
- retrieval: every image of the test split (or the folder) is a query against all the others:
  Recall@1/2/4/8, and NMI of k-means (k = number of classes) against the labels.
Which images: `datasets.select` (classes, then the first N of a fixed shuffle), the rule training
uses for its own images. The kernels are `accuracy`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import console
from ..errors import ConfigError, DataError, InvedgeError
from . import accuracy
from .datasets import ImageSet, open_dataset, select

PROTOCOLS = ("knn", "retrieval")
KNN_K, KNN_T = 200, 0.1  # the paper's k and temperature
RECALL_KS = (1, 2, 4, 8)


@dataclass
class Embedded:
    vectors: np.ndarray  # (M, d) float32, unit length
    labels: np.ndarray | None  # (M,)
    failed: int  # images that could not be decoded (left out)


# --- metrics ------------------------------------------------------------------------------------


def knn_k(labels: np.ndarray, k: int = KNN_K, exclude_self: bool = False) -> int:
    """The k a weighted kNN vote can use on this memory: `k`, or fewer when k exceeds the images of
    an average class (N / classes, one fewer for leave-one-out).

    Past that, each vote reaches into every class: with k ≥ N it is one global vote, and under
    leave-one-out the query's own class, one image short, loses it every time (0 % on a small
    balanced folder, whatever the embedding).
    """
    labels = np.asarray(labels)
    classes = len(np.unique(labels))
    return max(1, min(k, len(labels) // max(classes, 1) - int(exclude_self)))


def knn_split(
    memory: Embedded,
    queries: Embedded,
    k: int = KNN_K,
    temperature: float = KNN_T,
    warn: bool = True,
) -> float:
    """Accuracy of each query's weighted vote among its k nearest memory items (see `knn_k`)."""
    _need_labels(memory, "kNN")
    _need_labels(queries, "kNN")
    k = _effective_k(memory.labels, k, False, warn)
    return accuracy.knn_accuracy(
        memory.vectors, memory.labels, queries.vectors, queries.labels, k, temperature
    )


def knn_leave_one_out(
    items: Embedded, k: int = KNN_K, temperature: float = KNN_T, warn: bool = True
) -> float:
    """Each item a query against all the others (for a folder, which has no train/test split)."""
    _need_labels(items, "kNN")
    if len(items.vectors) < 2:
        raise DataError("leave-one-out kNN needs at least two images", "Evaluate on more images")
    k = _effective_k(items.labels, k, True, warn)
    preds = accuracy.knn_predict(
        items.vectors, items.labels, items.vectors, k, temperature, exclude_self=True
    )
    return float((preds == items.labels).mean())


def recalls(items: Embedded, ks: tuple[int, ...] = RECALL_KS) -> dict[int, float]:
    """Recall@K for each K of `ks`: each item a query against all the others."""
    _need_labels(items, "retrieval")
    if len(items.vectors) <= max(ks):
        raise DataError(
            f"retrieval needs more than {max(ks)} images (Recall@{max(ks)}), got "
            f"{len(items.vectors)}: with fewer, every other image is a neighbour",
            "Evaluate on more images",
        )
    if len(np.unique(items.labels)) < 2:
        raise DataError(
            "retrieval needs at least two classes (with one, every neighbour matches and NMI is 1)",
            "Evaluate on images of several classes",
        )
    return accuracy.recall_at_k(items.vectors, items.labels, ks)


def retrieval(items: Embedded) -> dict[str, float]:
    """Recall@1/2/4/8 (each item a query against all the others) and NMI of k-means vs labels."""
    out = {f"recall@{k}": v for k, v in recalls(items).items()}
    out["nmi"] = accuracy.nmi(items.vectors, items.labels)
    return out


def _effective_k(labels: np.ndarray, k: int, exclude_self: bool, warn: bool) -> int:
    if k < 1:
        raise ConfigError(f"kNN needs k >= 1, got {k}", f"The paper uses k = {KNN_K}")
    classes = len(np.unique(labels))
    if classes < 2:
        raise DataError(
            f"kNN accuracy needs at least two classes, and these {len(labels)} images have one "
            "(every prediction would be right)",
            "Evaluate on images of several classes (one sub-folder per class)",
        )
    used = knn_k(labels, k, exclude_self)
    if used < k and warn:
        console.warn(
            f"kNN: k = {k} is more than the {len(labels) // classes} images per class of the "
            f"{len(labels)}-image memory ({classes} classes); using k = {used}. "
            f"Evaluate on more images for k = {k}"
        )
    return used


def _need_labels(items: Embedded, what: str) -> None:
    if items.labels is None:
        raise DataError(
            f"{what} needs labels and these images have none",
            "Put the images in one sub-folder per class (labels are used for evaluation only)",
        )


# --- which images -------------------------------------------------------------------------------


@dataclass
class EvalData:
    memory: ImageSet | None  # None: leave-one-out (or retrieval) on `queries`
    queries: ImageSet


def eval_data(
    spec: str,
    protocol: str = "knn",
    classes: list[int] | None = None,
    limit: int | None = None,
    *,
    memory: int | None = None,
    queries: int | None = None,
    folder_cap: str = "queries",
) -> EvalData:
    """The images a protocol measures on: `spec`'s test split as queries, its train split as kNN
    memory; a folder (no split), and retrieval, one set of queries, each against the others.

    `limit` caps each set (the first N of `select`'s fixed shuffle); `memory` and `queries` cap
    one set each instead (the monitor and the export check size them apart). A folder's one set
    is the queries, capped by `queries`, or by `memory` with `folder_cap="memory"` (the training
    monitor: each image is memory for all the others).
    """
    if protocol not in PROTOCOLS:
        raise InvedgeError(f"Invalid protocol {protocol!r}. Only {', '.join(PROTOCOLS)} are supported.")
    memory = limit if memory is None else memory
    queries = limit if queries is None else queries
    test = open_dataset(spec, "test")
    if test.paths is not None or protocol == "retrieval":  # a folder has no split; retrieval uses one set
        one_set_cap = memory if test.paths is not None and folder_cap == "memory" else queries
        return EvalData(None, select(test, classes, one_set_cap))
    return EvalData(select(open_dataset(spec, "train"), classes, memory), select(test, classes, queries))


# --- a whole evaluation -------------------------------------------------------------------------

EmbedFn = Callable[[ImageSet], Embedded]


def evaluate_embeddings(
    embed_fn: EmbedFn, data: EvalData, protocol: str, k: int = KNN_K, temperature: float = KNN_T
) -> dict[str, Any]:
    """Run `embed_fn(ImageSet) → Embedded` on the protocol's sets and compute its metrics."""
    t0 = time.perf_counter()
    queries = embed_fn(data.queries)
    result: dict[str, Any] = {"protocol": protocol, "queries": len(queries.vectors)}
    failed = queries.failed
    if protocol == "retrieval":
        result.update(retrieval(queries))
    elif data.memory is None:
        result["mode"] = "leave-one-out"
        result["knn_accuracy"] = knn_leave_one_out(queries, k, temperature)
        used = knn_k(queries.labels, k, exclude_self=True)
    else:
        memory = embed_fn(data.memory)
        failed += memory.failed
        result["mode"] = "train-memory/test-queries"
        result["memory"] = len(memory.vectors)
        result["knn_accuracy"] = knn_split(memory, queries, k, temperature)
        used = knn_k(memory.labels, k)
    if protocol == "knn":
        result.update(k=used, temperature=temperature)
        if used != k:
            result["k_requested"] = k
    result["skipped_images"] = failed
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result
