"""Did quantizing (INT8) or halving (FP16) cost accuracy? Measured on held-out labelled images.

Figures against the FP32 model on the same images: mean and minimum cosine similarity of the
embeddings, top-1 neighbour agreement, and the task metric of each side: weighted kNN accuracy
(memory: a train subset, queries: a test subset) for data sets with splits, Recall@1 for a
labelled folder. The drop is in percentage points; past the bound the export fails, or only warns
up to an explicitly allowed drop. A mean cosine to FP32 below `min_mean_cosine` fails too, whatever
the task metric says: galleries embedded by the FP32 model must stay searchable with the converted
one (measured: entropy calibration gave a 0.65 mean cosine while kNN accuracy rose 2.8 points).

The images, k, T and the metrics are the runtime's one evaluation protocol (`evaluation.protocol`), and
every model is run by the runtime's own ONNX Runtime CPU backend, so the check tests what ships.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from invspread_edge_runtime.backends.base import Backend
from invspread_edge_runtime.embedder import open_backend
from invspread_edge_runtime.errors import AccuracyError
from invspread_edge_runtime.evaluation.accuracy import cosine_stats, top1_agreement
from invspread_edge_runtime.evaluation.protocol import Embedded, eval_data, knn_split, recalls
from invspread_edge_runtime.metadata import ModelMeta
from invspread_edge_runtime.preprocess import normalize

from .images import uint8_batch

DEFAULT_BOUND = 1.0  # percentage points
DEFAULT_MIN_MEAN_COSINE = 0.98  # below it the artifact embeds into another space than FP32
DEFAULT_QUERIES = 1000
DEFAULT_MEMORY = 2 * DEFAULT_QUERIES  # kNN memory: twice the queries, as `--accuracy-images` sets it
BACKEND = "ort-cpu"  # the runtime's reference backend: what `invedge embed --backend ort-cpu` runs


@dataclass
class HeldOut:
    """Held-out images as uint8 (decoded once, normalised per batch when embedded) and how to score them."""

    name: str
    metric: str  # "knn", "recall@1" or "none" (unlabelled: agreement figures only)
    queries: np.ndarray  # (Nq, 3, S, S) uint8
    query_labels: np.ndarray | None
    memory: np.ndarray | None = None  # (Nm, 3, S, S) uint8, kNN only
    memory_labels: np.ndarray | None = None


@dataclass
class Embeddings:
    """One model's embeddings of a held-out set: (Nq, d) queries, (Nm, d) memory (kNN only)."""

    queries: np.ndarray
    memory: np.ndarray | None


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
    data: str, meta: ModelMeta, queries: int = DEFAULT_QUERIES, memory: int = DEFAULT_MEMORY
) -> HeldOut:
    """The evaluation protocol's images (runtime `evaluation.protocol.eval_data`): test-split queries and
    train-split memory, or a folder's own images, each the first N of the one fixed shuffle."""
    sets = eval_data(data, "knn", queries=queries, memory=memory)
    size, q = meta.image_size, sets.queries
    if sets.memory is None:  # a folder: no split
        metric = "none" if q.labels is None or len(np.unique(q.labels)) < 2 else "recall@1"
        return HeldOut(Path(data).name, metric, uint8_batch(q, size), q.labels)
    m = sets.memory
    return HeldOut(
        name=data,
        metric="knn" if q.labels is not None and m.labels is not None else "none",
        queries=uint8_batch(q, size),
        query_labels=q.labels,
        memory=uint8_batch(m, size),
        memory_labels=m.labels,
    )


def embed_held_out(
    model_path: str | os.PathLike[str], held: HeldOut, meta: ModelMeta, batch: int = 64
) -> Embeddings:
    """`model_path`'s embeddings of `held`, through the runtime's own backend (what users run)."""
    with open_backend(model_path, backend=BACKEND) as backend:
        memory = None if held.memory is None else _embed(backend, held.memory, meta, batch)
        return Embeddings(_embed(backend, held.queries, meta, batch), memory)


def _embed(backend: Backend, images: np.ndarray, meta: ModelMeta, batch: int) -> np.ndarray:
    """(N, 3, S, S) uint8 → (N, d) float32, normalised by the runtime's formula batch by batch."""
    outs = [
        backend.infer(normalize(images[s : s + batch], meta.mean, meta.std))
        for s in range(0, len(images), batch)
    ]
    return np.concatenate(outs).astype(np.float32)


def score(held: HeldOut, emb: Embeddings) -> float | None:
    """The task metric in [0, 1] by the evaluation protocol, or None for unlabelled data."""
    queries = Embedded(emb.queries, held.query_labels, 0)
    if held.metric == "knn":
        assert emb.memory is not None
        return knn_split(Embedded(emb.memory, held.memory_labels, 0), queries, warn=False)
    if held.metric == "recall@1":
        return recalls(queries, (1,))[1]
    return None


def compare(
    held: HeldOut,
    reference: Embeddings,
    candidate: Embeddings,
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
