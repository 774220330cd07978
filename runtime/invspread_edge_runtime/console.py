"""One voice for output: results to stdout (tables, or JSON with --json), messages and progress to stderr."""

from __future__ import annotations

import json
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _SafeWriter:
    """A text stream that never fails on a character its encoding lacks.

    A file name that is not valid UTF-8 reaches Python as lone surrogates ("\\udcff"); a strict
    stream (stdout in a UTF-8 locale, pytest's capture) raises UnicodeEncodeError on it, and rich
    then keeps the unwritten text in its buffer, so every later print fails too. Here such text is
    written with backslash escapes instead (the name stays recognisable).
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self._stream, "encoding", None) or "utf-8"
            return self._stream.write(text.encode(encoding, "backslashreplace").decode(encoding))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Console(Console):
    """rich's Console writing through `_SafeWriter` (still to the current sys.stdout/sys.stderr)."""

    @property
    def file(self) -> IO[str]:
        return _SafeWriter(Console.file.fget(self))  # type: ignore[attr-defined]

    @file.setter
    def file(self, new_file: IO[str]) -> None:
        Console.file.fset(self, new_file)  # type: ignore[attr-defined]


out = _Console(soft_wrap=True)
err = _Console(stderr=True, soft_wrap=True)


def info(message: str) -> None:
    err.print(message, highlight=False)


def success(message: str) -> None:
    err.print(f"[green]✓[/green] {message}", highlight=False)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def print_table(table: Any, min_width: int) -> None:
    """A rich table on stdout: a terminal gets its own width; a pipe or a file gets at least
    `min_width` columns, so that no column of a wide table is folded there."""
    if out.is_terminal:
        out.print(table)
        return
    width = out.width
    out.width = max(width, min_width)
    try:
        out.print(table)
    finally:
        out.width = width


def print_json(obj: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else there."""
    out.file.write(json.dumps(obj, indent=2, default=str) + "\n")
    out.file.flush()


def progress(*extra_columns: Any, transient: bool = False) -> Progress:
    """The toolkit's progress bar (stderr), with any extra columns (loss, images/s) appended.

    A transient bar (erased when done) is not drawn at all when stderr is not a terminal: there it
    would only leave an empty line before the command's next message (or its one error line).
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=err,
        transient=transient,
        disable=transient and not err.is_terminal,
    )
