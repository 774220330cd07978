"""Everything `train` sets up before its first step (`check_options`, then `set_up` → `RunSetup`).

A TrainConfig, or a resumed run's own settings, becomes: the device, process group (torchrun's)
and precision; the training images, opened, measured and checked; the kNN monitor's images; the
config record the checkpoint and run.json carry; rank 0's run folder; the model, loss, optimizer
and scaler, restored from the checkpoint on a resume. All of it is checked before the run folder
is touched (run_folder.py says how the folder stays whole).
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invspread_edge_runtime.errors import CheckpointError, ConfigError, DataError, InvedgeError
from invspread_edge_runtime.evaluation.datasets import ImageSet, parse_classes
from invspread_edge_runtime.evaluation.protocol import EvalData, eval_data

from . import augment_spec, run_folder
from . import distributed as dist_utils
from .checkpoint import Checkpoint, Checkpointer, load_checkpoint, restore_training_state
from .config import TRAIN_BOUNDS, TrainConfig, absolute_data, absolute_init, check_compiler, check_config
from .data import UInt8Source, default_image_size, fingerprint, load_split, mean_std
from .init_weights import InitReport, load_init
from .loss import InvariantSpreadLoss
from .model import create_model
from .precision import Precision, prefers_channels_last, resolve_device, resolve_precision
from .run_folder import RunFolder
from .train_events import EpochStats, RunStart, TrainEvents


@dataclass
class TrainData:
    """The training images, opened and measured."""

    images: ImageSet
    source: UInt8Source
    size: int
    size_reason: str  # why this size (the console says it)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str
    steps_per_epoch: int


@dataclass
class Monitor:
    """The fixed images the per-epoch kNN accuracy is measured on (the runtime's `evaluation.protocol`)."""

    sets: EvalData  # memory None: leave-one-out on the queries (a folder)
    warned: bool = False  # a small set's k warning: once per run


@dataclass
class RunSetup:
    """A run ready for its first step (or, resumed, for the step where it stopped)."""

    cfg: TrainConfig
    run_dir: Path
    resume: bool
    device: torch.device
    env: dist_utils.DistEnv
    precision: Precision
    channels_last: bool
    data: TrainData
    monitor: Monitor | None  # None: no kNN monitor (--eval-every 0, or unlabelled images)
    metrics: list[dict[str, Any]]  # metrics.jsonl's records so far
    info: dict[str, Any]  # run.json's content
    folder: RunFolder | None  # rank 0's
    checkpoint: Checkpointer | None  # rank 0's
    model: nn.Module  # DDP-wrapped when distributed
    model_without_ddp: nn.Module  # what the monitor and the checkpoint use
    train_model: nn.Module  # `model`, compiled with --compile (it shares model's parameters)
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    start_epoch: int
    global_step: int
    partial: EpochStats  # the totals of start_epoch's steps done before a resume
    augment: dict[str, Any]  # the AugmentConfig fields of cfg.preset and cfg.aug, resolved once
    init: dict[str, Any] | None  # what --init loaded (InitReport.to_json), kept across resumes

    @property
    def total_steps(self) -> int:
        return self.data.steps_per_epoch * self.cfg.epochs

    def run_start(self) -> RunStart:
        return RunStart(
            cfg=self.cfg,
            images=len(self.data.images),
            image_size=self.data.size,
            precision=self.precision.name,
            device=str(self.device),
            world_size=self.env.world_size,
            start_epoch=self.start_epoch,
            start_step=self.partial.steps,
            run_dir=self.run_dir,
            resume=self.resume,
            size_reason=self.data.size_reason,
            augment=augment_spec.describe(self.augment),
            init=self.init,
        )


def check_options(cfg: TrainConfig, run_dir: Path, resume: bool) -> None:
    """What can be checked before the run folder is locked: a new run's options (its data made
    absolute) and --out; a resume's folder (its own settings are checked by `set_up`)."""
    if resume:
        run_folder.check_resumable(run_dir)
    else:
        check_config(cfg)
        cfg.data = absolute_data(cfg.data)
        cfg.aug = augment_spec.canonical(augment_spec.resolve(cfg.preset, cfg.aug))  # every value, stored
        if cfg.init is not None:
            cfg.init = absolute_init(cfg.init)
        run_folder.check_new_out(run_dir, cfg.data)


def set_up(
    run_dir: Path, cfg: TrainConfig, resume: bool, overwrite: bool, epochs: int | None, events: TrainEvents
) -> RunSetup:
    """Settings, devices and data first (each checked before the run folder is touched), then
    rank 0's run folder, then the model, optimizer and scaler (restored on a resume)."""
    ckpt, started = None, None
    if resume:
        cfg, ckpt, started = _resumed_settings(run_dir, cfg.out, epochs, events)
    elif (holds := run_folder.held_run_files(run_dir)) and not overwrite:
        raise InvedgeError(
            f"{run_dir} already holds a run ({', '.join(holds)})",
            f"Continue it with 'invedge train --resume {run_dir}', or start over with --overwrite",
        )
    device, env, precision, channels_last = _devices(cfg)
    classes = parse_classes(cfg.classes)
    data = _open_data(cfg, classes, ckpt, run_dir, device, env)
    monitor = monitor_sets(cfg, classes) if cfg.eval_every else None
    metrics = run_folder.read_metrics(run_dir, ckpt.epoch) if ckpt is not None else []
    base, init = _base_model(cfg, ckpt)
    augment = augment_spec.resolve(cfg.preset, cfg.aug)
    info = run_folder.run_info(
        _run_config(cfg, data, augment, init),
        _data_info(cfg, data),
        _environment(device, precision, env),
        started,
    )
    folder = _open_run_folder(run_dir, info, metrics, resume) if env.rank == 0 else None
    dist_utils.barrier()

    model, model_without_ddp = _placed(base, cfg, env, device, channels_last)
    train_model = torch.compile(model) if cfg.compile else model
    loss_fn = InvariantSpreadLoss(cfg.temperature, cfg.negative_weight, cfg.detach_keys)
    optimizer = torch.optim.SGD(
        model_without_ddp.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    start_epoch, global_step, partial = 0, 0, EpochStats()
    if ckpt is not None:
        start_epoch, global_step, partial = restore_training_state(
            ckpt, optimizer, scaler, data.steps_per_epoch, run_dir
        )
    return RunSetup(
        cfg=cfg,
        run_dir=run_dir,
        resume=resume,
        device=device,
        env=env,
        precision=precision,
        channels_last=channels_last,
        data=data,
        monitor=monitor,
        metrics=metrics,
        info=info,
        folder=folder,
        checkpoint=Checkpointer(folder, model_without_ddp, optimizer, scaler) if folder is not None else None,
        model=model,
        model_without_ddp=model_without_ddp,
        train_model=train_model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scaler=scaler,
        start_epoch=start_epoch,
        global_step=global_step,
        partial=partial,
        augment=augment,
        init=init,
    )


def monitor_sets(cfg: TrainConfig, classes: list[int] | None) -> Monitor | None:
    """At most --eval-memory train images as memory and --eval-queries test images as queries, or
    None when the data have no labels. A folder's one set (each image memory for all the others)
    is capped by --eval-memory."""
    sets = eval_data(
        cfg.data,
        "knn",
        classes,
        memory=cfg.eval_memory or None,
        queries=cfg.eval_queries or None,
        folder_cap="memory",
    )
    if sets.queries.labels is None:
        return None
    return Monitor(sets)


# --- set_up's steps, in the order it takes them --------------------------------------------------


def _resumed_settings(
    run_dir: Path, out: str, epochs: int | None, events: TrainEvents
) -> tuple[TrainConfig, Checkpoint, str | None]:
    """The run's own settings and checkpoint (and when it started), checked as a new run's are."""
    if epochs is not None:
        TRAIN_BOUNDS["epochs"].check(epochs)
    ckpt = load_checkpoint(run_dir)
    stored = ckpt.config.get("train")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{run_dir} was not written by 'invedge train'", "It cannot be resumed")
    cfg = TrainConfig.from_dict({**stored, "out": out}, source=str(ckpt.path))
    try:
        check_config(cfg)
    except InvedgeError as exc:
        raise CheckpointError(
            f"{ckpt.path} stores settings training rejects ({exc.message})",
            "Use an intact checkpoint written by 'invedge train'",
        ) from exc
    if epochs is not None and epochs != cfg.epochs:
        if epochs <= ckpt.epoch:
            raise ConfigError(
                f"--epochs {epochs} but {run_dir} has already trained {ckpt.epoch} epochs",
                f"Pass --epochs above {ckpt.epoch} to train longer",
            )
        events.warning(f"training to {epochs} epochs instead of {cfg.epochs}: the lr schedule is rescaled")
        cfg.epochs = epochs
    if ckpt.epoch >= cfg.epochs:
        raise InvedgeError(
            f"{run_dir} has already trained all {cfg.epochs} epochs",
            f"Train longer with 'invedge train --resume {run_dir} --epochs N' (N > {cfg.epochs})",
        )
    run_folder.check_writable(run_dir, f"Make {run_dir} writable, then resume again")
    started = run_folder.read_run_json(run_dir).get("started")
    return cfg, ckpt, started if isinstance(started, str) else None


def _devices(cfg: TrainConfig) -> tuple[torch.device, dist_utils.DistEnv, Precision, bool]:
    """The device, the process group (torchrun's), the precision and the memory format."""
    device = resolve_device(cfg.device)
    if cfg.compile:
        check_compiler(device)
    env = dist_utils.init_distributed(device.type)
    if device.type == "cuda" and env.enabled:
        device = torch.device("cuda", env.local_rank)
    precision = resolve_precision(cfg.precision, device)
    if cfg.sync_bn and device.type != "cuda":
        raise InvedgeError(
            "--sync-bn needs CUDA GPUs (torch's SyncBatchNorm runs on GPUs only)", "Drop --sync-bn"
        )
    channels_last = prefers_channels_last(precision) if cfg.channels_last is None else cfg.channels_last
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device, env, precision, channels_last


def _open_data(
    cfg: TrainConfig,
    classes: list[int] | None,
    ckpt: Checkpoint | None,
    run_dir: Path,
    device: torch.device,
    env: dist_utils.DistEnv,
) -> TrainData:
    """Open the training images, check they are the run's own (resume) and fill at least one step."""
    try:
        images = load_split(cfg.data, "train", classes, cfg.limit)
    except DataError as exc:
        if ckpt is None:
            raise
        raise DataError(
            f"{run_dir} was trained on {cfg.data!r}, which cannot be opened here ({exc.message})",
            "Put the training data back where it was, then resume again",
        ) from exc
    if ckpt is not None:  # the size it started at, whatever the default rule would pick
        size, why = int(ckpt.config["image_size"]), "the run's own size"
    elif cfg.image_size is not None:
        size, why = cfg.image_size, "--image-size"
    else:
        size, why = default_image_size(images)
    source = UInt8Source(images, size, cfg.workers, pin_memory=device.type == "cuda")
    data_fp = fingerprint(images)
    if ckpt is not None:
        run_folder.check_same_data(ckpt.config, data_fp, run_dir)
        mean, std = tuple(ckpt.config["mean"]), tuple(ckpt.config["std"])
    else:
        mean, std = mean_std(source)
    per_step = cfg.batch_size * env.world_size
    steps_per_epoch = len(images) // per_step
    if steps_per_epoch == 0:
        raise DataError(
            f"{len(images)} training images are fewer than one batch of {per_step}",
            f"Use --batch-size {max(2, len(images) // env.world_size)} or more images",
        )
    return TrainData(images, source, size, why, mean, std, data_fp, steps_per_epoch)


def _run_config(
    cfg: TrainConfig, data: TrainData, augment: dict[str, Any], init: dict[str, Any] | None
) -> dict[str, Any]:
    """The checkpoint's config: what eval, export and the runtime need, and the settings for --resume."""
    return {
        "arch": cfg.arch,
        "width": cfg.width,
        "embedding_dim": cfg.embedding_dim,
        "image_size": data.size,
        "mean": list(data.mean),
        "std": list(data.std),
        "data": cfg.data,
        "data_fingerprint": data.fingerprint,
        "train": asdict(cfg),
        "augment": {"preset": cfg.preset, "spec": augment_spec.canonical(augment), **_jsonable(augment)},
        "init": init,
    }


def _jsonable(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}


def _data_info(cfg: TrainConfig, data: TrainData) -> dict[str, Any]:
    return {
        "spec": cfg.data,
        "name": data.images.name,
        "images": len(data.images),
        "labelled": data.images.labels is not None,
        "classes": cfg.classes,
        "limit": cfg.limit,
        "fingerprint": data.fingerprint,
    }


def _environment(device: torch.device, precision: Precision, env: dist_utils.DistEnv) -> dict[str, Any]:
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "precision": precision.name,
        "world_size": env.world_size,
        "threads": torch.get_num_threads(),
    }


def _open_run_folder(
    run_dir: Path, info: dict[str, Any], metrics: list[dict[str, Any]], resume: bool
) -> RunFolder:
    """Where rank 0 writes: the run folder, or (overwriting a run) its staging folder until the swap."""
    if resume:
        return RunFolder(run_dir, info, metrics)
    return RunFolder.create(run_dir, info, metrics, replacing=bool(run_folder.held_run_files(run_dir)))


def _base_model(cfg: TrainConfig, ckpt: Checkpoint | None) -> tuple[nn.Module, dict[str, Any] | None]:
    """The encoder on the CPU, from the seed, then the checkpoint's weights (a resume) or --init's
    (a new run); and what --init loaded, as the run records it."""
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, width=cfg.width, embedding_dim=cfg.embedding_dim)
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt.model_state)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{ckpt.path}: weights do not fit architecture {cfg.arch!r} width {cfg.width} "
                f"({str(exc).splitlines()[0]})",
                "Use an intact checkpoint written by 'invedge train'",
            ) from exc
        init = ckpt.config.get("init")
        return model, init if isinstance(init, dict) else None
    if cfg.init is None:
        return model, None
    report: InitReport = load_init(cfg.init, model, cfg.arch)
    return model, {**report.to_json(), "summary": report.summary()}


def _placed(
    model: nn.Module, cfg: TrainConfig, env: dist_utils.DistEnv, device: torch.device, channels_last: bool
) -> tuple[nn.Module, nn.Module]:
    """(the model to train, wrapped in DDP when distributed; the same model without the wrapper)."""
    if env.enabled and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if not env.enabled:
        return model, model
    ddp = nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
    return ddp, model
