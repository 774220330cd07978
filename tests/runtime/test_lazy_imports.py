"""Importing the runtime's CLI and its public API is cheap: no heavy module loads until a command runs.

(That the runtime runs with torch and the toolkit blocked is tests/test_layout.py's job.)
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "statement",
    [
        "import invspread_edge_runtime.cli",
        "from invspread_edge_runtime.cli import create_app; create_app()",
        "import invspread_edge_runtime as r; r.Embedder, r.Index",
    ],
)
def test_importing_the_cli_pulls_no_heavy_module(statement):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    modules = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line
    }
    assert "invspread_edge_runtime" in modules
    heavy = {"torch", "torchvision", "onnx", "onnxruntime", "tensorrt", "faiss", "cuda"} & modules
    assert not heavy, f"'{statement}' imported {sorted(heavy)}"
