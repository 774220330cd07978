"""One exclusive lock per output (run folder, embeddings folder, index file), across processes.

`fcntl.flock` on a hidden sibling file `.<name>.lock`: the kernel releases it when the holder
exits, even after `kill -9`, so a stale lock never blocks a rerun. The lock file is never deleted
(deleting a flock file lets two processes hold "the" lock on two different inodes); it holds the
holder's pid and command (emptied on release) so that a second writer can say who it is waiting
for, and whether that is another thread of its own process.

    with exclusive_lock(out, "embeddings folder"):   # waits; LockedError after `timeout` seconds
        ...read, modify, write atomically...
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError, LockedError

try:
    import fcntl
except ImportError:  # Windows: no flock; the atomic renames still keep each file whole
    fcntl = None  # type: ignore[assignment]

DEFAULT_TIMEOUT_S: float | None = None  # None: $INVEDGE_LOCK_TIMEOUT, else 300 s (tests may set a number)
POLL_S = 0.05
UNKNOWN = "holder unknown"
RECORD_WAIT_S = 0.5  # how long a waiter gives a new holder to write its record before saying "unknown"


def lock_path(target: str | os.PathLike[str]) -> Path:
    target = Path(target).absolute()
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def exclusive_lock(
    target: str | os.PathLike[str], what: str = "output", timeout: float | None = None
) -> Iterator[Path]:
    """Hold the lock of `target` for the block. `timeout`: seconds to wait (0: fail at once).

    Waiting is announced once on stderr; past the timeout, LockedError names the holder.
    """
    path = lock_path(target)
    timeout = default_timeout() if timeout is None else timeout
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        from .files import os_error

        raise os_error(exc, path) from exc
    try:
        _acquire(fd, Path(target), what, timeout)
    except BaseException:
        os.close(fd)
        raise
    try:
        _write_holder(fd)
        yield path
    finally:
        with contextlib.suppress(OSError):  # no stale record: a waiter never names a past holder
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock


def default_timeout() -> float:
    """Seconds a writer waits for a lock: INVEDGE_LOCK_TIMEOUT (read when a lock is taken), else 300."""
    if DEFAULT_TIMEOUT_S is not None:
        return DEFAULT_TIMEOUT_S
    raw = os.environ.get("INVEDGE_LOCK_TIMEOUT", "").strip()
    if not raw:
        return 300.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise ConfigError(
            f"INVEDGE_LOCK_TIMEOUT={raw!r} is not a number of seconds",
            "Set it to seconds to wait for another writer (e.g. 300; 0: fail at once), or unset it",
        )
    return value


def _acquire(fd: int, target: Path, what: str, timeout: float) -> None:
    if fcntl is None:
        return
    started = time.monotonic()
    deadline = started + timeout
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder, mine = _holder(fd)
            if time.monotonic() >= deadline:
                who = "another thread of this process" if mine else "another invedge process"
                raise LockedError(
                    f"{target} is being written by {who} ({holder})",
                    "Wait for it to finish, or write to another output",
                ) from None
            # a holder that has just taken the lock writes its record a moment later: wait for it
            if not announced and (holder != UNKNOWN or time.monotonic() - started >= RECORD_WAIT_S):
                from . import console

                who = "another thread of this process" if mine else "another process"
                console.info(f"waiting for {what} {target}: {who} holds it ({holder})")
                announced = True
            time.sleep(POLL_S)


def _write_holder(fd: int) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)


def _holder(fd: int) -> tuple[str, bool]:
    """Who holds the lock, as its record says, and whether that is this very process."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        mine = record["pid"] == os.getpid() and record.get("host") == socket.gethostname()
        return f"pid {record['pid']}: {record['command']}, since {record['since']}", mine
    except (OSError, ValueError, KeyError, TypeError):
        return UNKNOWN, False
