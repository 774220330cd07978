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

import contextlib
import math
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from invspread_edge_runtime import console
from invspread_edge_runtime.datasets import ImageSet
from invspread_edge_runtime.errors import CheckpointError, ConfigError, DataError, InvedgeError
from invspread_edge_runtime.files import (
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    os_error,
    pause_for_test,
    probe_write,
    read_json,
    remove_leftovers,
    replace_folder,
)
from invspread_edge_runtime.locks import exclusive_lock

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
    def from_dict(cls, d: dict[str, Any], source: str = "the stored settings") -> TrainConfig:
        """The known keys of `d`, each checked against its field's type (CheckpointError if not)."""
        kept = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            value = d[f.name]
            if not _fits(value, str(f.type)):
                raise CheckpointError(
                    f"{source}: setting {f.name!r} is {value!r}, not {f.type}",
                    "Use an intact checkpoint written by 'invedge train'",
                )
            kept[f.name] = float(value) if str(f.type) == "float" else value
        return cls(**kept)


def _fits(value: Any, annotation: str) -> bool:
    """Whether a JSON value has the dataclass field's type ('int', 'float', 'str | None', ...)."""
    for part in (p.strip() for p in annotation.split("|")):
        if part == "None" and value is None:
            return True
        if part == "bool" and isinstance(value, bool):
            return True
        if part == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if part == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if part == "str" and isinstance(value, str):
            return True
    return False


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
    kept_old: bool = False  # --overwrite stopped before its first epoch ended: the old run was kept

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

    The run folder is never left half-replaced, and nothing in it is touched before the new run can
    start:
    - The folder is locked (`exclusive_lock`, timeout 0) for the whole run: a second
      `invedge train --out RUN` or `--resume RUN` fails at once, naming the process that trains.
    - Everything is checked first: the options, the checkpoint (resume), the data (opened, its
      mean/std decoded, at least one batch), the kNN monitor's data, and that the folder is writable.
    - A new run in a folder that holds no run is written there directly. With `overwrite` over a
      run, the new run is built in the hidden sibling `.RUN.staging` and swapped in once it holds a
      first real result: at the end of its first epoch (checkpoint, run.json, metrics, curves).
      Until then RUN is the old run, untouched: an error, a Ctrl-C or a kill -9 before the swap
      leaves it as it was (a Ctrl-C says so; a few steps of a new run are not worth a finished one). The swap exchanges the two folders atomically (Linux renameat2; elsewhere two
      renames), after hard-linking the files the user keeps in RUN (e.g. an export/ folder) into
      the new one; so at every moment RUN is the complete old run or the complete new one.
    - The next run on RUN (train or resume) first removes what a killed run left behind: a
      staging folder, a replaced old run, temporary files of its atomic writes (see
      `recover_run_folder`).
    Test hooks (INVEDGE_TEST_PAUSE_AT, invspread_edge_runtime/files.py `pause_for_test`): checkpoint-save (a new
    checkpoint half written over an existing one), run-swap (before the swap), run-swapped (after
    the exchange, before the old run is removed).
    """
    # absolute: the swap renames folders, and RUN may be the working directory (--out .)
    run_dir = Path(cfg.out).absolute()
    if resume:
        if run_dir.is_file():
            raise InvedgeError(
                f"--resume takes a run folder, and {run_dir} is a file",
                f"Pass the folder that holds it: --resume {run_dir.parent}",
            )
        if not (run_dir / CHECKPOINT_NAME).is_file():
            load_checkpoint(run_dir)  # raises the one-line "no checkpoint" error
    else:
        check_config(cfg)
        cfg.data = _absolute_folder(cfg.data)
        if run_dir.exists() and not run_dir.is_dir():
            raise InvedgeError(f"--out {run_dir} is a file, not a folder", "Choose another --out")
        data_dir = Path(cfg.data)
        if data_dir.is_dir() and run_dir.resolve().is_relative_to(data_dir.resolve()):
            # curves.png and the export's probe images would join the training images: the next
            # run trains on them, and --resume refuses (the data's fingerprint changed)
            raise InvedgeError(
                f"--out {run_dir} is inside the training data {data_dir}",
                "Choose an --out outside the image folder",
            )
    rank = dist_utils.env_int("RANK", 0)
    lock = exclusive_lock(run_dir, "run folder", timeout=0) if rank == 0 else contextlib.nullcontext()
    with lock:
        if rank == 0:
            recover_run_folder(run_dir)
        try:
            return _train_locked(cfg, run_dir, resume, overwrite, epochs, show_progress)
        finally:
            if rank == 0:  # an error or a second Ctrl-C before the swap: drop the staged run
                with contextlib.suppress(InvedgeError):
                    recover_run_folder(run_dir)


def _train_locked(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    epochs: int | None,
    show_progress: bool,
) -> TrainResult:
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run_dir)
        stored = ckpt.config.get("train")
        if not isinstance(stored, dict):
            raise CheckpointError(f"{run_dir} was not written by 'invedge train'", "It cannot be resumed")
        cfg = TrainConfig.from_dict({**stored, "out": cfg.out}, source=str(ckpt.path))
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
            console.warn(f"training to {epochs} epochs instead of {cfg.epochs}: the lr schedule is rescaled")
            cfg.epochs = epochs
        if ckpt.epoch >= cfg.epochs:
            raise InvedgeError(
                f"{run_dir} has already trained all {cfg.epochs} epochs",
                f"Train longer with 'invedge train --resume {run_dir} --epochs N' (N > {cfg.epochs})",
            )
        _check_writable(run_dir, f"Make {run_dir} writable, then resume again")
        started = _read_run_json(run_dir).get("started")
    else:
        holds = held_run_files(run_dir)
        if holds and not overwrite:
            raise InvedgeError(
                f"{run_dir} already holds a run ({', '.join(holds)})",
                f"Continue it with 'invedge train --resume {run_dir}', or start over with --overwrite",
            )
        started = None

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

    # data: opened, measured and checked before the run folder is touched
    classes = parse_classes(cfg.classes)
    try:
        train_set = load_split(cfg.data, "train", classes, cfg.limit)
    except DataError as exc:
        if ckpt is None:
            raise
        raise DataError(
            f"{run_dir} was trained on {cfg.data!r}, which cannot be opened here ({exc.message})",
            "Put the training data back where it was, then resume again",
        ) from exc
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
    monitor = _monitor_sets(cfg, classes) if cfg.eval_every else None
    metrics = _read_metrics(run_dir, ckpt.epoch) if ckpt is not None else []

    # where this run writes: the run folder, or (overwriting a run) its staging folder until the swap
    staging: Path | None = None
    if main and not resume:
        staging = _make_target(run_dir, replacing=bool(held_run_files(run_dir)))
    dist_utils.barrier()
    write_dir = staging or run_dir

    # model, loss, optimizer
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
        try:
            if ckpt.optimizer_state is not None:
                optimizer.load_state_dict(ckpt.optimizer_state)
            partial = _partial_epoch(ckpt.extra.get("partial_epoch", {}))
            if scaler is not None and "scaler" in ckpt.extra:
                scaler.load_state_dict(ckpt.extra["scaler"])
            if "torch_cpu" in ckpt.rng:
                torch.set_rng_state(ckpt.rng["torch_cpu"])
        except (ValueError, TypeError, KeyError, RuntimeError, IndexError) as exc:
            raise CheckpointError(
                f"{ckpt.path}: the saved training state does not fit the model "
                f"({str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__})",
                "Use an intact checkpoint written by 'invedge train'",
            ) from exc
        start_epoch, global_step = ckpt.epoch, ckpt.step
        if partial.steps != global_step - start_epoch * steps_per_epoch:
            raise CheckpointError(
                f"{run_dir}: checkpoint step {global_step} does not fit its epoch {start_epoch}",
                "Use an intact checkpoint written by 'invedge train'",
            )

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
    info = _run_info(cfg, run_config, train_set, data_fp, device, precision, env)
    if isinstance(started, str):
        info["started"] = started

    def write_state(epochs_done: int, step: int, status: str, part: EpochStats | None = None) -> None:
        if not main:
            return
        with _write_errors(run_dir, staging is not None and write_dir == staging):
            _write_state(epochs_done, step, status, part)

    def _write_state(epochs_done: int, step: int, status: str, part: EpochStats | None) -> None:
        extra: dict[str, Any] = {"partial_epoch": asdict(part) if part is not None else {}}
        if part is not None:
            extra["partial_epoch"].pop("interrupted", None)
        if scaler is not None:
            extra["scaler"] = scaler.state_dict()
        rng = {"torch_cpu": torch.get_rng_state()}
        save_checkpoint(
            write_dir / CHECKPOINT_NAME,
            model_without_ddp,
            run_config,
            epochs_done,
            step,
            optimizer,
            rng,
            extra,
        )
        info.update(epoch=epochs_done, step=step, status=status, updated=_now())
        info["skipped_images"] = sum(m.get("skipped_images", 0) for m in metrics) + (
            part.skipped if part else 0
        )
        atomic_write_json(write_dir / RUN_JSON, info)

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
    interrupted = kept_old = False
    with state.stop, _progress(main and show_progress) as progress:
        for epoch in range(start_epoch, cfg.epochs):
            stats = partial if epoch == start_epoch else EpochStats()
            stats = train_one_epoch(train_model, loss_fn, optimizer, scaler, state, epoch, stats, progress)
            images_seen += stats.images
            global_step = epoch * steps_per_epoch + stats.steps
            if stats.interrupted:
                interrupted = True
                if write_dir != run_dir:
                    # the first epoch of an --overwrite is not a result worth a finished run:
                    # the old run stays, the staging goes (recover_run_folder removes it)
                    kept_old = True
                    break
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
                with _write_errors(run_dir, write_dir != run_dir):
                    atomic_write_text(write_dir / METRICS_NAME, "".join(_json_line(m) for m in metrics))
                write_state(
                    epoch + 1, global_step, "finished" if last else "interrupted" if stop else "running"
                )
                with _write_errors(run_dir, write_dir != run_dir):
                    _plot(metrics, write_dir, cfg)
                if write_dir != run_dir:  # the new run's first epoch is complete: it replaces the old
                    swap_in(write_dir, run_dir)
                    write_dir = run_dir
                _epoch_line(record, cfg)
            if stop:
                interrupted = True
                break
    seconds = time.perf_counter() - t0
    dist_utils.cleanup_distributed()
    return TrainResult(
        run_dir=Path(cfg.out),  # as the user wrote it
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
        kept_old=kept_old,
    )


def check_config(cfg: TrainConfig) -> None:
    """Reject bad options before any work, saying what is allowed."""
    problems = []
    if cfg.epochs < 1:
        problems.append("--epochs must be at least 1")
    if cfg.batch_size < 2:
        problems.append("--batch-size must be at least 2 (negatives come from the batch)")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        problems.append("--lr must be a number > 0")
    if not (math.isfinite(cfg.momentum) and 0 <= cfg.momentum < 1):
        problems.append("momentum must be in [0, 1)")
    if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        problems.append("weight decay must be >= 0")
    if cfg.width < 1:
        problems.append("--width must be at least 1")
    if cfg.embedding_dim < 1:
        problems.append("--embedding-dim must be at least 1")
    if cfg.image_size is not None and cfg.image_size < 8:
        problems.append("--image-size must be at least 8")
    if cfg.schedule not in SCHEDULES:
        problems.append(f"--schedule must be one of {', '.join(SCHEDULES)}")
    if cfg.limit is not None and cfg.limit < 1:
        problems.append("--limit must be at least 1")
    if cfg.seed < 0:
        problems.append("--seed must be >= 0")
    if min(cfg.workers, cfg.eval_every, cfg.save_every_steps, cfg.eval_memory, cfg.eval_queries) < 0:
        problems.append(
            "--workers, --eval-every, --eval-memory, --eval-queries and --save-every-steps must be >= 0"
        )
    if problems:
        raise ConfigError("; ".join(problems))
    InvariantSpreadLoss(cfg.temperature, cfg.negative_weight)  # raises ConfigError for a bad T or m
    from .model import ARCHS

    if cfg.arch not in ARCHS:
        raise ConfigError(f"Invalid architecture {cfg.arch!r}. Only {', '.join(ARCHS)} are supported.")


def check_compiler(device: torch.device) -> None:
    """torch.compile's CPU kernels are C++ (Triton on CUDA): without a compiler, say so before any
    data is loaded instead of failing with a compiler traceback at the first step."""
    cxx = os.environ.get("CXX", "g++")
    if device.type != "cuda" and not (shutil.which(cxx) or shutil.which("clang++")):
        raise InvedgeError(
            f"--compile needs a C++ compiler on the CPU ({cxx} not found)",
            "Install g++ (apt install g++) or drop --compile",
        )


# --- the run folder ------------------------------------------------------------------------------

RUN_FILES = (CHECKPOINT_NAME, RUN_JSON, METRICS_NAME, CURVES_NAME)  # what training writes in RUN


def staging_path(run_dir: Path) -> Path:
    """Where `--overwrite` builds the new run until it replaces the old one."""
    run_dir = Path(run_dir).absolute()
    return run_dir.parent / f".{run_dir.name}.staging"


def replaced_path(run_dir: Path) -> Path:
    """Where the old run waits during a swap that cannot exchange the folders atomically."""
    run_dir = Path(run_dir).absolute()
    return run_dir.parent / f".{run_dir.name}.replaced"


def held_run_files(run_dir: Path) -> list[str]:
    """Which of training's files `run_dir` holds (a folder holding any of them holds a run)."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def recover_run_folder(run_dir: Path) -> None:
    """Remove what a killed run left behind; call with the run folder's lock held.

    - `.RUN.replaced` exists only between the two renames of a non-atomic swap: the staged run
      was complete, so it is moved into place (or, without it, the old run back), then removed.
    - `.RUN.staging`: a new run that never reached its swap (the old run in RUN is intact), or,
      right after an atomic exchange, the old run: either way it goes.
    - `.NAME.*.tmp` in RUN: temporary files of atomic writes cut short (see invspread_edge_runtime/files.py).
    """
    run_dir = Path(run_dir)
    staging, replaced = staging_path(run_dir), replaced_path(run_dir)
    try:
        if replaced.exists():
            if not run_dir.exists():
                os.rename(staging if staging.is_dir() else replaced, run_dir)
                console.warn(f"{run_dir}: finished the swap of a run that was cut short")
            shutil.rmtree(replaced, ignore_errors=True)
        if staging.exists():
            shutil.rmtree(staging)
        if run_dir.is_dir():
            remove_leftovers(run_dir, RUN_FILES)
    except OSError as exc:
        raise os_error(exc, staging) from exc


def _make_target(run_dir: Path, replacing: bool) -> Path | None:
    """Create the folder this run writes to: the staging folder when replacing a run, else RUN."""
    target = staging_path(run_dir) if replacing else run_dir
    try:
        target.mkdir(parents=True, exist_ok=not replacing)
    except OSError as exc:
        raise InvedgeError(
            f"cannot create {target}: {exc.strerror}", "Choose a writable --out folder"
        ) from exc
    _check_writable(target, "Choose a writable --out folder")
    return target if replacing else None


def _check_writable(folder: Path, hint: str) -> None:
    """Create and remove a file in `folder`: permissions, a read-only or full file system show here,
    before any training, not at the first checkpoint."""
    try:
        probe_write(folder)
    except OSError as exc:
        raise InvedgeError(f"cannot write in {folder}: {exc.strerror or exc}", hint) from exc


def swap_in(staging: Path, run_dir: Path) -> None:
    """Replace the run in `run_dir` by the complete run in `staging` (see `train`'s docstring)."""
    pause_for_test("run-swap")  # test hook: the staged run complete, the old one not yet replaced
    try:
        _carry_user_files(run_dir, staging)
        with contextlib.suppress(OSError):
            shutil.copymode(run_dir, staging)
        if _exchange(staging, run_dir):
            fsync_dir(run_dir.absolute().parent)
            pause_for_test("run-swapped")  # test hook: the new run in place, the old one not yet removed
            shutil.rmtree(staging)  # now the old run
        else:
            replace_folder(staging, run_dir, replaced_path(run_dir))
    except OSError as exc:
        raise os_error(exc, run_dir) from exc


def _carry_user_files(run_dir: Path, staging: Path) -> None:
    """Hard-link (or copy) into the new run what the user keeps in RUN beside training's files."""
    for entry in run_dir.iterdir():
        dest = staging / entry.name
        if entry.name in RUN_FILES or dest.exists() or dest.is_symlink():
            continue
        if entry.name.startswith(tuple(f".{n}." for n in RUN_FILES)) and entry.name.endswith(".tmp"):
            continue  # our own cut-short temporary files
        if entry.is_symlink():
            os.symlink(os.readlink(entry), dest)
        elif entry.is_dir():
            shutil.copytree(entry, dest, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dest)


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def _write_errors(run_dir: Path, staged: bool) -> Iterator[None]:
    """A failed write of the run (disk full, permissions): one line saying what is intact and what to run."""
    try:
        yield
    except InvedgeError as exc:
        if staged:
            hint = f"Nothing was replaced: {run_dir} still holds the previous run. Fix this and run again"
        else:
            hint = (
                f"The last checkpoint in {run_dir} is intact: fix this, then continue with "
                f"'invedge train --resume {run_dir}'"
            )
        import copy

        worded = copy.copy(exc)
        worded.hint = hint
        raise worded from exc


# --- helpers -------------------------------------------------------------------------------------


@dataclass
class _Monitor:
    memory: ImageSet | None  # None: leave-one-out on queries
    queries: ImageSet
    warned: bool = False


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
    warn, monitor.warned = not monitor.warned, True  # a small set's k warning: once per run
    if monitor.memory is None:
        return knn_leave_one_out(queries, warn=warn)
    return knn_split(run(monitor.memory), queries, warn=warn)


def _absolute_folder(spec: str) -> str:
    """A folder given as a relative path, made absolute: eval, export and --resume then find the
    training images from any working directory (named sets and KIND:PATH specs stay as given)."""
    from invspread_edge_runtime.datasets import _BINARY_READERS

    if spec in ("fashion-mnist", "fashion_mnist", "fmnist") or spec.partition(":")[0] in _BINARY_READERS:
        return spec
    folder = Path(spec).expanduser()
    return str(folder.absolute()) if folder.is_dir() else spec


def _check_same_data(config: dict[str, Any], data_fp: str, run_dir: Path) -> None:
    stored = config.get("data_fingerprint")
    if stored and stored != data_fp:
        raise DataError(
            f"the training data of {run_dir} changed since the run started (fingerprint differs)",
            "Resume with the same data, or start a new run with --out NEW_DIR",
        )


def _read_metrics(run_dir: Path, epochs_done: int) -> list[dict[str, Any]]:
    """metrics.jsonl up to the checkpoint's epoch (a kill may have left a later line).

    A damaged line is refused, not dropped: the resumed run rewrites the file, which would lose it.
    """
    import json

    path = run_dir / METRICS_NAME
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"cannot read {path} ({exc.__class__.__name__})", "Make it readable, or move it away and resume"
        ) from exc
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            rec = None
        if not (isinstance(rec, dict) and _fits(rec.get("epoch"), "int") and _fits(rec.get("loss"), "float")):
            raise CheckpointError(
                f"{path} line {number} is damaged (not a metrics record)",
                "Repair or delete that line (the resumed run rewrites the file), then resume again",
            )
        if rec["epoch"] <= epochs_done:
            out.append(rec)
    return out


def _read_run_json(run_dir: Path) -> dict[str, Any]:
    """The run's run.json when it is ours; {} when there is none. Someone else's file is refused:
    resuming rewrites run.json, which would destroy it."""
    path = run_dir / RUN_JSON
    if not path.is_file():
        return {}
    try:
        info = read_json(path, "run.json")
    except InvedgeError as exc:
        raise CheckpointError(
            exc.message, "Move it out of the run folder (resuming rewrites it), then resume again"
        ) from exc
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        what = f"format {info.get('format')!r}" if isinstance(info, dict) else "not a JSON object"
        raise CheckpointError(
            f"{path} is not an 'invedge train' run.json ({what})",
            "Move it out of the run folder (resuming rewrites it), then resume again",
        )
    return info


def _partial_epoch(stored: Any) -> EpochStats:
    """The running totals of a cut epoch, validated (a checkpoint's `extra.partial_epoch`)."""
    names = {f.name: str(f.type) for f in fields(EpochStats) if f.name != "interrupted"}
    if not isinstance(stored, dict) or not all(k in names and _fits(v, names[k]) for k, v in stored.items()):
        raise ValueError(f"partial_epoch is malformed: {stored!r}"[:160])
    return EpochStats(**{k: float(v) if names[k] == "float" else v for k, v in stored.items()})


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
