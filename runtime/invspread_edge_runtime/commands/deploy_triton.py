"""`invedge deploy triton`: a Triton model repository (an ensemble taking raw images) from an export."""

from __future__ import annotations

from pathlib import Path

import typer

from ..bounds import (
    TRITON_INSTANCES,
    TRITON_MAX_BATCH,
    TRITON_PREFERRED_BATCH,
    TRITON_QUEUE_DELAY_US,
    TRITON_THREADS,
    helped,
)
from ..tensorrt.cache import DEFAULT_MAX_BATCH
from .options import DlaOpt, JsonOpt, MinBatchOpt, OptBatchOpt, WorkspaceOpt, existing

EngineOpt = typer.Option(
    False,
    "--engine",
    help="Also build a TensorRT plan on this GPU (model *_trt, platform tensorrt_plan); the ensemble uses it.",
)


def triton_command(
    export: Path = typer.Argument(..., help="An export folder (or its run folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="The Triton model repository (created if missing)."),
    name: str = typer.Option(
        None, "--name", help="Models are named invedge_NAME* (default: the run folder's name)."
    ),
    embedding: str = typer.Option(
        "onnxruntime",
        "--embedding",
        help="onnxruntime (Triton's ONNX Runtime backend) or python (a Python-backend model running "
        "ONNX Runtime on the CPU, for Triton builds without that backend).",
    ),
    device: str = typer.Option("gpu", "--device", help="gpu or cpu: where the embedding model runs."),
    precision: str = typer.Option(
        None,
        "--precision",
        help="fp32, fp16, int8 or int8-cpu (default: the best the export has for --device).",
    ),
    trt_accelerator: bool = typer.Option(
        False,
        "--trt-accelerator",
        help="ONNX Runtime backend: run the model through TensorRT at its precision.",
    ),
    max_batch: int = typer.Option(
        DEFAULT_MAX_BATCH, "--max-batch", help=helped("max_batch_size of every model.", TRITON_MAX_BATCH)
    ),
    preferred_batch: list[int] = typer.Option(
        None,
        "--preferred-batch",
        help=helped(
            "Dynamic batcher's preferred size; repeat for more (default: 8 and --max-batch).",
            TRITON_PREFERRED_BATCH,
        ),
    ),
    queue_delay_us: int = typer.Option(
        100,
        "--queue-delay-us",
        help=helped("How long a request may wait for others to batch with, in µs.", TRITON_QUEUE_DELAY_US),
    ),
    instances: int = typer.Option(
        1, "--instances", help=helped("Instances of each model.", TRITON_INSTANCES)
    ),
    threads: int = typer.Option(
        0,
        "--threads",
        help=helped("--embedding python: ONNX Runtime's threads per instance.", TRITON_THREADS),
    ),
    engine: bool = EngineOpt,
    min_batch: int = MinBatchOpt,
    opt_batch: int = OptBatchOpt,
    workspace_mb: int = WorkspaceOpt,
    dla: int = DlaOpt,
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace our models' folders in the repository (without --engine, our old *_trt plan model "
        "goes too); other models are never touched.",
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Write an ensemble (raw image bytes in, embedding out), its preprocessing and embedding models."""
    from .. import console
    from ..deploy.triton import TritonEngine, TritonOptions, write_repository
    from ..errors import ConfigError
    from ..tensorrt.build import check_profile

    plan = None
    if dla is not None and not engine:
        raise ConfigError(
            "--dla is for the TensorRT plan --engine builds", "Add --engine, or leave out --dla"
        )
    if engine:
        check_profile(min_batch, opt_batch, max_batch, workspace_mb, dla)
        plan = TritonEngine(min_batch, opt_batch, max_batch, workspace_mb, dla)
    options = TritonOptions(
        name=name,
        embedding=embedding,
        device=device,
        precision=precision,
        trt_accelerator=trt_accelerator,
        max_batch=max_batch,
        preferred_batch=tuple(preferred_batch) if preferred_batch else None,
        queue_delay_us=queue_delay_us,
        instances=instances,
        threads=threads,
        engine=plan,
        overwrite=overwrite,
    )
    options.check()  # a bad flag: one line, before the export is read
    existing(export, "export", "Pass an export folder: invedge export RUN writes one")
    result = write_repository(export, out, options, log=None if json_out else console.info)
    if json_out:
        console.print_json(result.to_dict())
        return
    console.success(f"wrote {', '.join(result.models)} into {result.repo} (from {result.artifact.name})")
    console.info(
        f"  clients call {result.ensemble}: IMAGE (encoded image bytes) → EMBEDDING; see {result.readme}"
    )
    console.info(f"Next: tritonserver --model-repository {result.repo}")
