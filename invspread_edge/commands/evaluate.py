"""`invedge eval`: kNN accuracy or unseen-class retrieval of a run, or of a baseline, by one code path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from invspread_edge.config import EVAL_BOUNDS
from invspread_edge_runtime.bounds import helped
from invspread_edge_runtime.commands.options import JsonOpt
from invspread_edge_runtime.evaluation.protocol import KNN_K, PROTOCOLS, RECALL_KS

RECALLS = "/".join(map(str, RECALL_KS))
HELP = f"""Measure a run's embedding: weighted kNN (k={KNN_K}) or retrieval (Recall@{RECALLS}, NMI).

Split data (fashion-mnist, cifar10:PATH, ...): train split as memory, test split as queries.
A folder: leave-one-out (each image a query against all the others).

Examples:
  invedge eval runs/fmnist --data fashion-mnist
  invedge eval runs/fmnist05 --classes 5-9 --protocol retrieval
  invedge eval --baseline pixels --data fashion-mnist
  invedge eval runs/fmnist --baseline untrained
"""


def register(app: typer.Typer) -> None:
    @app.command("eval", help=HELP)
    def eval_cmd(
        run: Path = typer.Argument(None, help="Run folder (holding checkpoint.safetensors)."),
        data: str = typer.Option(
            None, "--data", "-d", help="Data to measure on (default: the data the run was trained on)."
        ),
        protocol: str = typer.Option("knn", "--protocol", "-p", help=f"{' or '.join(PROTOCOLS)}."),
        classes: str = typer.Option(None, "--classes", help="Only these classes, e.g. 5-9 (unseen classes)."),
        limit: int = typer.Option(
            None,
            "--limit",
            help=helped("At most N images per set (first N of a fixed shuffle).", EVAL_BOUNDS["limit"]),
        ),
        baseline: str = typer.Option(
            None, "--baseline", help="pixels, pixels-normalized or untrained: a baseline by the same code."
        ),
        width: int = typer.Option(
            32,
            "--width",
            help=helped("Untrained baseline without a run: network width.", EVAL_BOUNDS["width"]),
        ),
        batch: int = typer.Option(
            256, "--batch", help=helped("Images per forward pass.", EVAL_BOUNDS["batch_size"])
        ),
        workers: int = typer.Option(
            2, "--workers", help=helped("Decoding processes for folders.", EVAL_BOUNDS["workers"])
        ),
        precision: str = typer.Option(
            "fp32", "--precision", help="fp32 (default, as the exported model), bf16, auto."
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        k: int = typer.Option(
            KNN_K,
            "--k",
            help=helped(
                f"kNN neighbours (the paper's {KNN_K}; fewer on small sets, with a warning).",
                EVAL_BOUNDS["k"],
            ),
        ),
        as_json: bool = JsonOpt,
    ) -> None:
        from contextlib import nullcontext

        from invspread_edge.evaluate import check_eval_options
        from invspread_edge_runtime import console
        from invspread_edge_runtime.errors import InvedgeError

        if run is None and baseline is None:
            raise InvedgeError(
                "no run given", "Pass a run folder, e.g. 'invedge eval runs/fmnist', or --baseline pixels"
            )
        # every option, whichever mode runs: a flag the mode ignores is refused too when bad
        check_eval_options(
            baseline, protocol, batch_size=batch, workers=workers, width=width, k=k, limit=limit,
            precision=precision, device=device,
        )  # fmt: skip
        progress = None if as_json else console.progress(transient=True)
        with progress if progress is not None else nullcontext():
            result = _evaluate(
                run, baseline, width, progress, data=data, protocol=protocol, classes=classes, limit=limit,
                workers=workers, k=k, batch_size=batch, precision=precision, device=device,
            )  # fmt: skip
        if as_json:
            console.print_json(result)
        else:
            _table(result)
            if run is not None and baseline is None:
                console.out.print(f"Next: [bold]invedge export {run}[/bold]", highlight=False)


def _evaluate(
    run: Path | None,
    baseline: str | None,
    width: int,
    progress: Any,
    *,
    batch_size: int,
    precision: str,
    device: str,
    **on: Any,
) -> dict[str, Any]:
    """--baseline (checked: one of BASELINES) picks the library's mode; `on`: what to measure on,
    the same for every mode."""
    from invspread_edge.evaluate import evaluate_pixels, evaluate_run, evaluate_untrained

    model = dict(batch_size=batch_size, precision=precision, device=device, progress=progress)
    if baseline is None:
        assert run is not None
        return evaluate_run(str(run), **on, **model)
    if baseline == "untrained":
        return evaluate_untrained(run=run, width=width, **on, **model)
    return evaluate_pixels(run=run, normalized=baseline == "pixels-normalized", **on)


def _table(result: dict[str, Any]) -> None:
    from rich.table import Table

    from invspread_edge_runtime import console

    table = Table(title=f"evaluation: {result['evaluated']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "data", f"{result['data']}" + (f" classes {result['classes']}" if result.get("classes") else "")
    )
    if result["protocol"] == "knn":
        how = result.get("mode", "")
        sizes = f"{result.get('memory', result['queries'])} memory, {result['queries']} queries"
        k = f"{result['k']}" + (
            f" (of {result['k_requested']}: small set)" if "k_requested" in result else ""
        )
        table.add_row("protocol", f"weighted kNN k={k} T={result['temperature']} ({how}; {sizes})")
        table.add_row("kNN accuracy", f"[green]{100 * result['knn_accuracy']:.2f}%[/green]")
    else:
        table.add_row("protocol", f"retrieval ({result['queries']} images, each a query against the others)")
        for k in RECALL_KS:
            table.add_row(f"Recall@{k}", f"{100 * result[f'recall@{k}']:.2f}%")
        table.add_row("NMI", f"{result['nmi']:.4f}")
    if result.get("skipped_images"):
        table.add_row("skipped images", str(result["skipped_images"]))
    table.add_row("input", f"{result['image_size']}px, {result['precision']}, {result['seconds']:.1f} s")
    console.out.print(table)
