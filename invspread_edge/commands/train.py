"""`invedge train`: check flags, call invspread_edge.training.train, print the summary and what to run next."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

HELP = """Train an encoder without labels (Invariant and Spreading Instance Feature, Ye et al. 2019).

Examples:
  invedge train --data fashion-mnist --epochs 20 --out runs/fmnist
  invedge train --data ./my_images --image-size 64 --epochs 50 --out runs/mine
  invedge train --resume runs/fmnist
  torchrun --nproc-per-node 4 --no-python invedge train --data cifar10:~/data --out runs/c10
"""


def register(app: typer.Typer) -> None:
    @app.command("train", help=HELP)
    def train_cmd(
        data: str = typer.Option(
            None,
            "--data",
            "-d",
            help="fashion-mnist (default), cifar10:PATH, cifar100:PATH, stl10:PATH, or a folder.",
        ),
        out: Path = typer.Option(
            None, "--out", "-o", help="Run folder to create (default: runs/<data name>)."
        ),
        resume: Path = typer.Option(
            None, "--resume", help="Continue the run in this folder exactly where it stopped."
        ),
        epochs: int = typer.Option(
            None, "--epochs", help="Epochs (default 20); with --resume, train longer."
        ),
        batch_size: int = typer.Option(
            None, "--batch-size", "-b", help="Images per step per process (default 128)."
        ),
        lr: float = typer.Option(None, "--lr", help="Initial learning rate (default 0.03)."),
        schedule: str = typer.Option(
            None, "--schedule", help="step (the recipe's, default), cosine or constant."
        ),
        arch: str = typer.Option(
            None, "--arch", help="cifar_resnet18 (default), cifar_resnet34, resnet18/34/50."
        ),
        width: int = typer.Option(
            None, "--width", help="Channels of the first stage (64: the paper's; default)."
        ),
        embedding_dim: int = typer.Option(None, "--embedding-dim", help="Embedding size (default 128)."),
        image_size: int = typer.Option(
            None, "--image-size", help="Training size (default: native, 64 for folders)."
        ),
        temperature: float = typer.Option(None, "--temperature", help="Loss temperature T (default 0.1)."),
        limit: int = typer.Option(None, "--limit", help="Train on the first N images of a fixed shuffle."),
        classes: str = typer.Option(None, "--classes", help="Train on these classes only, e.g. 0-4."),
        seed: int = typer.Option(None, "--seed", help="Random seed (default 0)."),
        workers: int = typer.Option(None, "--workers", help="Decoding processes for folders (default 2)."),
        precision: str = typer.Option(None, "--precision", help="auto (default), fp32, bf16 or fp16 (CUDA)."),
        device: str = typer.Option(None, "--device", help="auto (default), cpu or cuda."),
        eval_every: int = typer.Option(
            None, "--eval-every", help="kNN accuracy every N epochs (default 1; 0: off)."
        ),
        eval_memory: int = typer.Option(
            None, "--eval-memory", help="kNN monitor memory images (default 10000; 0: all)."
        ),
        eval_queries: int = typer.Option(
            None, "--eval-queries", help="kNN monitor query images (default 2000; 0: all)."
        ),
        save_every_steps: int = typer.Option(
            None, "--save-every-steps", help="Also checkpoint every N steps."
        ),
        sync_bn: bool = typer.Option(None, "--sync-bn", help="SyncBatchNorm across processes (torchrun)."),
        compile: bool = typer.Option(
            None, "--compile", help="torch.compile the model: faster steps after a minute of compiling."
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in --out."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        from invspread_edge_runtime.errors import InvedgeError

        given = {
            k: v
            for k, v in dict(
                data=data,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                schedule=schedule,
                arch=arch,
                width=width,
                embedding_dim=embedding_dim,
                image_size=image_size,
                temperature=temperature,
                limit=limit,
                classes=classes,
                seed=seed,
                workers=workers,
                precision=precision,
                device=device,
                eval_every=eval_every,
                eval_memory=eval_memory,
                eval_queries=eval_queries,
                save_every_steps=save_every_steps,
                sync_bn=sync_bn,
                compile=compile,
            ).items()
            if v is not None
        }
        from invspread_edge.training import TrainConfig, train

        if resume is not None:
            others = sorted(k for k in given if k != "epochs") + (["out"] if out is not None else [])
            if others:
                flags = ", ".join("--" + k.replace("_", "-") for k in others)
                raise InvedgeError(
                    f"--resume continues with the run's own settings; {flags} cannot change",
                    "Only --epochs may be given with --resume",
                )
            result = train(TrainConfig(out=str(resume)), resume=True, epochs=epochs, show_progress=not quiet)
        else:
            if out is None:
                out = Path("runs") / _default_name(given.get("data", "fashion-mnist"))
            cfg = TrainConfig(out=str(out), **given)
            result = train(cfg, overwrite=overwrite, show_progress=not quiet)
        if result.main and not result.kept_old:
            _summary(result)
        if result.kept_old and result.main:
            from invspread_edge_runtime import console

            console.err.print(
                f"[yellow]interrupted[/yellow] before the new run's first epoch ended: "
                f"{result.run_dir} still holds the previous run, unchanged. Run the same command "
                "again to start over",
                highlight=False,
            )
        elif result.interrupted and result.main:
            from invspread_edge_runtime import console

            console.err.print(
                f"[yellow]interrupted[/yellow] at epoch {result.epochs_done + 1}, step {result.steps}: "
                f"checkpoint saved. Resume with: [bold]invedge train --resume {result.run_dir}[/bold]",
                highlight=False,
            )
        if result.interrupted:
            raise typer.Exit(130)


def _default_name(data: str) -> str:
    kind, _, path = data.partition(":")
    name = Path(path or data).expanduser().name if (path or "/" in data or data.startswith(".")) else data
    return (kind + "-" + name if path else name) or "train"


def _summary(result: Any) -> None:
    from rich.table import Table

    from invspread_edge_runtime import console
    from invspread_edge_runtime.files import human_size

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
        for name in ("checkpoint.safetensors", "run.json", "metrics.jsonl", "curves.png")
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
