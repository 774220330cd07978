"""Named points in long work where a test can stop the process: a kill there is the worst moment.

Production code marks each point with one line, `hooks.reached("index-save")`, which does nothing
unless a test installed a handler: `set_hook(handler)` in the test's own process, or, for a test that
runs `invedge` (or a Ray worker) as a process, the environment, looked up at each point reached:
- INVEDGE_TEST_PAUSE_AT=<point> pauses there: the process writes the file $INVEDGE_TEST_PAUSE_MARKER
  ("PID POINT"), then waits until the file $INVEDGE_TEST_PAUSE_RELEASE exists, at most
  $INVEDGE_TEST_PAUSE_S seconds (default 60), so the test can kill it or let it go on.
- INVEDGE_TEST_EXIT_AT=<point>:<n> exits (os._exit(1), as a killed process does) the n-th time this
  process reaches the point, once per run: the first process to create $INVEDGE_TEST_EXIT_MARKER
  exits, a restarted one finds the file and goes on.

Points:
- embed-batch: after each batch of `invedge embed` is saved as a part.
- embed-join: embeddings.npy half written (a temporary file).
- embed-swap: the old embeddings folder moved aside, the new one not yet in place.
- index-save: an index file half written (a temporary file).
- milvus-batch: after each batch upserted into Milvus.
- milvus-remove: after each batch deleted by `index remove --store`.
- milvus-swap: a collection moved aside by `index build --overwrite`, the new one not yet renamed in.
- checkpoint-save: a new checkpoint half written over the previous one.
- run-swap: an `--overwrite` run complete in its staging folder, the old run still in place.
- run-swapped: the two runs exchanged, the old one not yet removed.
- ray-batch: a Ray actor of `invedge embed --ray` has embedded a batch, not yet returned it.
- dedup-move: after each file `invedge dedup --move-to` moved (its manifest written before the first).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

Hook = Callable[[str], None]  # called with the point's name at every point reached

PAUSE_AT, PAUSE_MARKER, PAUSE_RELEASE, PAUSE_S = (
    "INVEDGE_TEST_PAUSE_AT",
    "INVEDGE_TEST_PAUSE_MARKER",
    "INVEDGE_TEST_PAUSE_RELEASE",
    "INVEDGE_TEST_PAUSE_S",
)
EXIT_AT, EXIT_MARKER = "INVEDGE_TEST_EXIT_AT", "INVEDGE_TEST_EXIT_MARKER"
ENVIRONMENT = (PAUSE_AT, PAUSE_MARKER, PAUSE_RELEASE, PAUSE_S, EXIT_AT, EXIT_MARKER)

_hook: Hook | None = None  # installed in this process (set_hook); else the environment's handlers
_reached: Counter[str] = Counter()  # points reached by this process (EXIT_AT counts them)


def reached(point: str) -> None:
    """The process is at `point`: call the installed handler, else the environment's, if any."""
    _reached[point] += 1
    if _hook is not None:
        _hook(point)
        return
    for handler in (pause_from_environment(), exit_from_environment()):
        if handler is not None:
            handler(point)


def set_hook(hook: Hook | None) -> Hook | None:
    """Install `hook` (None: the environment's handlers again); returns the one it replaces."""
    global _hook
    previous, _hook = _hook, hook
    return previous


def environment() -> dict[str, str]:
    """The hooks' variables set here, for processes started elsewhere (the Ray workers' runtime_env)."""
    return {name: os.environ[name] for name in ENVIRONMENT if os.environ.get(name)}


def pause_from_environment(environ: Mapping[str, str] = os.environ) -> Hook | None:
    """The handler INVEDGE_TEST_PAUSE_AT asks for (see the module's docstring), or None."""
    at = environ.get(PAUSE_AT)
    if not at:
        return None
    marker, release = environ.get(PAUSE_MARKER), environ.get(PAUSE_RELEASE)
    seconds = float(environ.get(PAUSE_S, "60"))

    def pause(point: str) -> None:
        if point != at:
            return
        if marker:
            Path(marker).write_text(f"{os.getpid()} {point}\n", encoding="utf-8")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (release and Path(release).exists()):
            time.sleep(0.05)

    return pause


def exit_from_environment(environ: Mapping[str, str] = os.environ) -> Hook | None:
    """The handler INVEDGE_TEST_EXIT_AT asks for (see the module's docstring), or None."""
    at, _, times = (environ.get(EXIT_AT) or "").partition(":")
    if not at:
        return None
    marker = environ.get(EXIT_MARKER)

    def exit_once(point: str) -> None:
        if point != at or _reached[point] < int(times or 1):
            return
        if marker:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # this run's one exit happened already
        os._exit(1)

    return exit_once
