"""`invedge` of the full toolkit: the runtime's verbs plus train, eval and export.

Importing this module imports no torch: each command imports what it needs when it runs.
"""

from __future__ import annotations

import sys

import typer

from invspread_edge_runtime.cli import create_app, run


def register_training_verbs(app: typer.Typer) -> None:
    from .commands import evaluate, export, train

    for module in (train, evaluate, export):
        module.register(app)


def main() -> None:
    from .torch_backend import register_torch_runtimes

    register_torch_runtimes()  # `invedge bench` offers torch/torch-compile rows (torch loads only if run)
    sys.exit(run(create_app(register_training_verbs)))
