"""`invedge` of the full toolkit: the runtime's verbs plus train, eval and export.

Importing this module imports no torch: each command imports what it needs when it runs.
"""

from __future__ import annotations

import sys

from invspread_edge_runtime.cli import create_app, run


def main() -> None:
    from .commands import evaluate, export, train
    from .torch_backend import register_torch_runtimes

    register_torch_runtimes()  # `invedge bench` offers torch/torch-compile rows (torch loads only if run)
    app = create_app()
    for module in (train, evaluate, export):
        module.register(app)
    sys.exit(run(app))
