"""The training loop, as torchvision's references write one: `train_one_epoch`, `evaluate` and
`train`, in the order they run.

`train(cfg)` checks the options, locks the run folder and sets the run up (run_setup.py), then runs
`train_one_epoch` and the kNN monitor (`evaluate`) once per epoch. Rank 0 writes the checkpoint and
run.json after every epoch and every `save_every_steps` steps (checkpoint.py's `Checkpointer`), and
metrics.jsonl and curves.png after every epoch (run_folder.py: how the folder stays whole through
errors, Ctrl-C and kill -9). It prints nothing: what it reports goes to a `TrainEvents`
(train_events.py; the CLI's console: commands/train_console.py).

Reproducibility: the model is initialised from `seed`; the order of epoch e is a permutation drawn
from (seed, e); the augmentation generator of step k is seeded from (seed, e, k, rank). So a
resumed run needs no generator state and repeats, on the CPU, the uninterrupted loss curve.
Ctrl-C finishes the current step, saves and returns `interrupted=True` (a second Ctrl-C stops at once).

A run that diverges stops (NonFiniteError): each step marks on the device the first step whose loss
is NaN or inf (no sync), and the reads of the running loss the loop makes anyway (every
LOSS_READ_EVERY steps, at the end of the epoch, before every save) raise naming it; a checkpoint is
never written from NaN or inf weights (`save_checkpoint` refuses them), so the last good one stays,
and run.json says 'failed' at its epoch and step (`_diverged`).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invspread_edge_runtime.errors import InvedgeError, NonFiniteError
from invspread_edge_runtime.evaluation.datasets import ImageSet
from invspread_edge_runtime.evaluation.protocol import Embedded, knn_leave_one_out, knn_split

from . import distributed as dist_utils
from . import run_folder, run_setup
from .augment import AugmentConfig, TwoViews
from .checkpoint import Checkpointer
from .config import SCHEDULES, TrainConfig
from .data import UInt8Source, epoch_batches, step_seed
from .evaluate import embed
from .precision import Precision
from .run_setup import Monitor, RunSetup
from .train_events import EpochStats, Progress, StopFlag, TrainEvents, TrainResult

# The recipe's steps (lr × 1 until epoch 120, × 0.1 until 160, × 0.05 until 200 of a 200-epoch
# run; its × 0.01 stage starts where that run ends), as fractions of whatever length is asked for.
STEP_MILESTONES = ((0.6, 1.0), (0.8, 0.1), (1.0, 0.05))
MONITOR_BATCH = 256  # images per forward pass of the kNN monitor
LOSS_READ_EVERY = 10  # steps between reads of the running loss (each read waits for the GPU)


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
    generator = torch.Generator(device=state.device)
    model.train()
    task = None
    if progress is not None:
        task = progress.add_task(
            f"epoch {epoch + 1}/{cfg.epochs}",
            total=len(batches),
            completed=stats.steps,
            loss=float("nan"),
            lr=0.0,
            ips=0.0,
        )
    # this call's step losses, summed on the device; added to the totals every LOSS_READ_EVERY steps
    loss_acc = torch.zeros((), dtype=torch.float64, device=state.device)
    # the first step whose loss was not finite (-1: none yet), marked on the device: no sync per step
    first_bad = torch.full((), -1, dtype=torch.int64, device=state.device)
    loss_before, unread = stats.loss_sum, 0
    t_last = time.perf_counter()
    loader = state.source.batches(batches[stats.steps :])
    while stats.steps < len(batches):
        if dist_utils.broadcast_flag(state.stop.set):
            stats.interrupted = True
            break
        try:
            batch = next(loader)
        except StopIteration:
            break
        except Exception:
            if not state.stop.set:
                raise
            stats.interrupted = True  # Ctrl-C reached the loader's worker processes first
            break
        stats.skipped += len(batch.failed)
        images = batch.images
        if env.enabled:  # ranks must gather equal-sized batches
            images = images[: dist_utils.all_reduce_min_int(len(images))]
        global_step = epoch * state.steps_per_epoch + stats.steps
        lr = learning_rate(cfg.lr, global_step / state.total_steps, cfg.schedule)
        if len(images) > 0:
            generator.manual_seed(step_seed(cfg.seed, epoch, stats.steps, env.rank))
            step_loss = _train_step(model, loss_fn, optimizer, scaler, state, images, generator, lr)
            loss_acc += step_loss
            first_bad.masked_fill_((first_bad < 0) & ~torch.isfinite(step_loss), stats.steps)
            stats.images += len(images) * env.world_size
        stats.steps += 1
        unread += 1
        now = time.perf_counter()
        stats.seconds += now - t_last
        t_last = now
        due_save = cfg.save_every_steps and (global_step + 1) % cfg.save_every_steps == 0
        if unread >= LOSS_READ_EVERY or stats.steps == len(batches) or due_save:
            stats.loss_sum, unread = loss_before + _read_loss(loss_acc, first_bad, epoch, len(batches)), 0
            if task is not None:
                progress.update(task, loss=stats.loss, lr=lr, ips=stats.images_per_s)
        if task is not None:
            progress.update(task, completed=stats.steps)
        if due_save and stats.steps < len(batches):
            if state.checkpoint is not None:
                state.checkpoint.save(epoch, global_step + 1, "running", stats)
            t_last = time.perf_counter()  # saving is not training time
    stats.loss_sum = loss_before + _read_loss(loss_acc, first_bad, epoch, len(batches))
    if task is not None:
        progress.remove_task(task)
    return stats


def _read_loss(loss_acc: torch.Tensor, first_bad: torch.Tensor, epoch: int, steps: int) -> float:
    """The running loss sum (the read the loop makes anyway, every LOSS_READ_EVERY steps and before
    every save); NonFiniteError naming the first step whose loss was NaN or inf, on every rank
    when any rank saw one (a sum that saw a NaN or an inf stays so: one check covers the steps read)."""
    value = float(loss_acc.item())
    bad = int(first_bad.item()) if not math.isfinite(value) else steps
    bad = dist_utils.all_reduce_min_int(bad)  # the earliest over ranks; as is without DDP
    if bad < steps:
        what = (
            f"the loss was {value}" if not math.isfinite(value) else "another process's loss was not finite"
        )
        raise NonFiniteError(f"{what} at epoch {epoch + 1}, step {bad + 1} of {steps}")
    return value


def _train_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    state: LoopState,
    images: torch.Tensor,
    generator: torch.Generator,
    lr: float,
) -> torch.Tensor:
    """One update on n uint8 images: two augmented views of each (2n inputs), the loss between
    the views, backward and step. Returns the loss, detached, as a float64 scalar."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    images = images.to(state.device, non_blocking=True)
    v1, v2 = state.augment(images, generator)
    x = torch.cat([v1, v2])
    if state.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with state.precision.autocast():
        z = model(x)
    loss = loss_fn(z[: len(images)], z[len(images) :])
    optimizer_step(loss, optimizer, scaler)
    return loss.detach().double()


# --- the kNN monitor -----------------------------------------------------------------------------


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
    run_setup.check_options(cfg, run_dir, resume)
    with run_folder.locked(run_dir, rank == 0, events.warning):
        run = run_setup.set_up(run_dir, cfg, resume, overwrite, epochs, events)
        state = _loop_state(run, events)
        events.started(run.run_start())
        if run.checkpoint is not None and not resume:
            run.checkpoint.save(0, 0, "running")
        try:
            result = _train_epochs(run, state, events, show_progress)
        except NonFiniteError as exc:
            raise _diverged(run, exc) from exc
        dist_utils.cleanup_distributed()
        return result


def _diverged(run: RunSetup, exc: NonFiniteError) -> NonFiniteError:
    """The one line for a run whose loss or weights stopped being finite: where, what is kept (no
    checkpoint is written from NaN weights), what to do; run.json says 'failed' at the kept step."""
    cfg, folder = run.cfg, run.folder
    message = f"training diverged: {exc.message}"
    retry = f"Lower --lr (it was {cfg.lr:g}) or soften --aug and train again"
    if folder is None:  # another rank: rank 0 says the rest
        return NonFiniteError(message, retry)
    if folder.staged:  # an --overwrite whose first epoch did not finish: the old run stays
        return NonFiniteError(
            message, f"Nothing was replaced: {cfg.out} still holds the previous run. {retry}"
        )
    saved = run.checkpoint.saved if run.checkpoint is not None else None
    epochs_done, step = saved or (run.start_epoch, run.global_step)
    folder.mark_failed(epochs_done, step, message)
    if step == 0:
        return NonFiniteError(message, f"{cfg.out} holds only the initial weights. {retry} with --overwrite")
    return NonFiniteError(
        message,
        f"{cfg.out} keeps the last good checkpoint (epoch {epochs_done}, step {step}). {retry}, "
        f"from its weights with --init {cfg.out} --out NEW_RUN ('--resume {cfg.out}' repeats the same steps)",
    )


def _loop_state(run: RunSetup, events: TrainEvents) -> LoopState:
    """The loop's view of the run, with a fresh Ctrl-C flag that tells the user through `events`."""
    stop = StopFlag()
    stop.notify = events.warning
    return LoopState(
        cfg=run.cfg,
        device=run.device,
        precision=run.precision,
        augment=TwoViews(AugmentConfig.from_spec(run.augment, run.data.size, run.data.mean, run.data.std)),
        source=run.data.source,
        env=run.env,
        steps_per_epoch=run.data.steps_per_epoch,
        total_steps=run.total_steps,
        channels_last=run.channels_last,
        stop=stop,
        checkpoint=run.checkpoint,
    )


def _train_epochs(run: RunSetup, state: LoopState, events: TrainEvents, show_progress: bool) -> TrainResult:
    """From where the run stands to its last epoch or a Ctrl-C: train, monitor, write each epoch."""
    cfg, folder, checkpoint = run.cfg, run.folder, run.checkpoint
    t0 = time.perf_counter()
    images_seen, global_step = 0, run.global_step
    interrupted = kept_old = False
    bars = events.progress() if show_progress else contextlib.nullcontext(None)
    with state.stop, bars as progress:
        for epoch in range(run.start_epoch, cfg.epochs):
            stats = run.partial if epoch == run.start_epoch else EpochStats()
            stats = train_one_epoch(
                run.train_model, run.loss_fn, run.optimizer, run.scaler, state, epoch, stats, progress
            )
            images_seen += stats.images
            global_step = epoch * state.steps_per_epoch + stats.steps
            if stats.interrupted:
                interrupted = True
                # the first epoch of an --overwrite is not a result worth a finished run:
                # the old run stays, the staging goes (run_folder.locked removes it)
                kept_old = folder is not None and folder.staged
                if checkpoint is not None and not kept_old:
                    checkpoint.save(epoch, global_step, "interrupted", stats)
                break
            record = _epoch_record(epoch, global_step, stats, cfg, state.total_steps)
            last = epoch + 1 == cfg.epochs
            if run.monitor is not None and ((epoch + 1) % cfg.eval_every == 0 or last):
                if run.env.rank == 0:
                    t_eval = time.perf_counter()
                    data = run.data
                    try:
                        record["knn_accuracy"] = evaluate(
                            run.model_without_ddp,
                            run.monitor,
                            data.source,
                            data.mean,
                            data.std,
                            state,
                            progress,
                        )
                    except NonFiniteError as exc:  # finite loss, exploded weights: this epoch is not kept
                        raise NonFiniteError(
                            f"after epoch {epoch + 1}, {exc.message} (the kNN monitor)"
                        ) from exc
                    record["eval_seconds"] = round(time.perf_counter() - t_eval, 2)
                dist_utils.barrier()
            run.metrics.append(record)
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
    return TrainResult(
        run_dir=Path(cfg.out),  # as the user wrote it
        epochs_done=run.metrics[-1]["epoch"] if run.metrics else run.start_epoch,
        epochs=cfg.epochs,
        steps=global_step,
        images_seen=images_seen,
        seconds=time.perf_counter() - t0,
        metrics=run.metrics,
        interrupted=interrupted,
        skipped_images=run.info.get("skipped_images", 0),
        precision=run.precision.name,
        device=str(run.device),
        data=cfg.data,
        train_images=len(run.data.images),
        main=run.env.rank == 0,
        kept_old=kept_old,
    )


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
