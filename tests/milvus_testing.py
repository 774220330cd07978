"""What the Milvus tests share: a `milvus-lite server` subprocess on a free loopback port (a remote Milvus,
`milvus://127.0.0.1:PORT`, so the remote code path and real connection faults, a killed server and a
restarted one, are exercised for real), a synthetic gallery, and the one-line-error checks. A module of
its own, as tiny.py is: `from conftest import` can find tests/runtime/serve/conftest.py instead,
depending on which one a pytest worker imported first.

The real Milvus server (`milvus-server`, Milvus 2.3 standalone: the C++ engine) starts through
scripts/milvus_server_local.py, as people start it: `standalone(folder)` here, the session fixture
`milvus_standalone` (tests/conftest.py) for the tests that share one, `unique_collection()` so that
tests sharing it never collide. Where it cannot run, they skip saying why (and fail under CI=true).
Its client port needs a token: every test server logs root in with TOKEN, which the tests on it get as
MILVUS_TOKEN (`token_env`; Milvus Lite ignores it, a `milvus-lite server` asks for none)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from script_loading import load_script

WAIT_S = 60
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "milvus_server_local.py"
# the test servers' time tick: each Strong read waits for the next one (Milvus' default 200 ms), and the
# tests make hundreds; the figures in benchmarks/scale.py come from a server at Milvus' default
TICK_MS = 20
STANDALONE_GROUP = "milvus-server"  # xdist_group of every test on the shared server: one worker starts it
# root's password on every real server this process starts: one MILVUS_TOKEN reaches them all
PASSWORD = secrets.token_urlsafe(18)
TOKEN = f"root:{PASSWORD}"


local = load_script(SCRIPT)


def skip_or_fail(reason: str) -> None:
    """Skip with the reason, except in CI (CI=true), where a missing server must not pass silently."""
    message = f"the Milvus server tests need milvus-server: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def standalone(data: Path, port: int | None = None):
    """A started `MilvusServer` on `data` (skips, or fails under CI, where it cannot run); its start
    time in seconds is `server.started_s`, the call timeout for tests that kill it `call_timeout_s`."""
    why = local.available()
    if why is not None:
        skip_or_fail(why)
    began = time.monotonic()
    server = local.MilvusServer(data, port, tick_ms=TICK_MS, password=PASSWORD).start()
    server.started_s = time.monotonic() - began
    server.call_timeout_s = 10  # INVEDGE_MILVUS_TIMEOUT for a test that kills it: a load takes seconds
    return server


def on_standalone(item) -> bool:
    """Whether a test runs on a real server (its xdist group says so: the module's or its param's)."""
    return any(
        STANDALONE_GROUP in (*mark.args, *mark.kwargs.values()) for mark in item.iter_markers("xdist_group")
    )


def token_env(monkeypatch) -> None:
    """MILVUS_TOKEN for the real servers' tests, in-process calls and the commands they start."""
    monkeypatch.setenv("MILVUS_TOKEN", TOKEN)


def unique_collection(prefix: str = "t") -> str:
    """A collection name no other test uses (tests share one server)."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# The engines a gallery test runs on, and the servers a test of its own kills (pytest params: the real
# server's carry the xdist group, so that one worker starts the shared one)
ENGINES = ["lite", pytest.param("standalone", marks=pytest.mark.xdist_group(STANDALONE_GROUP))]
SERVERS = ["lite-server", pytest.param("standalone", marks=pytest.mark.xdist_group(STANDALONE_GROUP))]


@dataclass(frozen=True)
class Where:
    """Where a test's galleries live: `store`, and `name(base)` for a collection name of its own;
    `token` for a pymilvus client of the test's own."""

    store: str
    suffix: str = ""
    token: str = ""

    def name(self, base: str) -> str:
        return base + self.suffix


def where(engine: str, request, folder: Path) -> Where:
    """Milvus Lite (`milvus:FOLDER/gallery.db`) or the session's shared standalone server (`milvus_standalone`,
    started on first use; collection names made unique; MILVUS_TOKEN set until `request`'s scope ends,
    for the galleries its fixtures build)."""
    if engine == "lite":
        return Where(f"milvus:{folder / 'gallery.db'}")
    server = request.getfixturevalue("milvus_standalone")
    patch = pytest.MonkeyPatch()
    request.addfinalizer(patch.undo)
    token_env(patch)
    return Where(server.store, f"_{uuid.uuid4().hex[:8]}", server.token)


def own_server(kind: str, data: Path):
    """A started server of a test's own on `data`: a `milvus-lite server` or a real one (standalone)."""
    return Server(data).start() if kind == "lite-server" else standalone(data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A `milvus-lite server` subprocess on `port`, its data in `data`."""

    data: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    call_timeout_s = 1  # INVEDGE_MILVUS_TIMEOUT for a test that kills it: answers come at once

    @property
    def store(self) -> str:
        return f"milvus://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "milvus_lite",
                "server",
                "--data-dir",
                str(self.data),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "milvus-lite server exited at start"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        raise AssertionError("milvus-lite server did not listen")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)


def synthetic(n: int = 2000, dim: int = 32, seed: int = 0, space_id: str = "space-a", prefix: str = "img"):
    """An `EmbeddingSet` look-alike: unit vectors, ids, image paths, a space and a model."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{prefix}/{i:05d}.png" for i in range(n)]
    paths = [f"/photos/{prefix}/{i:05d}.png" for i in range(n)]
    return SimpleNamespace(
        vectors=vectors,
        ids=ids,
        space={"space_id": space_id, "embedding_dim": dim, "checkpoint_sha256": "0" * 64},
        space_id=space_id,
        dim=dim,
        locations=lambda: list(paths),
        manifest={"model": {"path": "/models/model.onnx", "precision": "fp32"}},
    )


def embeddings_folder(out: Path, n: int, dim: int = 16, seed: int = 0, prefix: str = "img") -> Path:
    """A real embeddings folder (as `invedge embed` writes it) of `n` synthetic unit vectors."""
    from invspread_edge_runtime.embeddings.writer import EmbeddingWriter

    emb = synthetic(n, dim, seed=seed, prefix=prefix)
    space = {"space_id": "space-a", "checkpoint_sha256": "0" * 64, "embedding_dim": dim}
    model = {"path": "/models/model.onnx", "sha256": "aa" * 32, "precision": "fp32"}
    writer = EmbeddingWriter(out, space=space, model=model, root=out.parent / "photos")
    writer.add(emb.ids, emb.vectors)
    writer.finish()
    return out


TEMPORARY = "photos__invedge_new_0a1b2c3d"


def stopped_store(folder: Path, emb: Path, left: str, source: Path | None = None) -> str:
    """A Milvus Lite store in `folder` (`milvus:FOLDER/g.db`) whose collection `photos` of `emb` is
    left as a command stopped by `kill -9` leaves it, its records written directly (state.py):
    "build" (a first build stopped: incomplete, 4 × its items expected), "temporary" (a complete
    `photos` and an --overwrite's temporary), "swap" (only the temporary: stopped between the swap's
    renames), "add" (complete, an `index add` of `source` stopped midway)."""
    import pytest

    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    import os
    import socket

    from invspread_edge_runtime.embeddings.reader import load_embeddings
    from invspread_edge_runtime.milvus_store import state as records
    from invspread_edge_runtime.milvus_store.build import build_gallery

    store = f"milvus:{folder / 'g.db'}"
    embeddings = load_embeddings(emb)
    name = TEMPORARY if left in ("temporary", "swap") else "photos"
    if left == "temporary":
        build_gallery(embeddings, store, "photos").close()
    with build_gallery(embeddings, store, name) as gallery:
        now, marks = time.time(), {}
        if left == "build":
            marks = records.building(4 * len(embeddings), os.path.abspath(emb))
        elif left in ("temporary", "swap"):
            marks = records.temporary("photos", "new")
        elif left == "add":
            writer = records.Writer(
                "0a1b2c3d4e5f", "add", os.path.abspath(source or emb), 10, "", socket.gethostname(),
                2**22 + 12345, now, now,
            )  # fmt: skip
            marks = {writer.key: writer.text()}
        records.set_properties(gallery.client, gallery.store, name, marks)
    return store


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def error_line(text: str) -> str:
    """The one error line of a command that may have said what it was doing first (never a traceback)."""
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]
