"""`invedge`: the runtime's verbs (embed, index, search, bench, build-engine, verify) and the toolkit's.

The full toolkit adds train, eval and export to this same app through entry points (`plugins.py`).
Errors: one voice at this edge (`run`): every failure is one line on stderr and an exit code;
INVEDGE_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from . import console
from .errors import InvedgeError, MissingDependency

# The toolkit's verbs, first in the help; with the runtime alone each says how to get it.
TOOLKIT_VERBS = {
    "train": "Train an encoder (needs the full toolkit).",
    "eval": "Evaluate a run (needs the full toolkit).",
    "export": "Export a run to ONNX/TensorRT (needs the full toolkit).",
}


def create_app(register_extra: Callable[[typer.Typer], None] | None = None) -> typer.Typer:
    """`invedge`: the installed packages' verbs (entry-point group "invedge.commands"), then the runtime's.

    `register_extra` adds more verbs (tests use it). Command modules import their heavy
    dependencies inside the command, so building the app imports no torch.
    """
    from .commands import (
        bench,
        cluster,
        dedup,
        deploy,
        embed,
        engine,
        index,
        search,
        select,
        serve,
        verify,
        watch,
    )
    from .commands import map as map_verb
    from .commands.help_screen import HelpGroup

    app = typer.Typer(
        name="invedge",
        help="invspread-edge: unsupervised image embeddings, exported and served on the edge.",
        cls=HelpGroup,
        callback=_root_options,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
    )
    register_plugin_verbs(app)
    if register_extra is not None:
        register_extra(app)
    for module in (
        embed,
        index,
        search,
        dedup,
        cluster,
        map_verb,
        select,
        watch,
        serve,
        bench,
        engine,
        deploy,
        verify,
    ):
        module.register(app)
    return app


def _show_version(value: bool) -> None:
    if value:
        from .version import __version__

        console.out.print(f"invedge {__version__}", highlight=False)
        raise typer.Exit()


def _root_options(
    version: bool = typer.Option(
        False, "--version", help="Show the version and exit.", is_eager=True, callback=_show_version
    ),
) -> None:
    """`invedge --version`; the verbs take every other option."""


def register_plugin_verbs(app: typer.Typer) -> None:
    """The toolkit's verbs where it is installed, placeholders naming it where not."""
    from .plugins import COMMANDS, load, plugins

    found = plugins(COMMANDS)
    for verb in [*TOOLKIT_VERBS, *sorted(set(found) - set(TOOLKIT_VERBS))]:
        if verb not in found:
            _add_placeholder(app, verb, _missing_toolkit(verb))
            continue
        try:
            load(found[verb])(app)
        except InvedgeError as exc:  # a broken install: the verb exists and says so when run
            _add_placeholder(app, verb, exc)


def _missing_toolkit(verb: str) -> InvedgeError:
    return MissingDependency(
        "invspread-edge",
        f"'invedge {verb}'",
        "pip install invspread-edge (the full toolkit, with torch), or 'make install' in the repository",
    )


def _add_placeholder(app: typer.Typer, verb: str, error: InvedgeError) -> None:
    def _unavailable(ctx: typer.Context) -> None:
        raise error

    app.command(
        verb,
        help=TOOLKIT_VERBS.get(verb, "Unavailable: its package cannot be loaded."),
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(_unavailable)


def run(app: typer.Typer, argv: list[str] | None = None) -> int:
    """Run the CLI: every failure is one line on stderr and an exit code, never a traceback.

    - `InvedgeError` (a problem the user can fix): "error: what. Next step", exit 1.
    - An `OSError` that escaped the library: the same, naming the file (disk full, permissions,
      missing, a folder where a file is expected, ...), exit 1.
    - Usage errors (an unknown option, a value of the wrong type, a missing argument): click finds
      them, we print them in the same voice, exit 2. Values of the right type that a command
      rejects (--k 0, an unknown --backend) are the command's own errors: exit 1.
    - Ctrl-C: one line, exit 130 (`Interrupted` lets a command say what was kept).
    - Anything else is a bug: one line naming the file that holds the traceback, exit 1.
    INVEDGE_DEBUG=1 lets every exception through with its traceback.
    """
    command = typer.main.get_command(app)
    _catch_ctrl_c(command)
    debug = os.environ.get("INVEDGE_DEBUG", "") not in ("", "0")
    try:
        # standalone_mode=False: click hands us its usage errors and Abort instead of printing
        # and exiting itself; --help and typer.Exit come back as the exit code.
        result = command.main(args=argv, prog_name="invedge", standalone_mode=False)
    except SystemExit as exc:  # click's own exits (a broken pipe) and sys.exit in a command
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except typer.TyperException as exc:  # click's usage errors
        if type(exc).__name__ == "NoArgsIsHelpError":  # `invedge` alone: typer printed the help
            return 2
        _usage_error(exc)
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:  # end of input at a prompt
        _line("error:", "aborted: no input at a prompt. Run the command again where you can answer it")
        return 1
    except (KeyboardInterrupt, _CtrlC):
        _line(
            "interrupted:",
            "stopped by Ctrl-C. Finished files are intact (every write is atomic); "
            "run the same command again to resume or redo it",
            style="yellow",
        )
        return 130
    except InvedgeError as exc:
        if debug:
            raise
        if exc.exit_code == 130:
            _line("interrupted:", str(exc), style="yellow")
        else:
            _line("error:", str(exc))
        return exc.exit_code
    except OSError as exc:
        if debug:
            raise
        _line("error:", str(describe_os_error(exc)))
        return 1
    except Exception as exc:
        if debug:
            raise
        _line("error:", _internal_error(exc))
        return 1
    return result if isinstance(result, int) else 0


class _CtrlC(Exception):
    """KeyboardInterrupt inside a command, carried past click (which turns it into a silent Exit(130))."""


def _catch_ctrl_c(command: Any) -> None:
    """Wrap every command's callback so that Ctrl-C reaches `run` as `_CtrlC`."""
    callback = getattr(command, "callback", None)
    if callback is not None and not getattr(callback, "_invedge_guarded", False):

        @functools.wraps(callback)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except KeyboardInterrupt as exc:
                raise _CtrlC() from exc

        guarded._invedge_guarded = True  # type: ignore[attr-defined]
        command.callback = guarded
    for sub in getattr(command, "commands", {}).values():
        _catch_ctrl_c(sub)


def describe_os_error(exc: OSError) -> InvedgeError:
    """The one-line error for an OSError, naming its file and the next step."""
    from .files import os_error

    name = exc.filename if exc.filename is not None else exc.filename2
    target = Path(os.fsdecode(name)) if isinstance(name, (str, bytes, os.PathLike)) else None
    what = str(target) if target is not None else "a file"
    code = exc.errno
    if code in (errno.ENOSPC, errno.EROFS):
        return os_error(exc, target if target is not None else Path("the output"), atomic=False)
    if code == errno.EDQUOT:
        return InvedgeError(
            f"disk quota exceeded while writing {what}",
            "Free some space (or raise the quota) and run the same command again",
        )
    if code in (errno.EACCES, errno.EPERM):
        return InvedgeError(
            f"permission denied: {what}", "Check its permissions, or choose a folder you can write to"
        )
    if code == errno.ENOENT:
        return InvedgeError(f"not found: {what}", "Check the path (and that its parent folder exists)")
    if code == errno.EISDIR:
        return InvedgeError(f"{what} is a folder where a file is expected", "Give the path of a file")
    if code == errno.ENOTDIR:
        return InvedgeError(
            f"{what}: a file stands where a folder is expected (in the path or at its end)",
            "Give the path of a folder",
        )
    if code == errno.ENAMETOOLONG:
        return InvedgeError(f"file name too long: {what}", "Choose a shorter path")
    return InvedgeError(f"{what}: {exc.strerror or exc}", "Check the path and run the same command again")


def _internal_error(exc: BaseException) -> str:
    """A bug: the traceback goes to a file (never to the terminal); the line says where."""
    import tempfile
    import traceback

    summary = f"internal error ({type(exc).__name__}: {exc})"
    try:
        fd, name = tempfile.mkstemp(prefix="invedge-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(f"invedge {' '.join(sys.argv[1:])}\n")
            traceback.print_exception(exc, file=fh)
    except OSError:
        return f"{summary}. This is a bug: please report it; INVEDGE_DEBUG=1 shows the traceback"
    return f"{summary}. This is a bug: please report it with the traceback saved in {name}"


def _usage_error(exc: Exception) -> None:
    ctx = getattr(exc, "ctx", None)
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    where = f"invedge {ctx.command_path.split(' ', 1)[1]}" if ctx and " " in ctx.command_path else "invedge"
    _line("error:", f"{message.rstrip('.')}. See '{where} --help'")


def _line(prefix: str, text: str, style: str = "red") -> None:
    """Exactly one line: newlines folded, rich markup escaped, unprintable file names made visible."""
    from rich.markup import escape

    text = " ".join(text.split())
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    console.err.print(f"[{style}]{prefix}[/{style}] {escape(text)}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """The `invedge` command (its console script exits with the returned code)."""
    return run(create_app(), argv)
