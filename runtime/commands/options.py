"""Options shared by several commands, defined once so the same flag reads the same everywhere."""

from __future__ import annotations

from pathlib import Path

import typer

BACKENDS = ("auto", "ort-cpu", "ort-cuda", "ort-trt", "trt")

ModelArg = typer.Argument(
    ...,
    help="An exported model (.onnx), or an export folder (the runtime picks the artifact for the backend).",
)
BackendOpt = typer.Option("auto", "--backend", "-b", help=f"One of: {', '.join(BACKENDS)}.")
ThreadsOpt = typer.Option(0, "--threads", help="CPU threads for inference (0: all cores).")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout instead of a table.")
BatchOpt = typer.Option(64, "--batch", help="Images per inference call.")
OutDirOpt = typer.Option(..., "--out", "-o", help="Output path.")


def existing(path: Path, what: str) -> Path:
    from ..errors import InvedgeError

    if not path.exists():
        raise InvedgeError(f"{what} not found: {path}")
    return path


# TensorRT engine build (build-engine, export --engine): one definition, one meaning.
MinBatchOpt = typer.Option(1, "--min-batch", help="Engine: smallest batch it accepts.")
OptBatchOpt = typer.Option(
    None, "--opt-batch", help="Engine: batch TensorRT tunes for (default: --max-batch)."
)
MaxBatchOpt = typer.Option(64, "--max-batch", help="Engine: largest batch it accepts.")
WorkspaceOpt = typer.Option(1024, "--workspace-mb", help="Engine: TensorRT workspace limit in MB.")
