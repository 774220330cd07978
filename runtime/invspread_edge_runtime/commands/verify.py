"""`invedge verify EXPORT`: embed the export's probe set with a backend and compare with FP32."""

from __future__ import annotations

from pathlib import Path

import typer

from ..backends.select import BACKEND_CHOICES, DEFAULT_BACKEND
from .options import JsonOpt, TrustEngineOpt


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)


def verify(
    export: Path = typer.Argument(
        ..., help="An export folder (or a run folder holding export/), or one of its .onnx files."
    ),
    backend: str = typer.Option(
        DEFAULT_BACKEND,
        "--backend",
        "-b",
        help=f"One of: {', '.join(BACKEND_CHOICES)} (auto: the one embed would pick).",
    ),
    precision: str | None = typer.Option(
        None, "--precision", "-p", help="One artifact: fp32, fp16, int8 or int8-cpu (default: every one)."
    ),
    engine: Path | None = typer.Option(
        None, "--engine", help="A TensorRT engine file to verify (backend trt; never rebuilt)."
    ),
    trust_engine: bool = TrustEngineOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Check that a backend and artifact embed like the FP32 model: mean/min cosine and top-1
    neighbour agreement on the probe set written at export, against thresholds per precision.

    Exit status 1 when any artifact fails, or differs from what the export's report.json records
    (its size or sha256: a truncated or damaged file). Examples: invedge verify runs/fmnist/export --backend trt ·
    invedge verify runs/fmnist/export --engine model.int8.engine
    """
    from .. import console
    from ..verify.export import require_all_pass, verify_export

    check = verify_export(export, backend, precision, engine, trust_engine=trust_engine)
    if json_out:
        console.print_json(
            {
                "probes": str(check.probes.folder),
                "count": len(check.probes),
                "results": [r.to_dict() for r in check.results],
                "errors": [{"precision": p, "error": e} for p, e in check.errors],
                "damaged": [
                    {"file": d.path.name, "precision": d.precision, "error": str(d)} for d in check.damaged
                ],
            }
        )
    else:
        console.print_table(_table(check.results, check.probes, check.damaged), min_width=160)
        console.out.print(
            "mean/min cosine to the FP32 embeddings; top-1: probes whose nearest other probe agrees with FP32's "
            "(near-ties count as agreeing)",
            highlight=False,
        )
    require_all_pass(check)
    console.success(f"{len(check.results)} artifact(s) embed like FP32 on {len(check.probes)} probes")


def _table(results, probes, damaged):
    from rich.table import Table

    table = Table(title=f"invedge verify: {len(probes)} probes in {probes.folder}", title_justify="left")
    headers = ("artifact", "precision", "backend", "mean cos", "min cos", "top-1", "needs", "result")
    for header in headers:
        right = header in ("mean cos", "min cos", "top-1")
        table.add_column(header, justify="right" if right else "left", no_wrap=header != "result")
    for r in results:
        t = r.thresholds
        mark = "[green]pass[/green]" if r.passed else f"[red]fail[/red]: {'; '.join(r.failures)}"
        table.add_row(
            r.model_file,
            r.precision,
            r.backend,
            f"{r.mean_cosine:.5f}",
            f"{r.min_cosine:.5f}",
            r.agreeing,
            f"≥ {t['mean_cosine']:g} / {t['min_cosine']:g} / {t['top1_agreement']:g}",
            mark,
        )
    for d in damaged:  # not run: it is not the file that was exported
        table.add_row(
            d.path.name, d.precision or "?", "-", "-", "-", "-", "-", f"[red]damaged[/red]: {d.why}"
        )
    return table
