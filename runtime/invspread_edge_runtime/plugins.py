"""What other installed packages add to the runtime, found through entry points.

The runtime owns `invedge` and never imports the toolkit: the toolkit (`pip install invspread-edge`)
declares its verbs in the group "invedge.commands" (each a `register(app)`) and its extra
benchmark runtimes in "invedge.runtimes" (each a no-argument function that registers them).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

COMMANDS = "invedge.commands"
RUNTIMES = "invedge.runtimes"


def plugins(group: str) -> dict[str, EntryPoint]:
    """The entry points of `group` by name (one per name, whatever stale metadata lists twice)."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=group):
        found.setdefault(point.name, point)
    return found


def load(point: EntryPoint) -> Callable[..., Any]:
    """The entry point's object; a broken install is named, not a traceback."""
    from .errors import InvedgeError

    try:
        return point.load()
    except Exception as exc:  # an import error deep in a plugin: say which and how to repair
        raise InvedgeError(
            f"the installed plugin '{point.name}' ({point.value}) cannot be loaded: {type(exc).__name__}: {exc}",
            "Reinstall the package that provides it (make install in the repository)",
        ) from exc


_RUNTIMES_LOADED = False


def load_runtimes() -> None:
    """Register every installed package's extra benchmark runtimes, once."""
    global _RUNTIMES_LOADED
    if _RUNTIMES_LOADED:
        return
    _RUNTIMES_LOADED = True
    for point in plugins(RUNTIMES).values():
        load(point)()
