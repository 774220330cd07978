"""`invedge build-engine`: a TensorRT engine for this GPU from an export folder or one of its ONNX files."""

from __future__ import annotations

from pathlib import Path

import typer

from .options import DlaOpt, JsonOpt, MaxBatchOpt, MinBatchOpt, OptBatchOpt, WorkspaceOpt, existing


def register(app: typer.Typer) -> None:
    app.command("build-engine")(build_engine_command)


def build_engine_command(
    model: Path = typer.Argument(
        ...,
        help="An export folder (or its run folder), or one of its ONNX files: model.onnx, model.fp16.onnx "
        "or model.int8.onnx. The engine goes beside the ONNX file it is built from.",
    ),
    precision: str = typer.Option(
        None,
        "--precision",
        help="fp32, fp16 or int8. With a folder: the artifact to build from (default: the best for "
        "TensorRT, int8 > fp16 > fp32); with a file: must match it (default: the file's own).",
    ),
    min_batch: int = MinBatchOpt,
    opt_batch: int = OptBatchOpt,
    max_batch: int = MaxBatchOpt,
    workspace_mb: int = WorkspaceOpt,
    dla: int = DlaOpt,
    out: Path = typer.Option(None, "--out", "-o", help="Engine file (default: beside MODEL, .engine)."),
    timing_cache: Path = typer.Option(
        None, "--timing-cache", help="Timing cache file, reused across builds (default: beside the engine)."
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Build a TensorRT engine (strongly typed: precision comes from the ONNX graph) with its sidecar."""
    from .. import console
    from ..files import human_size
    from ..integrity import check_artifact
    from ..metadata import read_model_meta
    from ..tensorrt import api
    from ..tensorrt.build import build_engine, check_settings, engine_path_for
    from ..tensorrt.cache import TIMING_CACHE_NAME
    from ..verify.engines import probe_plan_check

    existing(model, "model", "Pass an export folder or one of its .onnx files")
    if model.is_dir():
        model = artifact_for_tensorrt(model, precision)
    meta = read_model_meta(model)
    settings = (precision, min_batch, opt_batch, max_batch, workspace_mb)
    _, profile = check_settings(meta, str(model), *settings, dla)  # a wrong file or flag: one line, at once
    check_artifact(model, meta.checkpoint_sha256)  # (build_engine checks again: it is a library call too)
    engine_path = out or engine_path_for(model)
    timing = timing_cache or engine_path.with_name(TIMING_CACHE_NAME)
    if dla is not None:  # a device without that DLA core: one line, before "building…"
        api.check_dla_core(api.import_tensorrt(), dla, profile.max)
    console.info(f"building a TensorRT engine from {model} (takes minutes on a Jetson)…")
    check = probe_plan_check(model, meta)
    info = build_engine(model, engine_path, *settings, timing, meta=meta, check=check, dla_core=dla)
    if json_out:
        console.print_json(
            {"engine": str(info.engine_path), "sidecar": str(info.sidecar_path), **info.to_json()}
        )
        return
    key = info.key
    console.success(
        f"wrote {info.engine_path} ({human_size(info.engine_bytes)}) and {info.sidecar_path.name} "
        f"in {info.build_seconds:.1f} s"
    )
    console.info(
        f"  TensorRT {key.tensorrt_version} · {key.gpu_name} (sm {key.compute_capability}) · {key.precision} · "
        f"batch {key.profile}" + (f" · {key.device}, GPU fallback" if key.dla_core is not None else "")
    )
    console.info(f"Next: invedge embed {model} IMAGES --backend trt --out images.emb")


def artifact_for_tensorrt(folder: Path, precision: str | None) -> Path:
    """The ONNX file of an export (or run) folder to build from: `precision`'s, else TensorRT's
    preference (int8 > fp16 > fp32); never the CPU INT8 layout, which TensorRT does not accept."""
    from ..backends.select import find_artifacts, pick_artifact
    from ..tensorrt.cache import check_precision

    if precision not in (None, "int8-cpu"):  # int8-cpu: pick_artifact says TensorRT cannot run it
        check_precision(precision)  # a typo: the same line a file gets
    path, _ = pick_artifact(find_artifacts(folder), "trt", precision)
    return path
