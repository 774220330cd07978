"""One voice for output: results to stdout (tables, or JSON with --json), messages and progress to stderr."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def info(message: str) -> None:
    err.print(message, highlight=False)


def success(message: str) -> None:
    err.print(f"[green]✓[/green] {message}", highlight=False)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def print_json(obj: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else there."""
    out.file.write(json.dumps(obj, indent=2, default=str) + "\n")
    out.file.flush()


def progress(*extra_columns: Any, transient: bool = False) -> Progress:
    """The toolkit's progress bar (stderr), with any extra columns (loss, images/s) appended."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=err,
        transient=transient,
    )
