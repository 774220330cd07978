"""Did quantizing (INT8) or halving (FP16) cost accuracy? Measured on held-out labelled images.

Figures against the FP32 model on the same images: mean and minimum cosine similarity of the
embeddings, top-1 neighbour agreement, and the task metric of each side: weighted kNN accuracy
(memory: a train subset, queries: a test subset) for data sets with splits, Recall@1 for a
labelled folder. The drop is in percentage points; past the bound the export fails, or only warns
up to an explicitly allowed drop. A mean cosine to FP32 below `min_mean_cosine` fails too, whatever
the task metric says: galleries embedded by the FP32 model must stay searchable with the converted
one (measured: entropy calibration gave a 0.65 mean cosine while kNN accuracy rose 2.8 points).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from invspread_edge_runtime.accuracy import cosine_stats, knn_accuracy, recall_at_k, top1_agreement
from invspread_edge_runtime.datasets import open_dataset
from invspread_edge_runtime.errors import AccuracyError
from invspread_edge_runtime.metadata import ModelMeta
from invspread_edge_runtime.preprocess import normalize

from .images import spread_indices, uint8_batch
from .parity import ort_embeddings, ort_session

DEFAULT_BOUND = 1.0  # percentage points
DEFAULT_MIN_MEAN_COSINE = 0.98  # below it the artifact embeds into another space than FP32
DEFAULT_QUERIES = 1000
DEFAULT_MEMORY = 2000
KNN_K = 200


@dataclass
class HeldOut:
    """Held-out images as uint8 (normalised per batch when embedded) and how to score them."""

    name: str
    metric: str  # "knn", "recall@1" or "none" (unlabelled: agreement figures only)
    queries: np.ndarray  # (Nq, 3, S, S) uint8
    query_labels: np.ndarray | None
    memory: np.ndarray | None = None  # (Nm, 3, S, S) uint8, kNN only
    memory_labels: np.ndarray | None = None


@dataclass(frozen=True)
class AccuracyResult:
    precision: str
    data: str
    metric: str
    queries: int
    memory: int
    fp32: float | None
    candidate: float | None
    drop_points: float | None
    mean_cosine: float
    min_cosine: float
    top1_agreement: float
    bound_points: float
    allowed_points: float | None
    min_mean_cosine: float
    status: str  # "ok", "warn", "fail"

    def to_dict(self) -> dict:
        return asdict(self)


def held_out_set(
    data: str, meta: ModelMeta, queries: int = DEFAULT_QUERIES, memory: int = DEFAULT_MEMORY, seed: int = 0
) -> HeldOut:
    """Fixed-seed subsets: test-split queries and train-split memory, or a folder's own images."""
    size = meta.image_size
    test = open_dataset(data, "test")
    if test.paths is not None and Path(data).expanduser().is_dir():  # a folder: no split
        idx = spread_indices(len(test), queries, seed)
        labels = None if test.labels is None else test.labels[idx]
        metric = "none" if labels is None or len(np.unique(labels)) < 2 else "recall@1"
        return HeldOut(Path(data).name, metric, uint8_batch(test, size, idx), labels)
    train = open_dataset(data, "train")
    q_idx, m_idx = spread_indices(len(test), queries, seed), spread_indices(len(train), memory, seed + 1)
    return HeldOut(
        name=data,
        metric="knn" if test.labels is not None and train.labels is not None else "none",
        queries=uint8_batch(test, size, q_idx),
        query_labels=None if test.labels is None else test.labels[q_idx],
        memory=uint8_batch(train, size, m_idx),
        memory_labels=None if train.labels is None else train.labels[m_idx],
    )


def embed_onnx(
    onnx_path: str | os.PathLike[str], images: np.ndarray, meta: ModelMeta, batch: int = 64
) -> np.ndarray:
    """(N, 3, S, S) uint8 → (N, d) embeddings with ONNX Runtime on the CPU."""
    session = ort_session(onnx_path)
    outs = [
        ort_embeddings(session, normalize(images[s : s + batch], meta.mean, meta.std), batch)
        for s in range(0, len(images), batch)
    ]
    return np.concatenate(outs)


@dataclass
class Embedded:
    queries: np.ndarray
    memory: np.ndarray | None


def embed_held_out(onnx_path: str | os.PathLike[str], held: HeldOut, meta: ModelMeta) -> Embedded:
    memory = None if held.memory is None else embed_onnx(onnx_path, held.memory, meta)
    return Embedded(embed_onnx(onnx_path, held.queries, meta), memory)


def score(held: HeldOut, emb: Embedded) -> float | None:
    """The task metric in [0, 1], or None for unlabelled data."""
    if held.metric == "knn":
        assert emb.memory is not None and held.memory_labels is not None and held.query_labels is not None
        return knn_accuracy(emb.memory, held.memory_labels, emb.queries, held.query_labels, k=KNN_K)
    if held.metric == "recall@1":
        assert held.query_labels is not None
        return recall_at_k(emb.queries, held.query_labels, ks=(1,))[1]
    return None


def compare(
    held: HeldOut,
    reference: Embedded,
    candidate: Embedded,
    precision: str,
    *,
    bound: float = DEFAULT_BOUND,
    allowed: float | None = None,
    min_mean_cosine: float = DEFAULT_MIN_MEAN_COSINE,
) -> AccuracyResult:
    """FP32 (`reference`) vs a converted model (`candidate`) on the same held-out images."""
    mean_cos, min_cos = cosine_stats(reference.queries, candidate.queries)
    ref_score, cand_score = score(held, reference), score(held, candidate)
    drop = None if ref_score is None or cand_score is None else 100.0 * (ref_score - cand_score)
    status = "ok"
    if drop is not None and drop > bound + 1e-9:  # 1e-9: float noise on exact multiples
        status = "warn" if allowed is not None and drop <= allowed + 1e-9 else "fail"
    if mean_cos < min_mean_cosine:
        status = "fail"
    return AccuracyResult(
        precision=precision,
        data=held.name,
        metric=held.metric,
        queries=len(held.queries),
        memory=0 if held.memory is None else len(held.memory),
        fp32=ref_score,
        candidate=cand_score,
        drop_points=drop,
        mean_cosine=mean_cos,
        min_cosine=min_cos,
        top1_agreement=top1_agreement(reference.queries, candidate.queries),
        bound_points=bound,
        allowed_points=allowed,
        min_mean_cosine=min_mean_cosine,
        status=status,
    )


def require_accuracy(result: AccuracyResult) -> None:
    """Raise AccuracyError for a failed check, with the figures and the way out."""
    if result.status != "fail":
        return
    if result.mean_cosine < result.min_mean_cosine:
        raise AccuracyError(
            f"{result.precision} embeddings drift from FP32: mean cosine {result.mean_cosine:.4f} "
            f"< {result.min_mean_cosine:g}; the {result.precision} file was not kept",
            "Try another --calib-method (percentile, minmax) or more calibration images (--calib-count)",
        )
    raise AccuracyError(
        f"{result.precision} loses {result.drop_points:.2f} points of {result.metric} accuracy "
        f"({100 * (result.fp32 or 0):.2f}% → {100 * (result.candidate or 0):.2f}%), more than the "
        f"{result.bound_points:g}-point bound; the {result.precision} file was not kept",
        "Try --calib-method percentile, more calibration images (--calib-count), "
        f"or accept it with --allow-accuracy-drop {np.ceil(result.drop_points or 0):g}",
    )
