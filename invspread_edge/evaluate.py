"""`invedge eval`'s torch side: embed images with a model (or as pixels), then measure them by the
runtime's one protocol (`invspread_edge_runtime.evaluation`: which images, k, T and the metrics).

Images go through exactly the runtime's evaluation transform (uint8 at the model's size, then
runtime.preprocess.normalize's formula), so figures here, after export and in the benchmark agree.
Baselines by the same code: raw pixels (the 0–255 values as a vector), normalised pixels (the
model's input: minus the data mean, over the std), and the untrained network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from invspread_edge_export.parity import require_finite_outputs
from invspread_edge_runtime.bounds import check_bounds
from invspread_edge_runtime.datasets import ImageSet, parse_classes
from invspread_edge_runtime.errors import ConfigError, DataError, InvedgeError, NonFiniteError
from invspread_edge_runtime.evaluation import (
    KNN_K,
    PROTOCOLS,
    Embedded,
    eval_data,
    evaluate_embeddings,
)

from .augment import normalize_uint8
from .config import EVAL_BOUNDS
from .data import UInt8Source, first_failure
from .precision import Precision

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


def evaluate_run(
    run: str | None,
    data: str | None,
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
    k: int = KNN_K,
) -> dict[str, Any]:
    """`invedge eval`: a trained run, or a baseline (raw pixels; the untrained network) by the same code.

    `data` None: the data the checkpoint was trained on (its own config says which), or
    Fashion-MNIST for a baseline without a run. An untrained baseline takes the run's architecture
    when a run is given, else `arch`/`width`.
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
    check_bounds(EVAL_BOUNDS, dict(batch_size=batch_size, workers=workers, width=width, k=k, limit=limit))
    if protocol not in PROTOCOLS:
        raise ConfigError(f"Invalid protocol {protocol!r}. Only {', '.join(PROTOCOLS)} are supported.")
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    ckpt = load_checkpoint(run) if run is not None else None
    if data is None:
        data = _trained_on(ckpt) if ckpt is not None else "fashion-mnist"
        try:
            sets = eval_data(data, protocol, parse_classes(classes), limit)
        except DataError as exc:
            if ckpt is None:
                raise
            raise DataError(
                f"{run} was trained on {data!r}, which cannot be opened here ({exc.message})",
                "Pass the data to measure on with --data",
            ) from exc
    else:
        sets = eval_data(data, protocol, parse_classes(classes), limit)

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

    try:
        result = evaluate_embeddings(embed_fn, sets, protocol, k=k)
    except NonFiniteError as exc:
        raise NonFiniteError(f"{what}: {exc.message}", exc.hint) from exc
    result.update(
        evaluated=what,
        data=data,
        classes=classes,
        image_size=size,
        precision=prec.name if model is not None else "fp32",
        checkpoint_sha256=ckpt.sha256 if ckpt is not None and baseline is None else None,
    )
    return result


def _trained_on(ckpt: Any) -> str:
    """The data spec a checkpoint was trained on, from its own config (run.json may be gone)."""
    spec = ckpt.config.get("data")
    if not isinstance(spec, str) or not spec:
        raise DataError(
            f"{ckpt.path} does not say which data it was trained on",
            "Pass the data to measure on with --data",
        )
    return spec
