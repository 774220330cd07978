"""How good an embedding is: weighted kNN (k = 200, exp(cos / 0.1)) and unseen-class retrieval.

Images go through exactly the runtime's evaluation transform (uint8 at the model's size, then
runtime.preprocess.normalize's formula); the metrics are the runtime's numpy implementations
(`invspread_edge_runtime.accuracy`), so figures here, after export and in the benchmark agree.

Protocols:
- knn, data with a train/test split (Fashion-MNIST, CIFAR, STL): train split as memory, test split
  as queries (the paper's protocol).
- knn, a folder (one set, no split): leave-one-out, each image a query against all the others.
- retrieval: every image of the test split (or the folder) is a query against all the others:
  Recall@1/2/4/8, and NMI of k-means (k = number of classes) against the labels. With
  `--classes 5-9` after training on `--classes 0-4`, these are classes the encoder never saw.
Baselines by the same code: raw pixels (the 0–255 values as a vector), normalised pixels (the
model's input: minus the data mean, over the std), and the untrained network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from invspread_edge_runtime import accuracy
from invspread_edge_runtime.datasets import ImageSet, open_dataset
from invspread_edge_runtime.errors import DataError, InvedgeError

from .augment import normalize_uint8
from .data import UInt8Source, parse_classes, select
from .precision import Precision

PROTOCOLS = ("knn", "retrieval")
BASELINES = ("pixels", "pixels-normalized", "untrained")
KNN_K, KNN_T = 200, 0.1
RECALL_KS = (1, 2, 4, 8)


@dataclass
class Embedded:
    vectors: np.ndarray  # (M, d) float32, unit length
    labels: np.ndarray | None  # (M,)
    failed: int  # images that could not be decoded (left out)


@torch.no_grad()
def embed(
    model: nn.Module,
    source: UInt8Source,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    precision: Precision | None = None,
    batch_size: int = 256,
    channels_last: bool = False,
    progress: Any = None,
) -> Embedded:
    """Embed every decodable image of `source` with `model` in eval mode."""
    was_training = model.training
    model.eval()
    n = len(source)
    chunks = [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    vectors, kept, failed = [], [], 0
    task = progress.add_task("embedding", total=n) if progress is not None else None
    try:
        for batch in source.batches(chunks):
            failed += len(batch.failed)
            if len(batch.indices):
                x = normalize_uint8(batch.images.to(device, non_blocking=True), mean, std)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with (
                    precision.autocast()
                    if precision is not None
                    else torch.autocast(device.type, enabled=False)
                ):
                    z = model(x)
                vectors.append(z.float().cpu().numpy())
                kept.append(batch.indices.numpy())
            if task is not None:
                progress.advance(task, len(batch.indices) + len(batch.failed))
    finally:
        model.train(was_training)
        if task is not None:
            progress.remove_task(task)
    if not vectors:
        raise DataError(f"none of the {n} images of {source.images.name} could be decoded")
    idx = np.concatenate(kept)
    labels = None if source.images.labels is None else source.images.labels[idx]
    out = np.concatenate(vectors).astype(np.float32)
    return Embedded(out / np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-12), labels, failed)


def embed_pixels(
    source: UInt8Source, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None
) -> Embedded:
    """Pixel baselines: each image as one L2-normalised vector of its raw 0–255 values, or, with
    mean/std, of the model's normalised input (centring alone changes cosine neighbours a lot)."""
    n = len(source)
    chunks = [np.arange(i, min(i + 1024, n)) for i in range(0, n, 1024)]
    vectors, kept, failed = [], [], 0
    for batch in source.batches(chunks):
        failed += len(batch.failed)
        if len(batch.indices):
            x = batch.images.float() if mean is None else normalize_uint8(batch.images, mean, std)
            vectors.append(x.flatten(1).numpy())
            kept.append(batch.indices.numpy())
    if not vectors:
        raise DataError(f"none of the {n} images of {source.images.name} could be decoded")
    out = np.concatenate(vectors)
    idx = np.concatenate(kept)
    labels = None if source.images.labels is None else source.images.labels[idx]
    return Embedded(out / np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-12), labels, failed)


def knn_split(memory: Embedded, queries: Embedded, k: int = KNN_K, temperature: float = KNN_T) -> float:
    _need_labels(memory, "kNN")
    _need_labels(queries, "kNN")
    return accuracy.knn_accuracy(
        memory.vectors, memory.labels, queries.vectors, queries.labels, k, temperature
    )


def knn_leave_one_out(items: Embedded, k: int = KNN_K, temperature: float = KNN_T) -> float:
    """Each item a query against all the others (for a folder, which has no train/test split)."""
    _need_labels(items, "kNN")
    if len(items.vectors) < 2:
        raise DataError("leave-one-out kNN needs at least two images")
    preds = accuracy.knn_predict(
        items.vectors, items.labels, items.vectors, k, temperature, exclude_self=True
    )
    return float((preds == items.labels).mean())


def retrieval(items: Embedded) -> dict[str, float]:
    """Recall@1/2/4/8 (each item a query against all the others) and NMI of k-means vs labels."""
    _need_labels(items, "retrieval")
    if len(items.vectors) < 2:
        raise DataError("retrieval needs at least two images")
    recalls = accuracy.recall_at_k(items.vectors, items.labels, RECALL_KS)
    out = {f"recall@{k}": v for k, v in recalls.items()}
    out["nmi"] = accuracy.nmi(items.vectors, items.labels)
    return out


def _need_labels(items: Embedded, what: str) -> None:
    if items.labels is None:
        raise DataError(
            f"{what} needs labels and these images have none",
            "Put the images in one sub-folder per class (labels are used for evaluation only)",
        )


# --- whole evaluations --------------------------------------------------------------------------


@dataclass
class EvalData:
    memory: ImageSet | None  # None: leave-one-out on `queries`
    queries: ImageSet


def eval_data(
    spec: str, protocol: str, classes: list[int] | None = None, limit: int | None = None
) -> EvalData:
    """The images a protocol measures on. `limit` caps each set (first N of a fixed shuffle)."""
    if protocol not in PROTOCOLS:
        raise InvedgeError(f"Invalid protocol {protocol!r}. Only {', '.join(PROTOCOLS)} are supported.")
    test = open_dataset(spec, "test")
    queries = select(test, classes, limit)
    if test.paths is not None or protocol == "retrieval":  # a folder has no split; retrieval uses one set
        return EvalData(None, queries)
    return EvalData(select(open_dataset(spec, "train"), classes, limit), queries)


def evaluate_embeddings(
    embed_fn: Any, data: EvalData, protocol: str, k: int = KNN_K, temperature: float = KNN_T
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
    else:
        memory = embed_fn(data.memory)
        failed += memory.failed
        result["mode"] = "train-memory/test-queries"
        result["memory"] = len(memory.vectors)
        result["knn_accuracy"] = knn_split(memory, queries, k, temperature)
    if protocol == "knn":
        result.update(k=k, temperature=temperature)
    result["skipped_images"] = failed
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def evaluate_run(
    run: str | None,
    data: str,
    protocol: str = "knn",
    classes: str | None = None,
    limit: int | None = None,
    baseline: str | None = None,
    batch_size: int = 256,
    workers: int = 0,
    precision: str = "fp32",
    device: str = "auto",
    seed: int = 0,
    width: int = 32,
    arch: str = "cifar_resnet18",
    image_size: int | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """`invedge eval`: a trained run, or a baseline (raw pixels; the untrained network) by the same code.

    An untrained baseline takes the run's architecture when a run is given, else `arch`/`width`.
    """
    from .checkpoint import build_model, load_checkpoint
    from .data import mean_std
    from .model import create_model
    from .precision import prefers_channels_last, resolve_device, resolve_precision

    if baseline is not None and baseline not in BASELINES:
        raise InvedgeError(f"Invalid baseline {baseline!r}. Only {', '.join(BASELINES)} are supported.")
    if run is None and baseline is None:
        raise InvedgeError(
            "nothing to evaluate", "Pass a run folder, or --baseline pixels|pixels-normalized|untrained"
        )
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    sets = eval_data(data, protocol, parse_classes(classes), limit)

    ckpt = load_checkpoint(run) if run is not None else None
    if ckpt is not None:
        cfg = ckpt.config
        size, mean, std = int(cfg["image_size"]), tuple(cfg["mean"]), tuple(cfg["std"])
        model_name = f"{cfg['arch']} width {cfg.get('width')}"
    else:
        size = image_size or (sets.queries.native_size or 64)
        mean, std = mean_std(UInt8Source(sets.memory or sets.queries, size, workers))
        model_name = f"{arch} width {width}"

    if baseline in ("pixels", "pixels-normalized"):
        model = None
        what = (
            "raw pixels"
            if baseline == "pixels"
            else f"normalised pixels (mean {mean[0]:.3f}, std {std[0]:.3f})"
        )
    elif baseline == "untrained":
        torch.manual_seed(seed)
        a, w, d = (cfg["arch"], cfg.get("width", 64), cfg["embedding_dim"]) if ckpt else (arch, width, 128)
        model = create_model(a, width=w, embedding_dim=d)
        what = f"untrained {model_name}"
    else:
        assert ckpt is not None
        model = build_model(ckpt)
        what = f"{run} ({model_name}, epoch {ckpt.epoch})"
    if model is not None:
        model = model.to(dev)
        if prefers_channels_last(prec):
            model = model.to(memory_format=torch.channels_last)

    def embed_fn(images: ImageSet) -> Embedded:
        source = UInt8Source(images, size, workers, pin_memory=dev.type == "cuda")
        if model is None:
            return embed_pixels(source) if baseline == "pixels" else embed_pixels(source, mean, std)
        return embed(model, source, mean, std, dev, prec, batch_size, prefers_channels_last(prec), progress)

    result = evaluate_embeddings(embed_fn, sets, protocol)
    result.update(
        evaluated=what,
        data=data,
        classes=classes,
        image_size=size,
        precision=prec.name if model is not None else "fp32",
        checkpoint_sha256=ckpt.sha256 if ckpt is not None and baseline is None else None,
    )
    return result
