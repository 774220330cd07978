"""`invedge export`: a run's checkpoint → verified ONNX (FP32), INT8 pair, FP16, TensorRT engines.

The body checks flags, loads the checkpoint, calls `invspread_edge_export.pipeline.export_model`
and prints what was written. torch, onnx and onnxruntime are imported when the command runs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from invspread_edge_runtime.commands.options import (
    JsonOpt,
    MaxBatchOpt,
    MinBatchOpt,
    OptBatchOpt,
    WorkspaceOpt,
)

METHODS = ("minmax", "entropy", "percentile")


def register(app: typer.Typer) -> None:
    app.command("export")(export)


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
    calib_count: int = typer.Option(512, "--calib-count", help="Calibration images to use."),
    calib_method: str = typer.Option("minmax", "--calib-method", help=f"One of: {', '.join(METHODS)}."),
    data: str = typer.Option(
        None, "--data", help="Images for the parity and accuracy checks (default: the run's training data)."
    ),
    accuracy_images: int = typer.Option(
        1000,
        "--accuracy-images",
        help="Held-out query images for the accuracy check (kNN memory: twice as many).",
    ),
    max_accuracy_drop: float = typer.Option(
        1.0, "--max-accuracy-drop", help="Largest accepted drop (points of kNN accuracy / Recall@1) vs FP32."
    ),
    allow_accuracy_drop: float = typer.Option(
        None,
        "--allow-accuracy-drop",
        help="Keep an artifact that drops up to this many points, with a warning.",
    ),
    min_cosine: float = typer.Option(
        0.98, "--min-cosine", help="Smallest accepted mean cosine between converted and FP32 embeddings."
    ),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (18 or newer)."),
    engine: bool = typer.Option(
        False, "--engine", help="Also build a TensorRT engine for this GPU (needs TensorRT and a GPU)."
    ),
    min_batch: int = MinBatchOpt,
    opt_batch: int = OptBatchOpt,
    max_batch: int = MaxBatchOpt,
    workspace_mb: int = WorkspaceOpt,
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace an export of another checkpoint in --out (its files go once the new export passed).",
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Export a trained encoder: ONNX with a parity check, INT8 and FP16 with an accuracy check.

    Examples: invedge export runs/fmnist --int8 · invedge export runs/fmnist --int8 --calib ./calib_images
    """
    from invspread_edge_runtime import console
    from invspread_edge_runtime.errors import InvedgeError

    if calib_method not in METHODS:
        raise InvedgeError(
            f"Invalid --calib-method {calib_method!r}. Only {', '.join(METHODS)} are supported."
        )
    if calib is not None and not int8:
        raise InvedgeError("--calib is used only with --int8", "Add --int8")
    if accuracy_images < 10:
        raise InvedgeError(f"Invalid --accuracy-images {accuracy_images}. At least 10 are needed.")
    if max_accuracy_drop < 0:
        raise InvedgeError(
            f"Invalid --max-accuracy-drop {max_accuracy_drop:g}. It is in points and must be 0 or more."
        )
    if allow_accuracy_drop is not None and allow_accuracy_drop < 0:
        raise InvedgeError(
            f"Invalid --allow-accuracy-drop {allow_accuracy_drop:g}. It is in points and must be 0 or more."
        )
    if not 0 < min_cosine <= 1:
        raise InvedgeError(f"Invalid --min-cosine {min_cosine:g}. It must be above 0 and at most 1.")
    from invspread_edge_export.onnx_export import MIN_OPSET

    if opset < MIN_OPSET:  # checked before the checkpoint loads, not after the export has begun
        raise InvedgeError(f"Invalid --opset {opset}. Only opset {MIN_OPSET} or newer is supported.")
    if out is not None:
        _check_out_folder(out, run)
    builder = _engine_builder() if engine else None  # fail now, not after minutes of export

    from invspread_edge_export.meta import meta_from_config
    from invspread_edge_export.pipeline import ExportOptions, export_lock, export_model

    from ..checkpoint import build_model, load_checkpoint

    ckpt = load_checkpoint(run)
    model = build_model(ckpt)
    meta = meta_from_config(ckpt.config, ckpt.sha256)
    assert ckpt.path is not None
    out_dir = out or ckpt.path.parent / "export"
    options = ExportOptions(
        out_dir=out_dir,
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
    )
    checkpoint = {"path": str(ckpt.path), "sha256": ckpt.sha256, "epoch": ckpt.epoch, "arch": meta.arch}
    source = data or str(ckpt.config.get("data", "fashion-mnist"))
    # one writer of the folder across the export and the engines built into it (export_model takes
    # the same lock itself, after checking its inputs; it is re-entrant)
    with export_lock(out_dir) if builder is not None else contextlib.nullcontext():
        report = export_model(model, meta, options, data=source, checkpoint=checkpoint, log=console.info)
        if builder is not None:
            for precision in [p for p in ("int8", "fp16") if report.artifact(p)] or ["fp32"]:
                onnx_path = report.artifact(precision).path  # type: ignore[union-attr]
                engine_path = onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + ".engine")
                console.info(f"building a TensorRT engine from {onnx_path.name} (minutes on a Jetson)")
                info = builder(
                    onnx_path,
                    engine_path,
                    precision=precision,
                    min_batch=min_batch,
                    opt_batch=opt_batch,
                    max_batch=max_batch,
                    workspace_mb=workspace_mb,
                    timing_cache=out_dir / "timing.cache",
                )
                report.engines.append({"engine": str(info.engine_path), **info.to_json()})
            report.write()

    for warning in report.warnings:
        console.warn(warning)
    if json_out:
        console.print_json(report.to_dict())
        return
    _print_report(report)


def _check_out_folder(out: Path, run: Path) -> None:
    """--out is an export folder (new, empty or written by an export), never a run folder, an
    embeddings folder or a folder of images: the export's files (model.onnx, report.json, probe
    images) would mix with theirs, and `embed`/`train` on that folder would pick them up."""
    from invspread_edge_runtime.errors import InvedgeError
    from invspread_edge_runtime.preprocess import IMAGE_SUFFIXES

    if not out.is_dir():
        return
    default = f"Leave --out out (the default is {run.parent if run.is_file() else run}/export) or choose a new folder"
    if (out / "checkpoint.safetensors").exists():
        raise InvedgeError(f"--out {out} is a run folder (it holds checkpoint.safetensors)", default)
    if (out / "manifest.json").exists() or (out / "embeddings.npy").exists():
        raise InvedgeError(f"--out {out} is an embeddings folder (it holds manifest.json)", default)
    for path in out.rglob("*"):
        inside = path.relative_to(out).parts
        if inside[0] == "probes" or any(part.startswith(".") for part in inside):
            continue  # an earlier export's probe set; staging folders and caches
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise InvedgeError(
                f"--out {out} holds images ({path.relative_to(out)}): the export's probe images and "
                "model files would mix with them",
                default,
            )


def _engine_builder():
    """The runtime's TensorRT engine builder, or the one-line error saying what is missing."""
    from invspread_edge_runtime.errors import MissingDependency

    try:
        from invspread_edge_runtime.tensorrt import api, build_engine
    except ImportError as exc:  # a runtime without the TensorRT module
        raise MissingDependency("invspread-edge-runtime[tensorrt]", "--engine") from exc
    api.import_tensorrt()  # MissingDependency / EngineError when TensorRT is absent or broken
    return build_engine


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
