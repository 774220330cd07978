"""What a collection records about the writes into it: complete or not, who writes it now, what is left over.

A build is many calls (create, thousands of upserts, the index, the measurement), and a `kill -9`
may stop it after any of them; the rows already written stay. So the collection's properties say:

- `invedge.build` {"state", "total", "source"}: "building" from the collection's creation,
  "complete" once every row is written, indexed and measured. Only a complete collection is
  searched, changed or served. A collection without it was built by an older invedge, which did not
  record this: it is taken as complete (nothing tells its finished builds from its stopped ones).
- `invedge.writer.TOKEN` {"doing", "source", "total", "ids_sha256", "host", "pid", "started",
  "heartbeat"}: one per command writing now (a build, an `index add` of one folder, an `index
  remove`), dropped when it ends. One whose process is gone is a write that stopped midway: its
  rerun finishes it (upserts and deletes are idempotent) and drops the record.
- `invedge.temporary` {"of", "role"}: a collection built under a temporary name by `--overwrite`
  ("new"), or the old one moved aside by the swap ("old"). Each build of `of` first finishes a swap
  that a kill cut between its two renames, then drops the temporaries whose writer is gone.

Alive: a Milvus Lite folder is open in one process at a time, so there a writer is alive only if it
is this process's own. On a server (no file to lock) a writer is alive while its heartbeat, renewed
every HEARTBEAT_S by a thread, is younger than STALE_S and, when it ran on this host, its pid runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import IndexFileError, LockedError
from ..index.settings import HNSW_M
from .address import COLLECTION_MAX, StoreAddress
from .connect import call_timeout, failed, is_connection

BUILD = "invedge.build"
WRITER = "invedge.writer."
TEMPORARY = "invedge.temporary"
MARK = "__invedge_"  # temporaries are named COLLECTION__invedge_{new,old}_HEX
HEARTBEAT_S = 30.0
STALE_S = 600.0  # a server's writer silent this long is gone (clocks of its hosts agree within minutes)

_mine: set[str] = set()  # the tokens of this process's writers
_mine_guard = threading.Lock()


@dataclass(frozen=True)
class Writer:
    """One command writing a collection (its record, `invedge.writer.TOKEN`)."""

    token: str
    doing: str  # "build", "add" or "remove"
    source: str = ""  # the embeddings folder (build, add)
    total: int = 0  # rows to write (build, add) or ids to delete (remove)
    ids_sha256: str = ""  # remove: which ids, so that its rerun is known
    host: str = ""
    pid: int = 0
    started: float = 0.0
    heartbeat: float = 0.0

    @property
    def key(self) -> str:
        return WRITER + self.token

    def text(self, heartbeat: float | None = None) -> str:
        values = {k: v for k, v in self.__dict__.items() if k != "token"}
        return json.dumps(values | ({"heartbeat": heartbeat} if heartbeat is not None else {}))

    def alive(self, store: StoreAddress, now: float | None = None) -> bool:
        """Whether its process may still be writing (see the module docstring)."""
        with _mine_guard:
            if self.token in _mine:
                return True
        here = self.host == socket.gethostname()
        if store.local or (here and self.pid == os.getpid()):
            return False
        if (time.time() if now is None else now) - self.heartbeat > STALE_S:
            return False
        return not here or _pid_runs(self.pid)

    def who(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, since {since}"


@dataclass
class State:
    """What a collection's records say (see the module docstring)."""

    build: dict[str, Any] | None = None
    writers: list[Writer] = field(default_factory=list)
    temporary: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        return self.build is None or self.build.get("state") == "complete"

    @property
    def total(self) -> int:
        return int((self.build or {}).get("total") or 0)

    @property
    def source(self) -> str:
        return str((self.build or {}).get("source") or "")

    def temporary_of(self, name: str) -> str | None:
        """The collection this one is a temporary of (None when it is not one)."""
        of = (self.temporary or {}).get("of")
        return str(of) if of and of != name else None

    def live(self, store: StoreAddress, doing: str | None = None) -> list[Writer]:
        return [w for w in self.writers if w.alive(store) and doing in (None, w.doing)]

    def stopped(self, store: StoreAddress) -> list[Writer]:
        return [w for w in self.writers if not w.alive(store)]


def read_state(properties: dict[str, Any]) -> State:
    """The records among a collection's properties; an unreadable build record reads as incomplete."""
    state = State()
    if properties.get(BUILD):
        state.build = _json(properties[BUILD]) or {"state": "unreadable"}
    state.temporary = _json(properties.get(TEMPORARY) or "")
    for key, text in properties.items():
        if key.startswith(WRITER) and (values := _json(text)):
            with contextlib.suppress(TypeError, ValueError):  # a damaged record is left out
                known = {
                    name: kind(values[name])
                    for name, kind in _WRITER_TYPES.items()
                    if values.get(name) is not None
                }
                state.writers.append(Writer(key[len(WRITER) :], **known))
    return state


_WRITER_TYPES: dict[str, Callable[[Any], Any]] = {
    "doing": str, "source": str, "total": int, "ids_sha256": str, "host": str, "pid": int,
    "started": float, "heartbeat": float,
}  # fmt: skip


def _json(text: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def building(total: int, source: str) -> dict[str, str]:
    """The build record of a collection being created."""
    return {BUILD: json.dumps({"state": "building", "total": total, "source": source})}


def finished(total: int, source: str) -> dict[str, str]:
    return {BUILD: json.dumps({"state": "complete", "total": total, "source": source})}


def ids_digest(ids: Iterable[str]) -> str:
    """Which ids a remove deletes (order and repeats aside): its rerun has the same digest."""
    return hashlib.sha256("\n".join(sorted(set(ids))).encode("utf-8")).hexdigest()


# --- the records of a command writing ---------------------------------------------------------------


class Recording:
    """`invedge.writer.TOKEN` on `collection` while a command writes it (a context manager).

    Dropped when the block ends normally; an error or a kill leaves it, the trace of a write that
    stopped midway. On a server a thread renews its heartbeat. `moved(name)`: the collection was
    renamed (the swap of --overwrite), the record came along."""

    def __init__(self, client: Any, store: StoreAddress, collection: str, doing: str, **details: Any) -> None:
        now = time.time()
        self.client, self.store, self.collection = client, store, collection
        self.writer = Writer(
            secrets.token_hex(6), doing, host=socket.gethostname(), pid=os.getpid(), started=now,
            heartbeat=now, **details,
        )  # fmt: skip
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Recording:
        with _mine_guard:
            _mine.add(self.writer.token)
        try:
            set_properties(self.client, self.store, self.collection, {self.writer.key: self.writer.text()})
        except BaseException:
            self._forget()
            raise
        if not self.store.local:
            self._thread = threading.Thread(target=self._beat, name="invedge-milvus-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=call_timeout())
        if kind is None:
            drop_properties(self.client, self.collection, [self.writer.key])
        self._forget()

    def moved(self, name: str) -> None:
        self.collection = name

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat: the next one, or STALE_S, tells
                self.client.alter_collection_properties(
                    self.collection,
                    properties={self.writer.key: self.writer.text(time.time())},
                    timeout=call_timeout(),
                )

    def _forget(self) -> None:
        with _mine_guard:
            _mine.discard(self.writer.token)


def set_properties(client: Any, store: StoreAddress, name: str, properties: dict[str, str]) -> None:
    try:
        client.alter_collection_properties(name, properties=properties, timeout=call_timeout())
    except Exception as exc:
        raise failed(store, f"record the state of {name}", exc) from exc


_NO_DROP = "_invedge_cannot_drop_properties"  # set on a client whose server refused a drop


def drop_properties(client: Any, name: str, keys: list[str]) -> None:
    """Remove records (best effort: one left over reads as a stopped write, which its rerun clears).

    A server that cannot drop properties (Milvus before 2.5: it reads the request as an alter with no
    properties and refuses it) has them emptied instead, which reads the same. The server is asked
    (its refusal is remembered for the client's later calls), never judged by its version."""
    if not keys:
        return
    if not getattr(client, _NO_DROP, False):
        try:
            client.drop_collection_properties(name, property_keys=keys, timeout=call_timeout())
            return
        except Exception as exc:
            if is_connection(exc):  # gone, not refusing: emptying cannot work either
                return
            with contextlib.suppress(AttributeError, TypeError):
                setattr(client, _NO_DROP, True)
    with contextlib.suppress(Exception):
        client.alter_collection_properties(name, properties=dict.fromkeys(keys, ""), timeout=call_timeout())


def drop_stopped(
    client: Any, store: StoreAddress, name: str, state: State, match: Callable[[Writer], bool]
) -> None:
    """Drop the records of stopped writes that the write just finished has redone."""
    drop_properties(client, name, [w.key for w in state.stopped(store) if match(w)])


# --- what a reader is told ---------------------------------------------------------------------------


def check_usable(
    state: State,
    store: StoreAddress,
    collection: str,
    kind: str,
    params: dict[str, Any],
    count: Callable[[], int],
) -> None:
    """Refuse a temporary, or a collection whose build has not finished, with the next step."""
    of = state.temporary_of(collection)
    if of is not None:
        raise IndexFileError(
            f"collection {collection} in {store.shown} is a temporary of a build of {of}",
            f"Use --collection {of}; the next 'invedge index build' of {of} removes it",
        )
    if state.complete:
        return
    written = _count(count)
    live = state.live(store, "build")
    if live:
        so_far = "?" if written is None else f"{written:,}"
        raise LockedError(
            f"collection {collection} in {store.shown} is being built ({so_far} of {state.total:,} items "
            f"written so far; {live[0].who()})",
            "Wait for the build to finish, then retry",
        )
    raise IndexFileError(
        f"collection {collection} in {store.shown} is incomplete: {_stopped(written, state.total)}",
        f"Finish it with '{rerun_build(state.source, store, collection, kind, params)}', or rebuild it "
        "with --overwrite",
    )


def _count(count: Callable[[], int]) -> int | None:
    try:
        return count()
    except Exception:  # the message matters more than the number
        return None


def status(state: State, store: StoreAddress, collection: str, count: int) -> str:
    """One word and a reason for `index info`: complete, incomplete or being built."""
    if state.complete:
        return "complete" if state.build is not None else "complete (built before builds were recorded)"
    live = state.live(store, "build")
    if live:
        return f"being built: {count:,} of {state.total:,} items written so far ({live[0].who()})"
    return f"incomplete: {_stopped(count, state.total)}"


def _stopped(written: int | None, total: int) -> str:
    """How far a stopped build got (the rows written, or all of them but not the index)."""
    if written is None or total <= 0:
        return "its build stopped before it finished"
    if written >= total:
        return f"its build stopped with all {total:,} items written, before they were indexed and measured"
    return f"its build stopped with {written:,} of {total:,} items written"


def stopped_writes(
    state: State, store: StoreAddress, collection: str, kind: str, params: dict[str, Any]
) -> list[str]:
    """A line for each write into a complete collection that stopped midway, with how to finish it."""
    where = f"--store {store.shown} --collection {collection}"
    lines = []
    for w in state.stopped(store):
        if w.doing == "add":
            lines.append(
                f"an 'index add' of {w.source} into {collection} stopped midway ({w.who()}): rerun "
                f"'invedge index add {where} {w.source}' to finish it"
            )
        elif w.doing == "remove":
            lines.append(
                f"an 'index remove' of {w.total:,} ids from {collection} stopped midway ({w.who()}): rerun it "
                "with the same ids to finish it"
            )
        elif state.complete:
            lines.append(
                f"a build from {w.source or 'EMB'} into {collection} stopped midway ({w.who()}): rerun "
                f"'{rerun_build(w.source, store, collection, kind, params)}' to finish it"
            )
    return lines


def rerun_build(source: str, store: StoreAddress, collection: str, kind: str, params: dict[str, Any]) -> str:
    """The command that finishes a stopped build (its kind's flags; ivf reuses the collection's lists)."""
    flags = "" if kind == "flat" else f" --kind {kind}"
    if kind == "hnsw" and params.get("m") not in (None, HNSW_M):
        flags += f" --m {params['m']}"
    return f"invedge index build {source or 'EMB'} --store {store.shown} --collection {collection}{flags}"


# --- temporaries ------------------------------------------------------------------------------------


def temporary_name(collection: str, role: str) -> str:
    suffix = f"{MARK}{role}_{secrets.token_hex(4)}"
    return collection[: COLLECTION_MAX - len(suffix)] + suffix


def temporary(collection: str, role: str) -> dict[str, str]:
    """The record that makes a collection a temporary of `collection` ("new" or "old")."""
    return {TEMPORARY: json.dumps({"of": collection, "role": role})}


def temporaries(
    client: Any, store: StoreAddress, collection: str, describe: Callable[[str], dict[str, Any]]
) -> list[tuple[str, State]]:
    """The temporaries of `collection` (by name, then by their record), with their state."""
    prefix = collection[: COLLECTION_MAX - len(temporary_name("", "new"))] + MARK
    try:
        names = client.list_collections(timeout=call_timeout())
    except Exception as exc:
        raise failed(store, "list collections", exc) from exc
    found = []
    for name in sorted(n for n in names if n.startswith(prefix) and n != collection):
        with contextlib.suppress(Exception):  # dropped meanwhile, or not ours
            state = read_state(describe(name).get("properties") or {})
            if state.temporary_of(name) == collection:
                found.append((name, state))
    return found


def leftover(name: str, state: State, store: StoreAddress, collection: str) -> str:
    """A temporary as `index info` lists it."""
    live = state.live(store)
    if live:
        return f"{name}: being written by a build of {collection} ({live[0].who()})"
    return f"{name}: left by a build of {collection} that stopped; the next build of {collection} removes it"
