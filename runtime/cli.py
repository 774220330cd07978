"""`invedge` with the runtime alone: embed, index, search, bench, build-engine.

The full toolkit's CLI (`invspread_edge.cli`) adds train, eval and export to this same app.
Errors: every `InvedgeError` becomes one line and exit 1; INVEDGE_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable

import typer

from . import console
from .errors import InvedgeError, MissingDependency

FULL_TOOLKIT_VERBS = {
    "train": "Train an encoder (needs the full toolkit).",
    "eval": "Evaluate a run (needs the full toolkit).",
    "export": "Export a run to ONNX/TensorRT (needs the full toolkit).",
}


def create_app(register_first: Callable[[typer.Typer], None] | None = None) -> typer.Typer:
    """The runtime's verbs, after those `register_first` adds (train/eval/export lead the help).

    Command modules import their heavy dependencies inside the command.
    """
    from .commands import bench, embed, engine, index, search

    app = typer.Typer(
        name="invedge",
        help="invspread-edge: unsupervised image embeddings, exported and served on the edge.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
    )
    if register_first is not None:
        register_first(app)
    for module in (embed, index, search, bench, engine):
        module.register(app)
    return app


def add_full_toolkit_placeholders(app: typer.Typer) -> None:
    """With the runtime alone, train/eval/export say how to get them instead of 'no such command'."""
    for verb, help_text in FULL_TOOLKIT_VERBS.items():

        def _missing(ctx: typer.Context, _verb: str = verb) -> None:
            raise MissingDependency(
                "invspread-edge",
                f"'invedge {_verb}'",
                "pip install invspread-edge (the full toolkit, with torch), or 'make install' in the repository",
            )

        app.command(
            verb,
            help=help_text,
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )(_missing)


def run(app: typer.Typer, argv: list[str] | None = None) -> int:
    """Run the CLI and map library errors to one-line messages and exit codes.

    Usage errors, --help and Ctrl-C at a prompt are handled by Typer itself (standalone mode).
    """
    command = typer.main.get_command(app)
    debug = os.environ.get("INVEDGE_DEBUG", "") not in ("", "0")
    try:
        command.main(args=argv, prog_name="invedge", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        console.err.print("[red]interrupted[/red]")
        return 130
    except InvedgeError as exc:
        if debug:
            raise
        console.err.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    except OSError as exc:
        if debug:
            raise
        if exc.errno == errno.ENOSPC:
            console.err.print("[red]error:[/red] disk full. Free some space and run again", highlight=False)
        else:
            console.err.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    return 0


def main() -> None:
    sys.exit(run(create_app(add_full_toolkit_placeholders)))
