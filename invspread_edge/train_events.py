"""What a training run tells its caller, and the one thing it hears from the user.

`train` prints nothing: it reports to a `TrainEvents` (the CLI's `TrainConsole` prints it), counts
each epoch in an `EpochStats` and returns a `TrainResult`; a Ctrl-C reaches it as a `StopFlag`.
Torch-free, so the console can be read (and imported) without the training loop.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from .config import TrainConfig


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
    size_reason: str = ""  # why this training size
    augment: str = ""  # augment_spec.describe of the run's augmentation
    init: dict[str, Any] | None = None  # what --init loaded (InitReport.to_json)


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
    """One epoch's running totals on this process; a checkpoint cut mid-epoch keeps them
    (`checkpoint.Checkpointer`), so a resumed epoch reports what an uninterrupted one would."""

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
    """First Ctrl-C: finish the step, save, stop. Second: stop now (KeyboardInterrupt).

    `notify` says so to the user; `train` sets it to its events' `warning`, which on ranks other
    than 0 is the silent base's, so only rank 0 speaks."""

    def __init__(self) -> None:
        self.set = False
        self.notify: Callable[[str], None] = TrainEvents().warning
        self._previous: Any = None

    def __enter__(self) -> StopFlag:
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
        self.notify("Ctrl-C: finishing this step and saving a checkpoint (Ctrl-C again to stop now)")
