"""`invedge deploy`: an export folder made ready for NVIDIA's serving stacks (Triton, DeepStream).

Torch-free, so it runs on the target too (a TensorRT plan for Triton is built where it will run).
`invedge export RUN --triton DIR / --deepstream DIR` call the same library functions after exporting.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from .deploy_deepstream import deepstream_command
    from .deploy_triton import triton_command

    group = typer.Typer(help="Make an export ready for Triton or DeepStream.", no_args_is_help=True)
    group.command("triton")(triton_command)
    group.command("deepstream")(deepstream_command)
    app.add_typer(group, name="deploy")
