"""What `invedge train` prints: the run's first line, progress bars, one line per epoch, the summary.

`TrainConsole` is the `TrainEvents` the verb hands to `invspread_edge.training.train`; the library
itself prints nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invspread_edge_runtime import console

from ..train_events import RunStart, TrainEvents

if TYPE_CHECKING:  # pragma: no cover
    from contextlib import AbstractContextManager

    from ..train_events import Progress, TrainResult


class TrainConsole(TrainEvents):
    """Training's reports on stderr (the summary goes to stdout: `print_result`)."""

    def progress(self) -> AbstractContextManager[Progress | None]:
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

    def started(self, start: RunStart) -> None:
        from ..model import ARCHS

        cfg = start.cfg
        where = start.device + (f" × {start.world_size} processes" if start.world_size > 1 else "")
        model = f"{cfg.arch} width {cfg.width}" if ARCHS[cfg.arch].width_configurable else cfg.arch
        console.info(
            f"[bold]invedge train[/bold] {cfg.data}: {start.images} images at {start.image_size}px · {model} · "
            f"{where} {start.precision} · batch {cfg.batch_size} · {cfg.epochs} epochs → {start.run_dir}"
        )
        details = [f"augmentation: {cfg.preset} ({start.augment})"]
        if start.size_reason:
            details.append(f"{start.image_size} px: {start.size_reason}")
        if start.init is not None:
            details.append(f"init: {start.init['summary']}")
        console.info(" · ".join(details))
        if start.resume:
            console.info(f"resuming at epoch {start.start_epoch + 1}, step {start.start_step} of that epoch")
        if cfg.compile:
            console.info("--compile: the first steps compile the model (about a minute on 2 cores)")

    def epoch_done(self, record: dict[str, Any], epochs: int) -> None:
        knn = f"  kNN {100 * record['knn_accuracy']:.2f}%" if record.get("knn_accuracy") is not None else ""
        skipped = f"  skipped {record['skipped_images']}" if record.get("skipped_images") else ""
        console.info(
            f"epoch {record['epoch']}/{epochs}  loss {record['loss']:.4f}  lr {record['lr']:.2g}  "
            f"{record['images_per_s']:.0f} img/s  {record['seconds']:.0f} s{knn}{skipped}"
        )

    def warning(self, message: str) -> None:
        console.warn(message)


def print_result(result: TrainResult) -> None:
    """Rank 0's last words: the summary and what to run next, or how the run was left."""
    if not result.main:
        return
    if result.kept_old:
        console.err.print(
            f"[yellow]interrupted[/yellow] before the new run's first epoch ended: "
            f"{result.run_dir} still holds the previous run, unchanged. Run the same command "
            "again to start over",
            highlight=False,
        )
        return
    _summary(result)
    if result.interrupted:
        console.err.print(
            f"[yellow]interrupted[/yellow] at epoch {result.epochs_done + 1}, step {result.steps}: "
            f"checkpoint saved. Resume with: [bold]invedge train --resume {result.run_dir}[/bold]",
            highlight=False,
        )


def _summary(result: TrainResult) -> None:
    from rich.table import Table

    from invspread_edge_runtime.files import human_size

    from ..run_folder import RUN_FILES

    table = Table(title="training summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("run", str(result.run_dir))
    table.add_row("data", f"{result.data} ({result.train_images} images)")
    table.add_row("device", f"{result.device} {result.precision}")
    table.add_row("epochs", f"{result.epochs_done}/{result.epochs} ({result.steps} steps)")
    minutes, secs = divmod(int(result.seconds), 60)
    ips = result.images_seen / result.seconds if result.seconds > 0 else 0
    table.add_row("this session", f"{result.images_seen} images in {minutes} min {secs} s ({ips:.0f} img/s)")
    if result.final_loss is not None:
        table.add_row("final loss", f"{result.final_loss:.4f}")
    if result.knn:
        epoch, acc = result.knn[-1]
        best_epoch, best = max(result.knn, key=lambda t: t[1])
        table.add_row(
            "kNN accuracy", f"{100 * acc:.2f}% (epoch {epoch}; best {100 * best:.2f}% at epoch {best_epoch})"
        )
    if result.skipped_images:
        table.add_row("skipped images", f"{result.skipped_images} unreadable files left out")
    written = [
        f"{name} ({human_size((result.run_dir / name).stat().st_size)})"
        for name in RUN_FILES
        if (result.run_dir / name).is_file()
    ]
    table.add_row("wrote", ", ".join(written))
    console.out.print(table)
    if not result.interrupted:
        console.out.print(
            f"Next: [bold]invedge eval {result.run_dir} --data {result.data}[/bold]   "
            f"then [bold]invedge export {result.run_dir}[/bold]",
            highlight=False,
        )
