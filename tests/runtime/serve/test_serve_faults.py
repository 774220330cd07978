"""`invedge serve` under faults keeps serving or says why: a damaged or deleted index file (the last good
copy answers searches, /readyz says 503 and why, writes are refused and never written over it), a
request that can never succeed (413, not "busy"), a file lock held elsewhere (503 naming the holder),
a backend that fails mid-request (the batch fails, the worker lives on), an address not on this host.

One server of its own (its index file is a private copy this module damages and restores), started
with INVEDGE_LOCK_TIMEOUT=1 so that a write waiting for another process's lock gives up at once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from serve_client import call, get, image_files, multipart, post_files

from invspread_edge_runtime import Index
from invspread_edge_runtime.errors import InvedgeError, LockedError
from invspread_edge_runtime.index import index_file
from invspread_edge_runtime.locks import exclusive_lock
from invspread_edge_runtime.serve.batcher import DynamicBatcher
from invspread_edge_runtime.serve.errors import ServeError
from invspread_edge_runtime.serve.gallery import LiveGallery
from invspread_edge_runtime.serve.server import bind

QUEUE = 2
WAIT_S = 30.0  # the longest any step here may take (a bound, never a timing that is asserted)
NOT_HERE = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never an address of this host


@pytest.fixture(scope="module")
def index_copy(serve_index, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "gallery.index"
    shutil.copyfile(serve_index, path)
    return path


@pytest.fixture(scope="module")
def server(served, tiny_export, index_copy):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("INVEDGE_LOCK_TIMEOUT", "1")  # the server's writes wait 1 s for another process
        running = served(tiny_export / "model.onnx", index_copy, "--backend", "ort-cpu", "--queue", QUEUE)
    with running:
        yield running


@pytest.fixture(scope="module")
def image(image_folder) -> tuple[str, bytes]:
    path = image_files(image_folder, 1)[0]
    return path.name, path.read_bytes()


def replace(path: Path, data: bytes) -> None:
    """Put `data` at `path` as another file would arrive (a new inode, atomically)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def flipped(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x5A
    return bytes(damaged)


def logged(server, *words: str) -> list[str]:
    """The server's stderr lines holding all `words`, once one is there (its stderr is read by a thread)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found = [line for line in list(server.lines) if all(w in line for w in words)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# --- requests that can never succeed: 4xx saying which limit, never 503 "busy" ----------------------


def test_more_images_than_the_queue_holds_is_413_naming_the_flag(server, image_folder):
    files = [(p.name, p.read_bytes()) for p in image_files(image_folder, QUEUE + 1)]
    for path in ("/v1/embed", "/v1/search?k=2"):
        refused = post_files(server.url, path, files)
        assert refused.status == 413 and "retry-after" not in refused.headers, refused.body
        assert f"at most {QUEUE} per request (--queue {QUEUE})" in refused.error["message"]
        assert "larger --queue" in refused.error["hint"]
    assert post_files(server.url, "/v1/search?k=2", files[:QUEUE]).status == 200
    assert get(server.url, "/v1/info").json()["limits"]["max_images"] == QUEUE


def test_too_many_or_too_large_form_fields_are_413_and_a_malformed_body_400(server, image):
    fields = {f"f{n}": "x" for n in range(65)}
    many = post_files(server.url, "/v1/embed", [image], fields)
    assert many.status == 413 and "more than 64 text fields" in many.error["message"]
    large = post_files(server.url, "/v1/gallery", [image], {"id": "x" * (65 * 1024)})
    assert large.status == 413 and "over 64 KB" in large.error["message"]
    body, _ = multipart([image], {})
    malformed = call(server.url, "POST", "/v1/embed", body, {"Content-Type": "multipart/form-data"})
    assert malformed.status == 400 and "malformed" in malformed.error["message"] and malformed.error["hint"]


# --- the index file damaged, deleted or locked while the server runs --------------------------------


def test_a_damaged_index_keeps_the_last_good_copy_and_says_why(server, index_copy, image):
    good = index_copy.read_bytes()
    answer = post_files(server.url, "/v1/search?k=3", [image]).json()
    first_id = Index.load(index_copy).ids[0]
    replace(index_copy, flipped(good))
    try:
        for _ in range(3):
            again = post_files(server.url, "/v1/search?k=3", [image])
            assert again.status == 200 and again.json() == answer
        ready = get(server.url, "/readyz")
        assert ready.status == 503, ready.body
        assert f"{index_copy} is damaged" in ready.error["message"]
        assert "last good copy (40 items)" in ready.error["message"]
        assert "picks up a good file" in ready.error["hint"]
        info = get(server.url, "/v1/info")
        assert info.status == 200 and "damaged" in info.json()["gallery"]["problem"]
        added = post_files(server.url, "/v1/gallery", [image], {"id": "during-the-fault"})
        assert added.status == 503 and "changes are refused" in added.error["message"], added.body
        removed = call(server.url, "DELETE", f"/v1/gallery/{first_id}")
        assert removed.status == 503 and "damaged" in removed.error["message"]
        assert index_copy.read_bytes() == flipped(good)  # never written over from the stale copy
    finally:
        replace(index_copy, good)
    assert get(server.url, "/readyz").json()["gallery"] == 40
    assert "problem" not in get(server.url, "/v1/info").json()["gallery"]
    assert logged(server, "readable again"), server.stderr()
    assert len(logged(server, "warning:", str(index_copy), "damaged")) == 1, server.stderr()
    assert "Traceback" not in server.stderr()


def test_a_deleted_index_keeps_the_last_good_copy_and_writes_create_nothing(server, index_copy, image):
    good = index_copy.read_bytes()
    index_copy.unlink()
    try:
        assert post_files(server.url, "/v1/search?k=3", [image]).status == 200
        ready = get(server.url, "/readyz")
        assert ready.status == 503 and "index not found" in ready.error["message"]
        added = post_files(server.url, "/v1/gallery", [image], {"id": "into-nothing"})
        assert added.status == 503 and "index not found" in added.error["message"]
        assert not index_copy.exists()
    finally:
        replace(index_copy, good)
    assert get(server.url, "/readyz").status == 200
    added = post_files(server.url, "/v1/gallery", [image], {"id": "after-the-fault"})
    assert added.status == 201 and added.json()["items"] == 41
    assert call(server.url, "DELETE", "/v1/gallery/after-the-fault").json()["items"] == 40
    assert len(logged(server, "warning:", str(index_copy), "not found")) == 1, server.stderr()
    assert "Traceback" not in server.stderr()


def test_a_write_while_another_process_holds_the_file_is_503_naming_it(server, index_copy, image):
    with index_file.writing(index_copy):  # this test process is "the other writer"
        added = post_files(server.url, "/v1/gallery", [image], {"id": "while-locked"})
        assert added.status == 503 and added.headers["retry-after"] == "1", added.body
        assert f"another invedge process (pid {os.getpid()}" in added.error["message"]
        assert "not changed" in added.error["message"]
    assert "while-locked" not in Index.load(index_copy).ids
    assert get(server.url, "/readyz").status == 200
    assert "Traceback" not in server.stderr()


def test_the_servers_own_writes_never_wait_on_themselves(serve_index, tmp_path, monkeypatch, capsys):
    """Two adds at once in one process: the second waits for the first inside the process, and no
    message calls the server itself "another process"."""
    path = tmp_path / "g.index"
    shutil.copyfile(serve_index, path)
    gallery = LiveGallery(path)
    held = Index.load(path)
    vector, space_id = held.vectors[0], held.space_id
    saving, release = threading.Event(), threading.Event()
    save = Index.save

    def slow_save(index: Index, target: Path) -> int:
        if not saving.is_set():  # the first add holds the file's lock until released
            saving.set()
            assert release.wait(WAIT_S)
        return save(index, target)

    monkeypatch.setattr(Index, "save", slow_save)
    errors: list[BaseException] = []

    def add(item_id: str) -> None:
        try:
            gallery.add(item_id, vector, space_id)
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=add, args=("first",))
    first.start()
    assert saving.wait(WAIT_S)
    second = threading.Thread(target=add, args=("second",))
    second.start()
    second.join(0.5)  # long enough for a lock poll to announce a wait, if the second add polled the lock
    release.set()
    first.join(WAIT_S)
    second.join(WAIT_S)
    assert not errors, errors
    assert {"first", "second"} <= set(Index.load(path).ids)
    err = capsys.readouterr().err
    assert "another process" not in err and "waiting for" not in err, err


def test_a_lock_held_by_this_process_says_so(tmp_path):
    target = tmp_path / "g.index"
    with (
        exclusive_lock(target, "index"),
        pytest.raises(LockedError) as held,
        exclusive_lock(target, "index", timeout=0),
    ):
        pass
    assert f"another thread of this process (pid {os.getpid()}" in held.value.message


def test_a_file_of_another_space_is_a_fault_not_the_gallery(serve_index, tmp_path, capsys):
    path = tmp_path / "g.index"
    shutil.copyfile(serve_index, path)
    gallery = LiveGallery(path)
    held = Index.load(path)
    gallery.space_id = held.space_id
    other = Index(
        held.vectors, held.ids, held.items.space | {"space_id": "another/32"}, locations=held.locations
    )
    other.save(path)
    index, _ = gallery.search(held.vectors[:1], 3, held.space_id)
    assert index is not None and index.space_id == held.space_id  # the last good copy answered
    with pytest.raises(ServeError) as fault:
        gallery.ready()
    assert fault.value.status == 503 and "another embedding space (another/32)" in fault.value.message
    with pytest.raises(ServeError) as refused:
        gallery.add("new", held.vectors[0], held.space_id)
    assert refused.value.status == 503
    assert capsys.readouterr().err.count("warning:") == 1


def test_a_file_that_fails_to_load_unexpectedly_is_a_fault_too(serve_index, tmp_path, monkeypatch):
    """An exception that is not the toolkit's (an engine section that passed the checks but does not
    load) is a fault like a damaged file: no 500 on every request."""
    path = tmp_path / "g.index"
    shutil.copyfile(serve_index, path)
    gallery = LiveGallery(path)
    held = Index.load(path)

    def broken(cls: type[Index], *args: object, **kwargs: object) -> Index:
        raise RuntimeError("the engine section does not load")

    monkeypatch.setattr(Index, "load", classmethod(broken))
    replace(path, path.read_bytes())  # another file arrives: reloaded at the next request
    index, result = gallery.search(held.vectors[:1], 3, held.space_id)
    assert len(index) == len(held) and result.indices.shape == (1, 3)
    with pytest.raises(ServeError) as fault:
        gallery.ready()
    assert fault.value.status == 503
    assert "cannot be loaded (RuntimeError: the engine section does not load)" in fault.value.message


def test_a_milvus_collection_dropped_while_served_is_503_saying_so(serve_embeddings, tmp_path):
    """(In this process: a Milvus Lite file is opened by one process, the server's.)"""
    pytest.importorskip("pymilvus", reason="the [milvus] extra is not installed")
    pytest.importorskip("milvus_lite", reason="the [milvus] extra is not installed")
    from invspread_edge_runtime.embeddings.reader import load_embeddings
    from invspread_edge_runtime.milvus_store.build import build_gallery
    from invspread_edge_runtime.serve.store_gallery import StoreGallery

    emb = load_embeddings(serve_embeddings)
    store = f"milvus:{tmp_path / 'g.db'}"
    build_gallery(emb, store, "gallery", kind="flat").close()
    with StoreGallery.open(store, "gallery") as gallery:
        assert gallery.ready() == len(emb.ids)
        space_id = gallery.current().space_id
        gallery.current().client.drop_collection("gallery")  # as another client of a Milvus server could
        for call_it in (
            gallery.ready,
            lambda: gallery.search(emb.vectors[:1], 3, space_id),
            lambda: gallery.add("new", emb.vectors[0], space_id),
            lambda: gallery.remove(emb.ids[0]),
        ):
            with pytest.raises(ServeError) as gone:
                call_it()
            assert gone.value.status == 503 and "dropped while served" in gone.value.message
            assert "Build the collection again" in gone.value.hint and "Retry-After" not in gone.value.headers


# --- the backend failing mid-request ---------------------------------------------------------------


class FakeEmbedder:
    """A backend whose calls do what the test says: `plan` holds one action per call (None: work)."""

    info = SimpleNamespace(max_batch=0)

    def __init__(self, *plan: object) -> None:
        self.plan = list(plan)
        self.started = threading.Event()
        self.release = threading.Event()

    def embed_uint8(self, batch: np.ndarray) -> np.ndarray:
        action = self.plan.pop(0) if self.plan else None
        if action == "block":
            self.started.set()
            assert self.release.wait(WAIT_S)
        elif action == "short":
            return np.ones((len(batch) - 1, 4), np.float32)
        elif isinstance(action, BaseException):
            raise action
        return np.ones((len(batch), 4), np.float32)


class Escaped(BaseException):
    """Not an Exception: what would end a worker thread that catches only Exception."""


IMAGE = np.zeros((3, 8, 8), np.uint8)


def embed(batcher: DynamicBatcher, count: int = 1) -> np.ndarray:
    async def bounded() -> np.ndarray:
        return await asyncio.wait_for(batcher.embed([IMAGE] * count), WAIT_S)

    return asyncio.run(bounded())


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (RuntimeError("CUDA out of memory"), "RuntimeError: CUDA out of memory"),
        (Escaped("gone"), "Escaped: gone"),
        ("short", "1 vectors back for 2 images"),
    ],
)
def test_a_backend_failure_fails_its_batch_and_the_worker_goes_on(fault, words):
    batcher = DynamicBatcher(FakeEmbedder(fault), max_batch=4, max_wait_ms=1, queue_size=8)  # type: ignore[arg-type]
    batcher.start()
    try:
        with pytest.raises(ServeError) as failed:
            embed(batcher, 2)
        assert failed.value.status == 500 and words in failed.value.message
        assert "keeps running" in failed.value.hint
        assert embed(batcher, 2).shape == (2, 4)  # the next request is served
    finally:
        batcher.stop()


def test_a_full_queue_is_503_and_a_request_past_its_size_413():
    backend = FakeEmbedder("block")
    batcher = DynamicBatcher(backend, max_batch=1, max_wait_ms=1, queue_size=2)  # type: ignore[arg-type]
    batcher.start()

    async def scenario() -> None:
        first = asyncio.ensure_future(batcher.embed([IMAGE]))
        assert await asyncio.to_thread(backend.started.wait, WAIT_S)  # the worker holds it
        queued = asyncio.ensure_future(batcher.embed([IMAGE, IMAGE]))
        await asyncio.sleep(0)  # the two are in the queue: it is full
        try:
            with pytest.raises(ServeError) as busy:
                await batcher.embed([IMAGE])
            assert busy.value.status == 503 and busy.value.headers == {"Retry-After": "1"}
            with pytest.raises(ServeError) as never:
                await batcher.embed([IMAGE] * 3)
            assert never.value.status == 413 and "--queue 2" in never.value.message
        finally:
            backend.release.set()
        await asyncio.wait_for(asyncio.gather(first, queued), WAIT_S)

    try:
        asyncio.run(scenario())
    finally:
        backend.release.set()
        batcher.stop()


def test_stop_returns_when_the_requests_left_with_the_queue_full():
    """Requests whose event loop is gone (answers cannot be delivered) and a full queue: the worker
    skips the answers, and `stop()` neither blocks on the full queue nor leaves the worker behind."""
    backend = FakeEmbedder("block")
    batcher = DynamicBatcher(backend, max_batch=1, max_wait_ms=1, queue_size=2)  # type: ignore[arg-type]
    batcher.start()

    async def leave() -> list[asyncio.Future[np.ndarray]]:
        left = [asyncio.ensure_future(batcher.embed([IMAGE]))]
        assert await asyncio.to_thread(backend.started.wait, WAIT_S)
        left.append(asyncio.ensure_future(batcher.embed([IMAGE, IMAGE])))
        await asyncio.sleep(0)
        return left  # never awaited: asyncio.run cancels them as it closes the loop

    asyncio.run(leave())  # the loop closes with three images in flight
    backend.release.set()
    stopping = threading.Thread(target=batcher.stop, daemon=True)
    stopping.start()
    stopping.join(WAIT_S)
    assert not stopping.is_alive()


# --- where the service cannot listen: the message fits the reason -----------------------------------


def test_an_address_not_on_this_host_says_so():
    with pytest.raises(InvedgeError) as refused:
        bind(NOT_HERE, 0).close()
    assert f"{NOT_HERE} is not an address of this host" in refused.value.message
    assert "stop what uses" not in str(refused.value)


def test_a_port_in_use_says_so():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvedgeError) as refused:
            bind("127.0.0.1", port).close()
    assert "the port is in use" in refused.value.message and "stop what uses it" in refused.value.hint
