"""`invedge eval`'s torch side: embed images with a model (or as pixels), then measure them by the
runtime's one protocol (`invspread_edge_runtime.evaluation.protocol`: which images, k, T and the metrics).

Images go through exactly the runtime's evaluation transform (uint8 at the model's size, then
runtime.preprocess.normalize's formula), so figures here, after export and in the benchmark agree.
Baselines by the same code: raw pixels (the 0–255 values as a vector), normalised pixels (the
model's input: minus the data mean, over the std), and the untrained network.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from invspread_edge_export.parity import require_finite_outputs
from invspread_edge_runtime.bounds import check_bounds
from invspread_edge_runtime.errors import ConfigError, DataError, InvedgeError, NonFiniteError
from invspread_edge_runtime.evaluation.datasets import ImageSet, parse_classes
from invspread_edge_runtime.evaluation.protocol import (
    KNN_K,
    PROTOCOLS,
    Embedded,
    EvalData,
    eval_data,
    evaluate_embeddings,
)

from .augment import normalize_uint8
from .config import EVAL_BOUNDS
from .data import UInt8Source, first_failure
from .precision import Precision

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import Checkpoint

BASELINES = ("pixels", "pixels-normalized", "untrained")


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
    vectors, kept, failed, first_failed = [], [], 0, None
    task = progress.add_task("embedding", total=n) if progress is not None else None
    try:
        for batch in source.batches(chunks):
            failed += len(batch.failed)
            if first_failed is None and batch.failed:
                first_failed = batch.failed[0]
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
        _nothing_decoded(source, first_failed)
    idx = np.concatenate(kept)
    labels = None if source.images.labels is None else source.images.labels[idx]
    out = np.concatenate(vectors).astype(np.float32)
    require_finite_outputs(out, "the model", f"images of {source.images.name}")
    return Embedded(out / np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-12), labels, failed)


def embed_pixels(
    source: UInt8Source, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None
) -> Embedded:
    """Pixel baselines: each image as one L2-normalised vector of its raw 0–255 values, or, with
    mean/std, of the model's normalised input (centring alone changes cosine neighbours a lot)."""
    n = len(source)
    chunks = [np.arange(i, min(i + 1024, n)) for i in range(0, n, 1024)]
    vectors, kept, failed, first_failed = [], [], 0, None
    for batch in source.batches(chunks):
        failed += len(batch.failed)
        if first_failed is None and batch.failed:
            first_failed = batch.failed[0]
        if len(batch.indices):
            x = batch.images.float() if mean is None else normalize_uint8(batch.images, mean, std)
            vectors.append(x.flatten(1).numpy())
            kept.append(batch.indices.numpy())
    if not vectors:
        _nothing_decoded(source, first_failed)
    out = np.concatenate(vectors)
    idx = np.concatenate(kept)
    labels = None if source.images.labels is None else source.images.labels[idx]
    return Embedded(out / np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-12), labels, failed)


def _nothing_decoded(source: UInt8Source, first_failed: int | None) -> None:
    raise DataError(
        f"none of the {len(source)} images of {source.images.name} could be decoded"
        f"{first_failure(source, first_failed)}",
        "Check that the folder holds readable images (PNG, JPEG, ...)",
    )


# --- invedge eval's three modes: a trained run, and two baselines by the same code -----------------


def check_eval_options(
    baseline: str | None = None,
    protocol: str = "knn",
    *,
    batch_size: int = 256,
    workers: int = 0,
    width: int = 32,
    k: int = KNN_K,
    limit: int | None = None,
    precision: str = "fp32",
    device: str = "auto",
) -> tuple[torch.device, Precision]:
    """Every `invedge eval` option, refused in one order before any data or checkpoint is read,
    whichever mode runs (`invedge eval` checks them all, a mode those it takes): the baseline, the
    numbers' ranges (EVAL_BOUNDS), the protocol, the device, the precision. Returns the last two."""
    from .precision import resolve_device, resolve_precision

    if baseline is not None and baseline not in BASELINES:
        raise InvedgeError(f"Invalid baseline {baseline!r}. Only {', '.join(BASELINES)} are supported.")
    numbers = dict(batch_size=batch_size, workers=workers, width=width, k=k, limit=limit)
    check_bounds(EVAL_BOUNDS, numbers)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"Invalid protocol {protocol!r}. Only {', '.join(PROTOCOLS)} are supported.")
    dev = resolve_device(device)
    return dev, resolve_precision(precision, dev)


def evaluate_run(
    run: str | os.PathLike[str],
    data: str | None = None,
    protocol: str = "knn",
    classes: str | None = None,
    limit: int | None = None,
    batch_size: int = 256,
    workers: int = 0,
    precision: str = "fp32",
    device: str = "auto",
    k: int = KNN_K,
    progress: Any = None,
) -> dict[str, Any]:
    """`invedge eval RUN`: a trained run's embedding, measured by the protocol on `data` (None: the
    data the checkpoint was trained on; its own config says which)."""
    from .checkpoint import build_model, load_checkpoint

    dev, prec = check_eval_options(
        protocol=protocol, batch_size=batch_size, workers=workers, k=k, limit=limit,
        precision=precision, device=device,
    )  # fmt: skip
    ckpt = load_checkpoint(run)
    data, sets = _sets(data, protocol, classes, limit, ckpt, run)
    size, mean, std = _input(ckpt, sets, None, workers)
    model = _placed(build_model(ckpt), dev, prec)
    what = f"{run} ({_model_name(ckpt.config)}, epoch {ckpt.epoch})"
    embed_fn = _model_embedder(model, size, mean, std, dev, prec, batch_size, workers, progress)
    return _measure(
        embed_fn, sets, protocol, k, what, data=data, classes=classes, image_size=size,
        precision=prec.name, checkpoint_sha256=ckpt.sha256,
    )  # fmt: skip


def evaluate_pixels(
    data: str | None = None,
    protocol: str = "knn",
    classes: str | None = None,
    limit: int | None = None,
    *,
    normalized: bool = False,
    run: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    workers: int = 0,
    k: int = KNN_K,
) -> dict[str, Any]:
    """`invedge eval --baseline pixels|pixels-normalized`: each image as one vector of its raw
    0–255 values, or (`normalized`) of the model's input. With `run`: its data, size and
    normalisation; without: `data` (None: Fashion-MNIST) at `image_size` (None: the native size,
    else 64), normalised by its own mean and std."""
    check_eval_options(protocol=protocol, workers=workers, k=k, limit=limit)
    ckpt = _checkpoint(run)
    data, sets = _sets(data, protocol, classes, limit, ckpt, run)
    size, mean, std = _input(ckpt, sets, image_size, workers)
    what = f"normalised pixels (mean {mean[0]:.3f}, std {std[0]:.3f})" if normalized else "raw pixels"

    def embed_fn(images: ImageSet) -> Embedded:
        source = UInt8Source(images, size, workers)
        return embed_pixels(source, mean, std) if normalized else embed_pixels(source)

    return _measure(
        embed_fn, sets, protocol, k, what, data=data, classes=classes, image_size=size,
        precision="fp32", checkpoint_sha256=None,
    )  # fmt: skip


def evaluate_untrained(
    data: str | None = None,
    protocol: str = "knn",
    classes: str | None = None,
    limit: int | None = None,
    *,
    run: str | os.PathLike[str] | None = None,
    arch: str = "cifar_resnet18",
    width: int = 32,
    seed: int = 0,
    image_size: int | None = None,
    batch_size: int = 256,
    workers: int = 0,
    precision: str = "fp32",
    device: str = "auto",
    k: int = KNN_K,
    progress: Any = None,
) -> dict[str, Any]:
    """`invedge eval --baseline untrained`: the network before training (initialised from `seed`).
    With `run`: its architecture, data, size and normalisation; without: `arch` at `width` on
    `data` (None: Fashion-MNIST) at `image_size` (None: the native size, else 64)."""
    from .model import create_model

    dev, prec = check_eval_options(
        "untrained", protocol, batch_size=batch_size, workers=workers, width=width, k=k, limit=limit,
        precision=precision, device=device,
    )  # fmt: skip
    ckpt = _checkpoint(run)
    data, sets = _sets(data, protocol, classes, limit, ckpt, run)
    size, mean, std = _input(ckpt, sets, image_size, workers)
    cfg = ckpt.config if ckpt is not None else {"arch": arch, "width": width, "embedding_dim": 128}
    torch.manual_seed(seed)
    model = create_model(cfg["arch"], width=cfg.get("width", 64), embedding_dim=cfg["embedding_dim"])
    what = f"untrained {_model_name(cfg)}"
    embed_fn = _model_embedder(
        _placed(model, dev, prec), size, mean, std, dev, prec, batch_size, workers, progress
    )
    return _measure(
        embed_fn, sets, protocol, k, what, data=data, classes=classes, image_size=size,
        precision=prec.name, checkpoint_sha256=None,
    )  # fmt: skip


# --- their shared steps, in the order they take them ----------------------------------------------


def _checkpoint(run: str | os.PathLike[str] | None) -> Checkpoint | None:
    from .checkpoint import load_checkpoint

    return load_checkpoint(run) if run is not None else None


def _sets(
    data: str | None,
    protocol: str,
    classes: str | None,
    limit: int | None,
    ckpt: Checkpoint | None,
    run: str | os.PathLike[str] | None,
) -> tuple[str, EvalData]:
    """The data spec and the protocol's sets: `data`, or the data the checkpoint was trained on
    (Fashion-MNIST without a checkpoint)."""
    if data is not None:
        return data, eval_data(data, protocol, parse_classes(classes), limit)
    data = _trained_on(ckpt) if ckpt is not None else "fashion-mnist"
    try:
        return data, eval_data(data, protocol, parse_classes(classes), limit)
    except DataError as exc:
        if ckpt is None:
            raise
        raise DataError(
            f"{run} was trained on {data!r}, which cannot be opened here ({exc.message})",
            "Pass the data to measure on with --data",
        ) from exc


def _input(
    ckpt: Checkpoint | None, sets: EvalData, image_size: int | None, workers: int
) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """The model's input size, mean and std: the checkpoint's, else `image_size` (None: the data's
    native size, else 64) and the data's own mean and std."""
    from .data import mean_std

    if ckpt is not None:
        cfg = ckpt.config
        return int(cfg["image_size"]), tuple(cfg["mean"]), tuple(cfg["std"])
    size = image_size or (sets.queries.native_size or 64)
    mean, std = mean_std(UInt8Source(sets.memory or sets.queries, size, workers))
    return size, mean, std


def _model_name(config: dict[str, Any]) -> str:
    return f"{config['arch']} width {config.get('width')}"


def _placed(model: nn.Module, dev: torch.device, prec: Precision) -> nn.Module:
    """On the device, in channels-last where that is faster."""
    from .precision import prefers_channels_last

    model = model.to(dev)
    return model.to(memory_format=torch.channels_last) if prefers_channels_last(prec) else model


def _model_embedder(
    model: nn.Module,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    dev: torch.device,
    prec: Precision,
    batch_size: int,
    workers: int,
    progress: Any,
) -> Callable[[ImageSet], Embedded]:
    from .precision import prefers_channels_last

    def embed_fn(images: ImageSet) -> Embedded:
        source = UInt8Source(images, size, workers, pin_memory=dev.type == "cuda")
        return embed(model, source, mean, std, dev, prec, batch_size, prefers_channels_last(prec), progress)

    return embed_fn


def _measure(
    embed_fn: Callable[[ImageSet], Embedded], sets: EvalData, protocol: str, k: int, what: str, **facts: Any
) -> dict[str, Any]:
    """The protocol's figures, then what was measured (`what`, named in a NaN error too) and how
    (`facts`: data, classes, image_size, precision, checkpoint_sha256)."""
    try:
        result = evaluate_embeddings(embed_fn, sets, protocol, k=k)
    except NonFiniteError as exc:
        raise NonFiniteError(f"{what}: {exc.message}", exc.hint) from exc
    return {**result, "evaluated": what, **facts}


def _trained_on(ckpt: Checkpoint) -> str:
    """The data spec a checkpoint was trained on, from its own config (run.json may be gone)."""
    spec = ckpt.config.get("data")
    if not isinstance(spec, str) or not spec:
        raise DataError(
            f"{ckpt.path} does not say which data it was trained on",
            "Pass the data to measure on with --data",
        )
    return spec
