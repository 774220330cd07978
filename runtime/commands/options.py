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
