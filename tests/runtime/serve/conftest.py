"""`served`: the real `invedge serve` in a subprocess on 127.0.0.1 (a free port), for every serve test.

    def test_x(served, tiny_export, serve_index):
        with served(tiny_export, serve_index, "--max-batch", "8", token="a-secret-token") as server:
            urlopen(f"{server.url}/healthz")          # server.token: the bearer token, or None
        # on leaving: SIGTERM, then exit code 0 asserted (in-flight requests drained)

    with served(tiny_export, None, "--store", store, "--collection", "c") as server:   # a Milvus gallery

The factory waits for the one serving line on stderr (up to 120 s) and parses the URL from it.
A server not used as a context manager is stopped (and checked) at the end of the session.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SERVING = re.compile(r"serving (http://\S+)")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
INVEDGE = [sys.executable, "-c", "import sys; from invspread_edge_runtime.cli import main; sys.exit(main())"]


@dataclass
class Served:
    """A running `invedge serve`: its URL, its token (None: none) and its process."""

    url: str
    token: str | None
    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)  # its stderr so far (a thread keeps reading it)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def stderr(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal it and wait; the exit code must be 0 (a clean drain)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"invedge serve did not stop within {STOP_TIMEOUT_S} s:\n{self.stderr()}")
        assert self.proc.returncode == 0, f"invedge serve exited {self.proc.returncode}:\n{self.stderr()}"
        return self.proc.returncode

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    model: Path, index: Path | None, *extra: object, token: str | None = None, folder: Path
) -> Served:
    """Start `invedge serve MODEL --index INDEX --port 0 EXTRA...` and wait for its serving line
    (`index` None: no --index, the gallery is in EXTRA: --store S --collection C)."""
    gallery = ["--index", str(index)] if index is not None else []
    args = [*INVEDGE, "serve", str(model), *gallery, "--port", "0", *map(str, extra)]
    if token is not None:
        token_file = folder / f"token-{uuid.uuid4().hex[:8]}"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        args += ["--token-file", str(token_file)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if SERVING.search(line):
                found.set()
        found.set()  # the process ended

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not found.wait(0.1) and time.monotonic() < deadline:
        pass
    match = next((m for line in lines if (m := SERVING.search(line))), None)
    if match is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"invedge serve did not start (exit {proc.returncode}):\n{''.join(lines)}")
    return Served(match.group(1), token, proc, lines)


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """Factory: `served(model, index, *extra_args, token=None) -> Served` (also a context manager)."""
    folder = tmp_path_factory.mktemp("served")
    started: list[Served] = []

    def serve(model: Path, index: Path | None, *extra: object, token: str | None = None) -> Served:
        server = start_server(model, index, *extra, token=token, folder=folder)
        started.append(server)
        return server

    yield serve
    for server in started:
        if server.proc.poll() is None:
            server.stop()


@pytest.fixture(scope="session")
def serve_embeddings(tiny_export, image_folder, tmp_path_factory) -> Path:
    """The 40 test images embedded by the tiny export (model.onnx): an embeddings folder, read only."""
    from tiny import invedge

    embeddings = tmp_path_factory.mktemp("serve_gallery") / "gallery.emb"
    assert (
        invedge("embed", tiny_export / "model.onnx", image_folder, "--out", embeddings, "-b", "ort-cpu") == 0
    )
    return embeddings


@pytest.fixture(scope="session")
def serve_index(serve_embeddings) -> Path:
    """`serve_embeddings` indexed (flat): read only."""
    from tiny import invedge

    index = serve_embeddings.parent / "gallery.index"
    assert invedge("index", "build", serve_embeddings, "--out", index) == 0
    return index


@pytest.fixture
def writable_index(serve_index, tmp_path) -> Path:
    """A copy of `serve_index` a test may change."""
    copy = tmp_path / "gallery.index"
    shutil.copyfile(serve_index, copy)
    return copy
