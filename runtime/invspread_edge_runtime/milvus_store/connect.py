"""The pymilvus client of a store, its timeouts, and Milvus' failures as one-line errors.

pymilvus and milvus-lite are optional (the `[milvus]` extra): imported here, on first use, and a
missing one raises MissingDependency naming the extra. A server is asked with a short connect
timeout (an unreachable one fails in seconds, with the URI and what to check) and every call with
a bounded one, INVEDGE_MILVUS_TIMEOUT seconds (pymilvus retries within it). The token comes from
MILVUS_TOKEN and goes only to pymilvus.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import Counter
from typing import Any

from ..errors import InvedgeError, MissingDependency, UnreachableError
from .address import StoreAddress

INSTALL = "pip install 'invspread-edge-runtime[milvus]'"
CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 60.0
TOKEN_ENV = "MILVUS_TOKEN"
CHECK = (
    "Check that the Milvus server runs and that host and port are right (and MILVUS_TOKEN if it needs one)"
)


def call_timeout() -> float:
    """Seconds one call may take, retries included (INVEDGE_MILVUS_TIMEOUT overrides the default)."""
    try:
        return max(0.1, float(os.environ.get("INVEDGE_MILVUS_TIMEOUT", CALL_TIMEOUT_S)))
    except ValueError:
        return CALL_TIMEOUT_S


def pymilvus_module() -> Any:
    """pymilvus, or MissingDependency naming the extra."""
    try:
        import pymilvus
    except ImportError as exc:
        raise MissingDependency("pymilvus", "A gallery in Milvus (--store)", INSTALL) from exc
    for name in ("pymilvus", "milvus_lite"):  # their warnings and tracebacks are ours to word
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return pymilvus


# Milvus Lite's in-process server holds its folder until released: counted per folder, so that the
# last client of this process to close lets another process (a CLI command, a server) open it.
_lite_clients: Counter[str] = Counter()
_lite_guard = threading.Lock()


def connect(store: StoreAddress) -> Any:
    """A `MilvusClient` on `store`; one-line errors when it is unreachable, in use or not installed.

    Close it with `disconnect`, which also releases a Milvus Lite folder once no client uses it.
    """
    pymilvus = pymilvus_module()
    if store.local:
        _check_lite(store)
    token = os.environ.get(TOKEN_ENV, "") if not store.local else ""
    timeout = min(CONNECT_TIMEOUT_S, call_timeout())
    try:
        client = pymilvus.MilvusClient(uri=store.uri, token=token, timeout=timeout)
    except pymilvus.exceptions.MilvusException as exc:
        if store.local:
            raise _lite_failure(store, exc) from exc
        raise unreachable(store, exc) from exc
    if store.local:
        with _lite_guard:
            _lite_clients[os.path.abspath(str(store.path))] += 1
    return client


def disconnect(client: Any, store: StoreAddress) -> None:
    """Close `client`; the last one of a Milvus Lite folder stops its in-process server too."""
    with contextlib.suppress(Exception):  # a connection that already dropped
        client.close()
    if not store.local:
        return
    folder = os.path.abspath(str(store.path))
    with _lite_guard:
        _lite_clients[folder] -= 1
        last = _lite_clients[folder] <= 0
        if last:
            del _lite_clients[folder]
    if last:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(folder)


def _check_lite(store: StoreAddress) -> None:
    try:
        import milvus_lite  # noqa: F401
    except ImportError as exc:
        raise MissingDependency("milvus-lite", "A Milvus Lite store (--store milvus:FILE)", INSTALL) from exc
    assert store.path is not None
    if not store.path.parent.is_dir():
        raise InvedgeError(
            f"cannot open {store.shown}: the folder {store.path.parent} does not exist",
            "Create it first, or choose another --store path",
        )
    if store.path.exists() and not store.path.is_dir():
        raise InvedgeError(
            f"{store.shown} is a file, not a Milvus Lite store (Milvus Lite keeps a folder there)",
            "Choose another --store path",
        )


def _lite_failure(store: StoreAddress, exc: Exception) -> InvedgeError:
    """Why Milvus Lite could not open its folder: another process holds it, or something else."""
    if _locked(store):
        return InvedgeError(
            f"{store.shown} is in use by another process: Milvus Lite opens a file in one process at a time",
            "Stop the other process, or serve the gallery from a Milvus server "
            "(milvus-lite server --data-dir DIR, then --store milvus://HOST:PORT) for several",
        )
    return InvedgeError(f"cannot open {store.shown}: {message_of(exc)}", "Check the --store path")


def _locked(store: StoreAddress) -> bool:
    """Whether another process holds Milvus Lite's LOCK on the folder (probed, released at once)."""
    lock = os.path.join(str(store.path), "LOCK")
    if store.path is None or not os.path.exists(lock):
        return False
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return True
    with open(lock, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def unreachable(store: StoreAddress, exc: Exception | None = None) -> UnreachableError:
    why = f" ({message_of(exc)})" if exc is not None else ""
    return UnreachableError(f"cannot reach Milvus at {store.shown}{why}", CHECK)


def failed(store: StoreAddress, what: str, exc: Exception) -> InvedgeError:
    """A call that failed: unreachable when the connection is the cause, else Milvus' own reason."""
    if is_connection(exc):
        return unreachable(store, exc)
    return InvedgeError(f"Milvus at {store.shown} could not {what}: {message_of(exc)}")


def is_connection(exc: BaseException) -> bool:
    """A failure of the connection (server gone, timeout), not of the request."""
    text = message_of(exc).lower()
    return any(
        word in text
        for word in ("unavailable", "deadline", "fail connecting", "connection", "retry timeout", "timed out")
    )


def is_input_error(exc: BaseException) -> bool:
    """pymilvus refused the request itself (bad data): retrying cannot help."""
    pymilvus = pymilvus_module()
    if isinstance(exc, (pymilvus.exceptions.ParamError, pymilvus.exceptions.DataNotMatchException)):
        return True
    return bool(getattr(exc, "is_input_error", False))


def message_of(exc: BaseException | None) -> str:
    """One line of an exception: pymilvus' message without its class wrapper."""
    if exc is None:
        return ""
    text = str(getattr(exc, "message", "") or exc or type(exc).__name__)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:300].rstrip(". ")
