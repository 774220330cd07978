"""`invedge export`: a run's checkpoint → verified ONNX (FP32), INT8 pair, FP16, TensorRT engines.

The body gathers the flags into `ExportOptions`, calls `invspread_edge.export_run.export_run`
(checks, the checkpoint, then `invspread_edge_export.pipeline.export_model`, which also builds
the engines) and prints what was written. torch, onnx and onnxruntime are imported when the
command runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from invspread_edge_export.accuracy_check import DEFAULT_BOUND, DEFAULT_MIN_MEAN_COSINE, DEFAULT_QUERIES
from invspread_edge_export.bounds import EXPORT_BOUNDS
from invspread_edge_export.calibration_set import DEFAULT_COUNT, DEFAULT_METHOD, METHOD_NAMES
from invspread_edge_export.onnx_export import DEFAULT_OPSET
from invspread_edge_runtime.bounds import helped
from invspread_edge_runtime.commands.options import (
    DlaOpt,
    JsonOpt,
    MaxBatchOpt,
    MinBatchOpt,
    OptBatchOpt,
    WorkspaceOpt,
)


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def _check_dla(dla: int | None, engine: bool) -> None:
    """--dla builds the engines for a DLA core (the rest of its rules: EngineOptions.check)."""
    from invspread_edge_runtime.errors import ConfigError

    if dla is not None and not engine:
        raise ConfigError("--dla is used only with --engine", f"Add --engine to build for DLA core {dla}")


def export(
    run: Path = typer.Argument(
        ..., help="A run folder (holding checkpoint.safetensors) or the checkpoint file."
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: RUN/export)."),
    int8: bool = typer.Option(
        False, "--int8", help="Also write model.int8.onnx (TensorRT/GPU) and model.int8-cpu.onnx (CPU)."
    ),
    fp16: bool = typer.Option(
        False, "--fp16", help="Also write model.fp16.onnx (normalisation kept in FP32)."
    ),
    calib: Path = typer.Option(
        None,
        "--calib",
        help="Calibrate INT8 on this folder of images (default: the shipped calibration set).",
    ),
    calib_count: int = typer.Option(
        DEFAULT_COUNT,
        "--calib-count",
        help=helped("Calibration images to use.", EXPORT_BOUNDS["calib_count"]),
    ),
    calib_method: str = typer.Option(
        DEFAULT_METHOD, "--calib-method", metavar="METHOD", help=f"One of: {', '.join(METHOD_NAMES)}."
    ),
    data: str = typer.Option(
        None, "--data", help="Images for the parity and accuracy checks (default: the run's training data)."
    ),
    accuracy_images: int = typer.Option(
        DEFAULT_QUERIES,
        "--accuracy-images",
        help=helped(
            "Held-out query images for the accuracy check (kNN memory: twice as many).",
            EXPORT_BOUNDS["accuracy_queries"],
        ),
    ),
    max_accuracy_drop: float = typer.Option(
        DEFAULT_BOUND,
        "--max-accuracy-drop",
        help=helped(
            "Largest accepted drop (points of kNN accuracy / Recall@1) vs FP32.",
            EXPORT_BOUNDS["accuracy_bound"],
        ),
    ),
    allow_accuracy_drop: float = typer.Option(
        None,
        "--allow-accuracy-drop",
        help=helped(
            "Keep an artifact that drops up to this many points, with a warning.",
            EXPORT_BOUNDS["allow_accuracy_drop"],
        ),
    ),
    min_cosine: float = typer.Option(
        DEFAULT_MIN_MEAN_COSINE,
        "--min-cosine",
        help=helped(
            "Smallest accepted mean cosine between converted and FP32 embeddings.",
            EXPORT_BOUNDS["min_mean_cosine"],
        ),
    ),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", help=helped("ONNX opset.", EXPORT_BOUNDS["opset"])),
    engine: bool = typer.Option(
        False, "--engine", help="Also build a TensorRT engine for this GPU (needs TensorRT and a GPU)."
    ),
    min_batch: int = MinBatchOpt,
    opt_batch: int = OptBatchOpt,
    max_batch: int = MaxBatchOpt,
    workspace_mb: int = WorkspaceOpt,
    dla: int = DlaOpt,
    deepstream: Path = typer.Option(
        None,
        "--deepstream",
        help="Also write an nvinfer secondary-GIE config and the graph it needs into this folder "
        "(the best artifact for TensorRT; other settings: invedge deploy deepstream).",
    ),
    triton: Path = typer.Option(
        None,
        "--triton",
        help="Also write a Triton model repository there: an ensemble taking raw images (ONNX Runtime "
        "backend on the GPU; other settings and a TensorRT plan: invedge deploy triton).",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace an export of another checkpoint in --out (its files go once the new export passed), "
        "and our earlier output in the --triton repository (our models of that name) or the --deepstream "
        "folder (our files); other files there are never touched.",
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Export a trained encoder: ONNX with a parity check, INT8 and FP16 with an accuracy check.

    Examples: invedge export runs/fmnist --int8 · invedge export runs/fmnist --int8 --calib ./calib_images
    """
    from invspread_edge_export.engines import EngineOptions
    from invspread_edge_export.pipeline import ExportOptions
    from invspread_edge_runtime import console

    from ..export_run import default_out, export_run

    _check_dla(dla, engine)
    options = ExportOptions(
        out_dir=out or default_out(run),
        int8=int8,
        fp16=fp16,
        opset=opset,
        calib=calib,
        calib_count=calib_count,
        calib_method=calib_method,
        accuracy_queries=accuracy_images,
        accuracy_memory=2 * accuracy_images,
        accuracy_bound=max_accuracy_drop,
        allow_accuracy_drop=allow_accuracy_drop,
        min_mean_cosine=min_cosine,
        overwrite=overwrite,
        engine=EngineOptions(min_batch, opt_batch, max_batch, workspace_mb, dla) if engine else None,
        deepstream=deepstream,
        triton=triton,
    )
    report = export_run(run, options, out_chosen=out is not None, data=data, log=console.info)
    for warning in report.warnings:
        console.warn(warning)
    if json_out:
        console.print_json(report.to_dict())
        return
    _print_report(report)


def _print_report(report) -> None:
    from rich import box
    from rich.table import Table

    from invspread_edge_runtime import console
    from invspread_edge_runtime.files import human_size

    table = Table(title=f"invedge export → {report.out_dir}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("file", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("checks (parity vs PyTorch; accuracy vs FP32)")
    for a in report.artifacts:
        checks = []
        if a.parity is not None:
            checks.append(f"parity min cos {a.parity.min_cosine:.6f}, max |Δ| {a.parity.max_abs_diff:.1e}")
        if a.accuracy is not None:
            r = a.accuracy
            if r.fp32 is not None and r.candidate is not None and r.drop_points is not None:
                mark = {"ok": "green", "warn": "yellow", "fail": "red"}[r.status]
                checks.append(
                    f"{r.metric} {100 * r.fp32:.2f}→{100 * r.candidate:.2f} [{mark}]({100 * (r.candidate - r.fp32):+.2f})[/]"
                )
            checks.append(
                f"cos mean {r.mean_cosine:.5f} min {r.min_cosine:.5f}, top-1 agree {100 * r.top1_agreement:.1f}%"
            )
        table.add_row(a.path.name, human_size(a.bytes), f"{a.seconds:.1f} s", "; ".join(checks) or "—")
    for e in report.engines:
        size = human_size(int(e.get("engine_bytes", 0)))
        table.add_row(Path(e["engine"]).name, size, f"{e.get('build_seconds', 0):.1f} s", "TensorRT engine")
    console.out.print(table)
    if report.calibration:
        c = report.calibration
        cached = " (ranges from cache)" if c["cache"] == "hit" else ""
        console.out.print(
            f"Calibration: {c['count']} images of {c['name']}, {c['method']}{cached}; list in {c['images_file']}"
        )
    console.out.print(
        f"Export complete ({report.seconds:.1f} s). Results saved to [bold]{report.out_dir}[/bold] (report.json)"
    )
    from invspread_edge_export.report import next_commands

    console.out.print("Next:")
    for command in next_commands(report):
        console.out.print(f"  {command}", highlight=False, markup=False)
