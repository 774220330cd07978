"""The training loop, as torchvision's references write one: `train_one_epoch`, `evaluate` and
`train`, in the order they run.

`train(cfg)` checks everything, opens the data and builds the model and optimizer, then calls
`train_one_epoch` and the kNN monitor (`evaluate`) once per epoch; after every epoch (and every
`save_every_steps` steps) rank 0 writes the checkpoint and run.json (`Checkpointer`), and at the
end of an epoch metrics.jsonl and curves.png (run_folder.py, which also says how the folder stays
whole through errors, Ctrl-C and kill -9).

Reproducibility: the model is initialised from `seed`; the order of epoch e is a permutation drawn
from (seed, e); the augmentation generator of step k is seeded from (seed, e, k, rank). So a
resumed run needs no generator state and repeats, on the CPU, the uninterrupted loss curve.
Ctrl-C finishes the current step, saves and returns `interrupted=True` (a second Ctrl-C stops at once).

`train(cfg)` prints nothing; what it reports while it runs goes to a `TrainEvents` (the CLI's
prints: invspread_edge/commands/train_console.py).
"""

from __future__ import annotations

import contextlib
import math
import platform
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from invspread_edge_runtime.datasets import ImageSet, parse_classes
from invspread_edge_runtime.errors import CheckpointError, ConfigError, DataError, InvedgeError
from invspread_edge_runtime.evaluation import Embedded, EvalData, eval_data, knn_leave_one_out, knn_split

from . import distributed as dist_utils
from . import run_folder
from .augment import AugmentConfig, TwoViews
from .checkpoint import CHECKPOINT_NAME, Checkpoint, load_checkpoint, save_checkpoint
from .config import SCHEDULES, TrainConfig, absolute_data, check_compiler, check_config, fits
from .data import (
    UInt8Source,
    default_image_size,
    epoch_batches,
    fingerprint,
    load_split,
    mean_std,
    step_seed,
)
from .evaluate import embed
from .loss import InvariantSpreadLoss
from .model import create_model
from .precision import Precision, prefers_channels_last, resolve_device, resolve_precision
from .run_folder import RunFolder

# The recipe's steps (lr × 1 until epoch 120, × 0.1 until 160, × 0.05 until 200 of a 200-epoch
# run; its × 0.01 stage starts where that run ends), as fractions of whatever length is asked for.
STEP_MILESTONES = ((0.6, 1.0), (0.8, 0.1), (1.0, 0.05))
MONITOR_BATCH = 256  # images per forward pass of the kNN monitor


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


# --- what a run reports --------------------------------------------------------------------------


class Progress(Protocol):
    """A progress display with tasks (rich.progress.Progress is one); fields are shown as columns."""

    def add_task(self, description: str, total: float | None = ..., **fields: Any) -> Any: ...
    def update(self, task_id: Any, **fields: Any) -> None: ...
    def advance(self, task_id: Any, advance: float = 1) -> None: ...
    def remove_task(self, task_id: Any) -> None: ...


@dataclass(frozen=True)
class RunStart:
    """What a run is about to do (the console's first line)."""

    cfg: TrainConfig
    images: int
    image_size: int
    precision: str
    device: str
    world_size: int
    start_epoch: int
    start_step: int  # within start_epoch
    run_dir: Path
    resume: bool


class TrainEvents:
    """What `train` reports while it runs, on rank 0 only. This base reports nothing; the CLI's
    `TrainConsole` prints it."""

    def progress(self) -> AbstractContextManager[Progress | None]:
        """The display the epochs and the monitor draw their bars in (None: none)."""
        return contextlib.nullcontext(None)

    def started(self, start: RunStart) -> None:
        """The data, model and device are ready; the first step comes next."""

    def epoch_done(self, record: dict[str, Any], epochs: int) -> None:
        """An epoch ended and its files are written; `record` is its metrics.jsonl line."""

    def warning(self, message: str) -> None:
        """Something the user should know that does not stop the run (a Ctrl-C, a rescaled schedule)."""


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


class StopFlag:
    """First Ctrl-C: finish the step, save, stop. Second: stop now (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.set = False
        self.notify: Callable[[str], None] = TrainEvents().warning  # train() sets its events'
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
            self.notify("Ctrl-C: finishing this step and saving a checkpoint (Ctrl-C again to stop now)")


# --- the checkpoint writer -----------------------------------------------------------------------


@dataclass
class Checkpointer:
    """Rank 0's writer of everything a resume needs: checkpoint.safetensors, then run.json (so
    run.json never names a step the checkpoint does not hold)."""

    folder: RunFolder
    model: nn.Module  # the plain model: no DDP wrapper, not compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None

    def save(self, epochs_done: int, step: int, status: str, partial: EpochStats | None = None) -> None:
        """`partial`: the running totals of an epoch cut at `step` (a mid-epoch save or a Ctrl-C)."""
        extra: dict[str, Any] = {"partial_epoch": {}}
        if partial is not None:
            extra["partial_epoch"] = {k: v for k, v in asdict(partial).items() if k != "interrupted"}
        if self.scaler is not None:
            extra["scaler"] = self.scaler.state_dict()
        rng = {"torch_cpu": torch.get_rng_state()}
        config = self.folder.info["config"]
        with self.folder.write_errors():
            save_checkpoint(
                self.folder.target / CHECKPOINT_NAME,
                self.model,
                config,
                epochs_done,
                step,
                self.optimizer,
                rng,
                extra,
            )
            self.folder.write_info(epochs_done, step, status, partial.skipped if partial else 0)


def restore_partial_epoch(stored: Any) -> EpochStats:
    """The running totals of a cut epoch, validated (a checkpoint's `extra.partial_epoch`)."""
    names = {f.name: str(f.type) for f in fields(EpochStats) if f.name != "interrupted"}
    if not isinstance(stored, dict) or not all(k in names and fits(v, names[k]) for k, v in stored.items()):
        raise ValueError(f"partial_epoch is malformed: {stored!r}"[:160])
    return EpochStats(**{k: float(v) if names[k] == "float" else v for k, v in stored.items()})


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
    checkpoint: Checkpointer | None = None  # rank 0's writer of --save-every-steps checkpoints


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
    progress: Progress | None = None,
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
            if state.checkpoint is not None:
                state.checkpoint.save(epoch, global_step + 1, "running", stats)
            t_last = time.perf_counter()  # saving is not training time
    stats.loss_sum = synced_loss_sum + float(loss_acc.item())
    if task is not None:
        progress.remove_task(task)
    return stats


# --- the kNN monitor -----------------------------------------------------------------------------


@dataclass
class Monitor:
    """The fixed images the per-epoch kNN accuracy is measured on (evaluation.py's protocol)."""

    sets: EvalData  # memory None: leave-one-out on the queries (a folder)
    warned: bool = False  # a small set's k warning: once per run


def monitor_sets(cfg: TrainConfig, classes: list[int] | None) -> Monitor | None:
    """At most --eval-memory train images as memory and --eval-queries test images as queries, or
    None when the data have no labels. A folder's one set (each image memory for all the others)
    is capped by --eval-memory."""
    sets = eval_data(
        cfg.data, "knn", classes, memory=cfg.eval_memory or None, queries=cfg.eval_queries or None
    )
    if sets.queries.labels is None:
        return None
    if sets.memory is None and cfg.eval_memory != cfg.eval_queries:
        sets = eval_data(cfg.data, "knn", classes, queries=cfg.eval_memory or None)
    return Monitor(sets)


def evaluate(
    model: nn.Module,
    monitor: Monitor,
    source: UInt8Source,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    state: LoopState,
    progress: Progress | None = None,
) -> float:
    """kNN accuracy of `model`'s embeddings on the monitor's images (the paper's protocol)."""

    def embedded(images: ImageSet) -> Embedded:
        src = UInt8Source(images, source.size, source.workers, source.pin_memory)
        return embed(
            model, src, mean, std, state.device, state.precision, MONITOR_BATCH, state.channels_last, progress
        )

    queries = embedded(monitor.sets.queries)
    warn, monitor.warned = not monitor.warned, True
    if monitor.sets.memory is None:
        return knn_leave_one_out(queries, warn=warn)
    return knn_split(embedded(monitor.sets.memory), queries, warn=warn)


# --- the run -------------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    epochs: int | None = None,
    show_progress: bool = True,
    events: TrainEvents | None = None,
) -> TrainResult:
    """Train (or resume, `resume=True` with cfg.out the run folder) and return a summary.

    When resuming, the run's stored configuration is used; `epochs` may extend it (the learning
    rate schedule is then scaled to the new length). `events` hears what the run reports (nothing
    is printed without it); `show_progress=False` leaves out its progress bars. How the run folder
    stays whole (lock, staging, swap, recovery): run_folder.py.
    """
    rank = dist_utils.env_int("RANK", 0)
    events = events if events is not None and rank == 0 else TrainEvents()
    # absolute: the swap renames folders, and RUN may be the working directory (--out .)
    run_dir = Path(cfg.out).absolute()
    if resume:
        run_folder.check_resumable(run_dir)
    else:
        check_config(cfg)
        cfg.data = absolute_data(cfg.data)
        run_folder.check_new_out(run_dir, cfg.data)
    with run_folder.locked(run_dir, rank == 0, events.warning):
        return _train_in(run_dir, cfg, resume, overwrite, epochs, show_progress, events)


def _train_in(
    run_dir: Path,
    cfg: TrainConfig,
    resume: bool,
    overwrite: bool,
    epochs: int | None,
    show_progress: bool,
    events: TrainEvents,
) -> TrainResult:
    """`train` with the run folder locked: set up, then the epochs."""
    ckpt, started = None, None
    if resume:
        cfg, ckpt, started = _resumed_settings(run_dir, cfg.out, epochs, events)
    elif (holds := run_folder.held_run_files(run_dir)) and not overwrite:
        raise InvedgeError(
            f"{run_dir} already holds a run ({', '.join(holds)})",
            f"Continue it with 'invedge train --resume {run_dir}', or start over with --overwrite",
        )
    device, env, precision, channels_last = _devices(cfg)
    main = env.rank == 0

    # data: opened, measured and checked before the run folder is touched
    classes = parse_classes(cfg.classes)
    data = _open_data(cfg, classes, ckpt, run_dir, device, env)
    total_steps = data.steps_per_epoch * cfg.epochs
    monitor = monitor_sets(cfg, classes) if cfg.eval_every else None
    metrics = run_folder.read_metrics(run_dir, ckpt.epoch) if ckpt is not None else []
    info = run_folder.run_info(
        _run_config(cfg, data), _data_info(cfg, data), _environment(device, precision, env), started
    )
    # where this run writes: the run folder, or (overwriting a run) its staging folder until the swap
    folder = None
    if main and resume:
        folder = RunFolder(run_dir, info, metrics)
    elif main:
        folder = RunFolder.create(run_dir, info, metrics, replacing=bool(run_folder.held_run_files(run_dir)))
    dist_utils.barrier()

    model, model_without_ddp = _model(cfg, ckpt, env, device, channels_last)
    # the compiled module shares model's parameters; eval and checkpoints use model itself
    train_model = torch.compile(model) if cfg.compile else model
    loss_fn = InvariantSpreadLoss(cfg.temperature, cfg.negative_weight, cfg.detach_keys)
    optimizer = torch.optim.SGD(
        model_without_ddp.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    start_epoch, global_step, partial = 0, 0, EpochStats()
    if ckpt is not None:
        start_epoch, global_step, partial = _restore(ckpt, optimizer, scaler, data.steps_per_epoch, run_dir)
    checkpoint = Checkpointer(folder, model_without_ddp, optimizer, scaler) if folder is not None else None

    state = LoopState(
        cfg=cfg,
        device=device,
        precision=precision,
        augment=TwoViews(AugmentConfig(image_size=data.size, mean=data.mean, std=data.std)),
        source=data.source,
        env=env,
        steps_per_epoch=data.steps_per_epoch,
        total_steps=total_steps,
        channels_last=channels_last,
        stop=StopFlag(),
        checkpoint=checkpoint,
    )
    state.stop.notify = events.warning
    start = RunStart(
        cfg=cfg,
        images=len(data.images),
        image_size=data.size,
        precision=precision.name,
        device=str(device),
        world_size=env.world_size,
        start_epoch=start_epoch,
        start_step=partial.steps,
        run_dir=run_dir,
        resume=resume,
    )
    events.started(start)
    if checkpoint is not None and not resume:
        checkpoint.save(0, 0, "running")
    t0 = time.perf_counter()
    images_seen = 0
    interrupted = kept_old = False
    bars = events.progress() if show_progress else contextlib.nullcontext(None)
    with state.stop, bars as progress:
        for epoch in range(start_epoch, cfg.epochs):
            stats = partial if epoch == start_epoch else EpochStats()
            stats = train_one_epoch(train_model, loss_fn, optimizer, scaler, state, epoch, stats, progress)
            images_seen += stats.images
            global_step = epoch * data.steps_per_epoch + stats.steps
            if stats.interrupted:
                interrupted = True
                # the first epoch of an --overwrite is not a result worth a finished run:
                # the old run stays, the staging goes (run_folder.locked removes it)
                kept_old = folder is not None and folder.staged
                if checkpoint is not None and not kept_old:
                    checkpoint.save(epoch, global_step, "interrupted", stats)
                break
            record = _epoch_record(epoch, global_step, stats, cfg, total_steps)
            last = epoch + 1 == cfg.epochs
            if monitor is not None and ((epoch + 1) % cfg.eval_every == 0 or last):
                if main:
                    t_eval = time.perf_counter()
                    record["knn_accuracy"] = evaluate(
                        model_without_ddp, monitor, data.source, data.mean, data.std, state, progress
                    )
                    record["eval_seconds"] = round(time.perf_counter() - t_eval, 2)
                dist_utils.barrier()
            metrics.append(record)
            stop = dist_utils.broadcast_flag(state.stop.set) and not last
            if folder is not None and checkpoint is not None:
                folder.write_metrics()  # first: a kill between the two writes leaves a line the resume drops
                checkpoint.save(
                    epoch + 1, global_step, "finished" if last else "interrupted" if stop else "running"
                )
                folder.write_curves(f"{cfg.data} · {cfg.arch} width {cfg.width}")
                folder.swap_in()  # an --overwrite's first epoch is complete: it replaces the old run
                events.epoch_done(record, cfg.epochs)
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
        train_images=len(data.images),
        main=main,
        kept_old=kept_old,
    )


# --- train's steps, in the order it takes them ---------------------------------------------------


def _resumed_settings(
    run_dir: Path, out: str, epochs: int | None, events: TrainEvents
) -> tuple[TrainConfig, Checkpoint, str | None]:
    """The run's own settings and checkpoint (and when it started), checked as a new run's are."""
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


@dataclass
class TrainData:
    """The training images, opened and measured."""

    images: ImageSet
    source: UInt8Source
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str
    steps_per_epoch: int


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
    size = cfg.image_size or default_image_size(images)
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
    return TrainData(images, source, size, mean, std, data_fp, steps_per_epoch)


def _run_config(cfg: TrainConfig, data: TrainData) -> dict[str, Any]:
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
    }


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


def _model(
    cfg: TrainConfig,
    ckpt: Checkpoint | None,
    env: dist_utils.DistEnv,
    device: torch.device,
    channels_last: bool,
) -> tuple[nn.Module, nn.Module]:
    """(the model to train, wrapped in DDP when distributed; the same model without the wrapper)."""
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
    if not env.enabled:
        return model, model
    ddp = nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
    return ddp, model


def _restore(
    ckpt: Checkpoint,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    steps_per_epoch: int,
    run_dir: Path,
) -> tuple[int, int, EpochStats]:
    """Load the optimizer, scaler and generator state; (start epoch, global step, the cut epoch's totals)."""
    try:
        if ckpt.optimizer_state is not None:
            optimizer.load_state_dict(ckpt.optimizer_state)
        partial = restore_partial_epoch(ckpt.extra.get("partial_epoch", {}))
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
    if partial.steps != ckpt.step - ckpt.epoch * steps_per_epoch:
        raise CheckpointError(
            f"{run_dir}: checkpoint step {ckpt.step} does not fit its epoch {ckpt.epoch}",
            "Use an intact checkpoint written by 'invedge train'",
        )
    return ckpt.epoch, ckpt.step, partial


def _epoch_record(
    epoch: int, global_step: int, stats: EpochStats, cfg: TrainConfig, total_steps: int
) -> dict[str, Any]:
    """The epoch's metrics.jsonl line (the kNN accuracy joins it after the monitor)."""
    return {
        "epoch": epoch + 1,
        "step": global_step,
        "loss": dist_utils.all_reduce_mean(stats.loss),  # the global batch's loss
        "lr": learning_rate(cfg.lr, (global_step - 1) / total_steps, cfg.schedule),
        "images_per_s": round(stats.images_per_s, 2),
        "seconds": round(stats.seconds, 2),
        "images": stats.images,
        "skipped_images": dist_utils.all_reduce_sum_int(stats.skipped),
    }
