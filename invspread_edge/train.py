"""The training loop, as torchvision's references write one: plain functions in the order they run.

`train(cfg)` prepares the run folder, the data, the model and the optimizer, then calls
`train_one_epoch` and the kNN monitor once per epoch, writing after every epoch (and every
`save_every_steps` steps) an atomic checkpoint, metrics.jsonl, run.json and curves.png.

Reproducibility: the model is initialised from `seed`; the order of epoch e is a permutation drawn
from (seed, e); the augmentation generator of step k is seeded from (seed, e, k, rank). So a
resumed run needs no generator state and repeats, on the CPU, the uninterrupted loss curve.
Ctrl-C finishes the current step, saves and returns `interrupted=True` (a second Ctrl-C stops at once).
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from invspread_edge_runtime import console
from invspread_edge_runtime.datasets import ImageSet
from invspread_edge_runtime.errors import CheckpointError, DataError, InvedgeError
from invspread_edge_runtime.files import atomic_write_json, atomic_write_text, read_json

from . import __version__
from . import distributed as dist_utils
from .augment import AugmentConfig, TwoViews
from .checkpoint import CHECKPOINT_NAME, RUN_JSON, load_checkpoint, save_checkpoint
from .data import (
    UInt8Source,
    default_image_size,
    epoch_batches,
    fingerprint,
    load_split,
    mean_std,
    parse_classes,
    step_seed,
)
from .evaluate import Embedded, embed, knn_leave_one_out, knn_split
from .loss import InvariantSpreadLoss
from .model import create_model
from .precision import Precision, prefers_channels_last, resolve_device, resolve_precision

RUN_FORMAT = "invspread-edge/run/1"
METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"
SCHEDULES = ("step", "cosine", "constant")
# The recipe's steps (lr × 1 until epoch 120, × 0.1 until 160, × 0.05 until 200 of a 200-epoch
# run; its × 0.01 stage starts where that run ends), as fractions of whatever length is asked for.
STEP_MILESTONES = ((0.6, 1.0), (0.8, 0.1), (1.0, 0.05))


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in run.json and the checkpoint, restored by --resume."""

    data: str = "fashion-mnist"
    out: str = "runs/train"
    arch: str = "cifar_resnet18"
    width: int = 64
    embedding_dim: int = 128
    image_size: int | None = None  # None: native size of in-memory sets, 64 for folders
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"
    temperature: float = 0.1
    negative_weight: float = 1.0
    detach_keys: bool = True
    limit: int | None = None
    classes: str | None = None
    seed: int = 0
    workers: int = 2
    precision: str = "auto"
    device: str = "auto"
    channels_last: bool | None = None  # None: where faster (CUDA; bf16 on CPUs)
    sync_bn: bool = False
    compile: bool = False  # torch.compile the training forward and backward (needs a C++ compiler on CPUs)
    eval_every: int = 1  # 0: never during training
    eval_memory: int = 10000  # kNN monitor: at most this many train images as memory (0: all)
    eval_queries: int = 2000  # and this many test images as queries (0: all)
    save_every_steps: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class EpochStats:
    loss_sum: float = 0.0  # Σ step losses (float64), kept across an interruption
    steps: int = 0
    images: int = 0
    seconds: float = 0.0
    skipped: int = 0
    interrupted: bool = False

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.steps, 1)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    epochs: int
    steps: int
    images_seen: int
    seconds: float
    metrics: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    skipped_images: int = 0
    precision: str = "fp32"
    device: str = "cpu"
    data: str = ""
    train_images: int = 0
    main: bool = True  # rank 0 (the one that writes and reports)

    @property
    def final_loss(self) -> float | None:
        return self.metrics[-1]["loss"] if self.metrics else None

    @property
    def knn(self) -> list[tuple[int, float]]:
        return [(m["epoch"], m["knn_accuracy"]) for m in self.metrics if m.get("knn_accuracy") is not None]


def learning_rate(base: float, progress: float, schedule: str = "step") -> float:
    """lr at `progress` ∈ [0, 1) of the run."""
    if schedule == "step":
        for end, factor in STEP_MILESTONES:
            if progress < end:
                return base * factor
        return base * STEP_MILESTONES[-1][1]
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "constant":
        return base
    raise InvedgeError(f"Invalid schedule {schedule!r}. Only {', '.join(SCHEDULES)} are supported.")


class StopFlag:
    """First Ctrl-C: finish the step, save, stop. Second: stop now (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.set = False
        self._previous: Any = None

    def __enter__(self) -> StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        if dist_utils.is_main_process():
            console.warn("Ctrl-C: finishing this step and saving a checkpoint (Ctrl-C again to stop now)")


# --- one epoch -----------------------------------------------------------------------------------


@dataclass
class LoopState:
    """What train_one_epoch needs beyond the model: built once by train()."""

    cfg: TrainConfig
    device: torch.device
    precision: Precision
    augment: TwoViews
    source: UInt8Source
    env: dist_utils.DistEnv
    steps_per_epoch: int
    total_steps: int
    channels_last: bool
    stop: StopFlag
    save: Callable[[int, int, EpochStats], None]  # (epochs done, global step, partial epoch)


def optimizer_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """Backward and step, through the fp16 gradient scaler when there is one."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def train_one_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    state: LoopState,
    epoch: int,
    stats: EpochStats,
    progress: Any = None,
) -> EpochStats:
    """Train from step `stats.steps` of `epoch` to its end (or to a Ctrl-C); returns the epoch's totals."""
    cfg, env = state.cfg, state.env
    batches = epoch_batches(len(state.source), cfg.batch_size, cfg.seed, epoch, env.rank, env.world_size)
    start = stats.steps
    generator = torch.Generator(device=state.device)
    model.train()
    task = None
    if progress is not None:
        task = progress.add_task(
            f"epoch {epoch + 1}/{cfg.epochs}",
            total=len(batches),
            completed=start,
            loss=float("nan"),
            lr=0.0,
            ips=0.0,
        )
    loss_acc = torch.zeros((), dtype=torch.float64, device=state.device)
    synced_loss_sum = stats.loss_sum
    pending = 0
    t_last = time.perf_counter()
    it = state.source.batches(batches[start:])
    step_in_epoch = start
    while step_in_epoch < len(batches):
        if dist_utils.broadcast_flag(state.stop.set):
            stats.interrupted = True
            break
        try:
            batch = next(it)
        except StopIteration:
            break
        except Exception:
            if state.stop.set:  # Ctrl-C reached the loader's worker processes first
                stats.interrupted = True
                break
            raise
        stats.skipped += len(batch.failed)
        images = batch.images
        if env.enabled:  # ranks must gather equal-sized batches
            images = images[: dist_utils.all_reduce_min_int(len(images))]
        global_step = epoch * state.steps_per_epoch + step_in_epoch
        lr = learning_rate(cfg.lr, global_step / state.total_steps, cfg.schedule)
        if len(images) > 0:
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = images.to(state.device, non_blocking=True)
            generator.manual_seed(step_seed(cfg.seed, epoch, step_in_epoch, env.rank))
            v1, v2 = state.augment(images, generator)
            x = torch.cat([v1, v2])
            if state.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with state.precision.autocast():
                z = model(x)
            z1, z2 = z[: len(images)], z[len(images) :]
            loss = loss_fn(z1, z2)
            optimizer_step(loss, optimizer, scaler)
            loss_acc += loss.detach().double()
            stats.images += len(images) * env.world_size
        stats.steps += 1
        step_in_epoch += 1
        pending += 1
        now = time.perf_counter()
        stats.seconds += now - t_last
        t_last = now
        due_save = cfg.save_every_steps and (global_step + 1) % cfg.save_every_steps == 0
        if pending >= 10 or step_in_epoch == len(batches) or due_save:
            stats.loss_sum = synced_loss_sum + float(loss_acc.item())
            if task is not None:
                progress.update(task, loss=stats.loss, lr=lr, ips=stats.images_per_s)
        if task is not None:
            progress.update(task, completed=step_in_epoch)
        if due_save and step_in_epoch < len(batches):
            state.save(epoch, global_step + 1, stats)
            t_last = time.perf_counter()  # saving is not training time
    stats.loss_sum = synced_loss_sum + float(loss_acc.item())
    if task is not None:
        progress.remove_task(task)
    return stats


# --- the run -------------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    epochs: int | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train (or resume, `resume=True` with cfg.out the run folder) and return a summary.

    When resuming, the run's stored configuration is used; `epochs` may extend it (the learning
    rate schedule is then scaled to the new length).
    """
    run_dir = Path(cfg.out)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run_dir)
        stored = ckpt.config.get("train")
        if not isinstance(stored, dict):
            raise CheckpointError(f"{run_dir} was not written by 'invedge train'", "It cannot be resumed")
        cfg = TrainConfig.from_dict({**stored, "out": str(run_dir)})
        if epochs is not None and epochs != cfg.epochs:
            if epochs <= ckpt.epoch:
                raise InvedgeError(f"--epochs {epochs} but {run_dir} has already trained {ckpt.epoch} epochs")
            console.warn(f"training to {epochs} epochs instead of {cfg.epochs}: the lr schedule is rescaled")
            cfg.epochs = epochs
        if ckpt.epoch >= cfg.epochs:
            raise InvedgeError(
                f"{run_dir} has already trained all {cfg.epochs} epochs",
                f"Train longer with 'invedge train --resume {run_dir} --epochs N' (N > {cfg.epochs})",
            )
    check_config(cfg)

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
    main = env.rank == 0
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if main and not resume:
        prepare_run_dir(run_dir, overwrite)
    dist_utils.barrier()

    # data
    classes = parse_classes(cfg.classes)
    train_set = load_split(cfg.data, "train", classes, cfg.limit)
    size = cfg.image_size or default_image_size(train_set)
    source = UInt8Source(train_set, size, cfg.workers, pin_memory=device.type == "cuda")
    data_fp = fingerprint(train_set)
    if ckpt is not None:
        _check_same_data(ckpt.config, data_fp, run_dir)
        mean, std = tuple(ckpt.config["mean"]), tuple(ckpt.config["std"])
    else:
        mean, std = mean_std(source)
    per_step = cfg.batch_size * env.world_size
    steps_per_epoch = len(train_set) // per_step
    if steps_per_epoch == 0:
        raise DataError(
            f"{len(train_set)} training images are fewer than one batch of {per_step}",
            f"Use --batch-size {max(2, len(train_set) // env.world_size)} or more images",
        )
    total_steps = steps_per_epoch * cfg.epochs

    # model, loss, optimizer
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, width=cfg.width, embedding_dim=cfg.embedding_dim)
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state)
    if env.enabled and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model_without_ddp = model
    if env.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    # the compiled module shares model's parameters; eval and checkpoints use model itself
    train_model = torch.compile(model) if cfg.compile else model
    loss_fn = InvariantSpreadLoss(cfg.temperature, cfg.negative_weight, cfg.detach_keys)
    optimizer = torch.optim.SGD(
        model_without_ddp.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    start_epoch, global_step, partial = 0, 0, EpochStats()
    if ckpt is not None:
        if ckpt.optimizer_state is not None:
            optimizer.load_state_dict(ckpt.optimizer_state)
        start_epoch, global_step = ckpt.epoch, ckpt.step
        partial = EpochStats(**ckpt.extra.get("partial_epoch", {}))
        if scaler is not None and "scaler" in ckpt.extra:
            scaler.load_state_dict(ckpt.extra["scaler"])
        if "torch_cpu" in ckpt.rng:
            torch.set_rng_state(ckpt.rng["torch_cpu"])
        if partial.steps != global_step - start_epoch * steps_per_epoch:
            raise CheckpointError(
                f"{run_dir}: checkpoint step {global_step} does not fit its epoch {start_epoch}"
            )

    monitor = _monitor_sets(cfg, classes) if cfg.eval_every else None
    aug = TwoViews(AugmentConfig(image_size=size, mean=mean, std=std))
    run_config = {
        "arch": cfg.arch,
        "width": cfg.width,
        "embedding_dim": cfg.embedding_dim,
        "image_size": size,
        "mean": list(mean),
        "std": list(std),
        "data": cfg.data,
        "data_fingerprint": data_fp,
        "train": asdict(cfg),
    }
    metrics = _read_metrics(run_dir, start_epoch) if ckpt is not None else []
    info = _run_info(cfg, run_config, train_set, data_fp, device, precision, env)
    if ckpt is not None and (run_dir / RUN_JSON).is_file():
        info["started"] = read_json(run_dir / RUN_JSON, "run.json").get("started", info["started"])

    def write_state(epochs_done: int, step: int, status: str, part: EpochStats | None = None) -> None:
        if not main:
            return
        extra: dict[str, Any] = {"partial_epoch": asdict(part) if part is not None else {}}
        if part is not None:
            extra["partial_epoch"].pop("interrupted", None)
        if scaler is not None:
            extra["scaler"] = scaler.state_dict()
        rng = {"torch_cpu": torch.get_rng_state()}
        save_checkpoint(
            run_dir / CHECKPOINT_NAME, model_without_ddp, run_config, epochs_done, step, optimizer, rng, extra
        )
        info.update(epoch=epochs_done, step=step, status=status, updated=_now())
        info["skipped_images"] = sum(m.get("skipped_images", 0) for m in metrics) + (
            part.skipped if part else 0
        )
        atomic_write_json(run_dir / RUN_JSON, info)

    state = LoopState(
        cfg=cfg,
        device=device,
        precision=precision,
        augment=aug,
        source=source,
        env=env,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        channels_last=channels_last,
        stop=StopFlag(),
        save=lambda e, s, part: write_state(e, s, "running", part),
    )
    if main:
        _announce(cfg, train_set, size, precision, device, env, start_epoch, partial, run_dir, resume)
        if not resume:
            write_state(0, 0, "running")
    t0 = time.perf_counter()
    images_seen = 0
    interrupted = False
    with state.stop, _progress(main and show_progress) as progress:
        for epoch in range(start_epoch, cfg.epochs):
            stats = partial if epoch == start_epoch else EpochStats()
            stats = train_one_epoch(train_model, loss_fn, optimizer, scaler, state, epoch, stats, progress)
            images_seen += stats.images
            global_step = epoch * steps_per_epoch + stats.steps
            if stats.interrupted:
                interrupted = True
                write_state(epoch, global_step, "interrupted", stats)
                break
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": global_step,
                "loss": dist_utils.all_reduce_mean(stats.loss),  # the global batch's loss
                "lr": learning_rate(cfg.lr, (global_step - 1) / total_steps, cfg.schedule),
                "images_per_s": round(stats.images_per_s, 2),
                "seconds": round(stats.seconds, 2),
                "images": stats.images,
                "skipped_images": dist_utils.all_reduce_sum_int(stats.skipped),
            }
            last = epoch + 1 == cfg.epochs
            if monitor is not None and ((epoch + 1) % cfg.eval_every == 0 or last):
                if main:
                    t_eval = time.perf_counter()
                    record["knn_accuracy"] = _monitor_knn(
                        model_without_ddp, monitor, source, mean, std, state, progress
                    )
                    record["eval_seconds"] = round(time.perf_counter() - t_eval, 2)
                dist_utils.barrier()
            metrics.append(record)
            stop = dist_utils.broadcast_flag(state.stop.set) and not last
            if main:
                # metrics first: a kill between the two writes leaves a line the resume drops
                atomic_write_text(run_dir / METRICS_NAME, "".join(_json_line(m) for m in metrics))
                write_state(
                    epoch + 1, global_step, "finished" if last else "interrupted" if stop else "running"
                )
                _plot(metrics, run_dir, cfg)
                _epoch_line(record, cfg)
            if stop:
                interrupted = True
                break
    seconds = time.perf_counter() - t0
    dist_utils.cleanup_distributed()
    return TrainResult(
        run_dir=run_dir,
        epochs_done=metrics[-1]["epoch"] if metrics else start_epoch,
        epochs=cfg.epochs,
        steps=global_step,
        images_seen=images_seen,
        seconds=seconds,
        metrics=metrics,
        interrupted=interrupted,
        skipped_images=info.get("skipped_images", 0),
        precision=precision.name,
        device=str(device),
        data=cfg.data,
        train_images=len(train_set),
        main=main,
    )


def check_config(cfg: TrainConfig) -> None:
    """Reject bad options before any work, saying what is allowed."""
    problems = []
    if cfg.epochs < 1:
        problems.append("--epochs must be at least 1")
    if cfg.batch_size < 2:
        problems.append("--batch-size must be at least 2 (negatives come from the batch)")
    if cfg.lr <= 0:
        problems.append("--lr must be > 0")
    if cfg.width < 1:
        problems.append("--width must be at least 1")
    if cfg.image_size is not None and cfg.image_size < 8:
        problems.append("--image-size must be at least 8")
    if cfg.schedule not in SCHEDULES:
        problems.append(f"--schedule must be one of {', '.join(SCHEDULES)}")
    if cfg.workers < 0 or cfg.eval_every < 0 or cfg.save_every_steps < 0:
        problems.append("--workers, --eval-every and --save-every-steps must be >= 0")
    if problems:
        raise InvedgeError("; ".join(problems))
    InvariantSpreadLoss(cfg.temperature, cfg.negative_weight)  # raises for a bad T or m
    from .model import ARCHS

    if cfg.arch not in ARCHS:
        raise InvedgeError(f"Invalid architecture {cfg.arch!r}. Only {', '.join(ARCHS)} are supported.")


def check_compiler(device: torch.device) -> None:
    """torch.compile's CPU kernels are C++ (Triton on CUDA): without a compiler, say so before any
    data is loaded instead of failing with a compiler traceback at the first step."""
    cxx = os.environ.get("CXX", "g++")
    if device.type != "cuda" and not (shutil.which(cxx) or shutil.which("clang++")):
        raise InvedgeError(
            f"--compile needs a C++ compiler on the CPU ({cxx} not found)",
            "Install g++ (apt install g++) or drop --compile",
        )


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to clobber a run unless asked; with --overwrite remove only what training writes."""
    ours = [CHECKPOINT_NAME, RUN_JSON, METRICS_NAME, CURVES_NAME]
    if run_dir.exists() and not run_dir.is_dir():
        raise InvedgeError(f"--out {run_dir} is a file, not a folder")
    existing = [name for name in ours if (run_dir / name).exists()]
    if existing and not overwrite:
        raise InvedgeError(
            f"{run_dir} already holds a run ({', '.join(existing)})",
            f"Continue it with 'invedge train --resume {run_dir}', or start over with --overwrite",
        )
    for name in existing:
        (run_dir / name).unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvedgeError(
            f"cannot create {run_dir}: {exc.strerror}", "Choose a writable --out folder"
        ) from exc


# --- helpers -------------------------------------------------------------------------------------


@dataclass
class _Monitor:
    memory: ImageSet | None  # None: leave-one-out on queries
    queries: ImageSet


def _monitor_sets(cfg: TrainConfig, classes: list[int] | None) -> _Monitor | None:
    """A fixed subset for the per-epoch kNN accuracy, or None when the data have no labels."""
    from invspread_edge_runtime.datasets import open_dataset

    from .data import select

    test = open_dataset(cfg.data, "test")
    if test.labels is None:
        return None
    if test.paths is not None:  # a folder: leave-one-out
        return _Monitor(None, select(test, classes, cfg.eval_memory or None))
    train = open_dataset(cfg.data, "train")
    return _Monitor(
        select(train, classes, cfg.eval_memory or None), select(test, classes, cfg.eval_queries or None)
    )


def _monitor_knn(
    model: nn.Module,
    monitor: _Monitor,
    source: UInt8Source,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    state: LoopState,
    progress: Any,
) -> float:
    def run(images: ImageSet) -> Embedded:
        src = UInt8Source(images, source.size, source.workers, source.pin_memory)
        return embed(model, src, mean, std, state.device, state.precision, 256, state.channels_last, progress)

    queries = run(monitor.queries)
    if monitor.memory is None:
        return knn_leave_one_out(queries)
    return knn_split(run(monitor.memory), queries)


def _check_same_data(config: dict[str, Any], data_fp: str, run_dir: Path) -> None:
    stored = config.get("data_fingerprint")
    if stored and stored != data_fp:
        raise DataError(
            f"the training data of {run_dir} changed since the run started (fingerprint differs)",
            "Resume with the same data, or start a new run with --out NEW_DIR",
        )


def _read_metrics(run_dir: Path, epochs_done: int) -> list[dict[str, Any]]:
    """metrics.jsonl up to the checkpoint's epoch (a kill may have left a later line)."""
    import json

    path = run_dir / METRICS_NAME
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("epoch", 0) <= epochs_done:
                out.append(rec)
    return out


def _json_line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record) + "\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_info(
    cfg: TrainConfig,
    run_config: dict[str, Any],
    train_set: ImageSet,
    data_fp: str,
    device: torch.device,
    precision: Precision,
    env: dist_utils.DistEnv,
) -> dict[str, Any]:
    import torchvision

    return {
        "format": RUN_FORMAT,
        "status": "running",
        "epoch": 0,
        "step": 0,
        "config": run_config,
        "preprocessing": {
            "image_size": run_config["image_size"],
            "mean": run_config["mean"],
            "std": run_config["std"],
            "resize": "shorter_side_center_crop",
            "interpolation": "bilinear",
            "channels": "RGB",
        },
        "data": {
            "spec": cfg.data,
            "name": train_set.name,
            "images": len(train_set),
            "labelled": train_set.labels is not None,
            "classes": cfg.classes,
            "limit": cfg.limit,
            "fingerprint": data_fp,
        },
        "environment": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor(),
            "precision": precision.name,
            "world_size": env.world_size,
            "threads": torch.get_num_threads(),
        },
        "versions": {
            "invspread_edge": __version__,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "files": {"checkpoint": CHECKPOINT_NAME, "metrics": METRICS_NAME, "curves": CURVES_NAME},
        "started": _now(),
        "updated": _now(),
        "skipped_images": 0,
    }


def _plot(metrics: list[dict[str, Any]], run_dir: Path, cfg: TrainConfig) -> None:
    from .plots import plot_curves

    plot_curves(metrics, run_dir / CURVES_NAME, f"{cfg.data} · {cfg.arch} width {cfg.width}")


def _progress(enabled: bool) -> Any:
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import ProgressColumn
    from rich.text import Text

    class FieldColumn(ProgressColumn):
        """A task field, formatted; blank for tasks without it (the kNN monitor's embedding bar)."""

        def __init__(self, name: str, fmt: str) -> None:
            super().__init__()
            self.name, self.fmt = name, fmt

        def render(self, task: Any) -> Text:
            value = task.fields.get(self.name)
            return Text(self.fmt.format(value) if value is not None else "")

    return console.progress(
        FieldColumn("loss", "loss {:.4f}"),
        FieldColumn("lr", "lr {:.2g}"),
        FieldColumn("ips", "{:.0f} img/s"),
        transient=True,
    )


def _announce(
    cfg: TrainConfig,
    train_set: ImageSet,
    size: int,
    precision: Precision,
    device: torch.device,
    env: dist_utils.DistEnv,
    start_epoch: int,
    partial: EpochStats,
    run_dir: Path,
    resume: bool,
) -> None:
    from .model import ARCHS

    where = f"{device}" + (f" × {env.world_size} processes" if env.enabled else "")
    model = f"{cfg.arch} width {cfg.width}" if ARCHS[cfg.arch].width_configurable else cfg.arch
    console.info(
        f"[bold]invedge train[/bold] {cfg.data}: {len(train_set)} images at {size}px · {model} · "
        f"{where} {precision.name} · batch {cfg.batch_size} · {cfg.epochs} epochs → {run_dir}"
    )
    if resume:
        console.info(f"resuming at epoch {start_epoch + 1}, step {partial.steps} of that epoch")
    if cfg.compile:
        console.info("--compile: the first steps compile the model (about a minute on 2 cores)")


def _epoch_line(record: dict[str, Any], cfg: TrainConfig) -> None:
    knn = f"  kNN {100 * record['knn_accuracy']:.2f}%" if record.get("knn_accuracy") is not None else ""
    skipped = f"  skipped {record['skipped_images']}" if record.get("skipped_images") else ""
    console.info(
        f"epoch {record['epoch']}/{cfg.epochs}  loss {record['loss']:.4f}  lr {record['lr']:.2g}  "
        f"{record['images_per_s']:.0f} img/s  {record['seconds']:.0f} s{knn}{skipped}"
    )
