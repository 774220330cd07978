"""A real Triton Inference Server for the tests: PyTriton's `tritonserver` binary (Python backend only).

`make triton-server` installs PyPI's nvidia-pytriton wheel into .cache/pytriton (never into .venv: its
own dependencies pin numpy < 2; the binary alone needs none of them). `start_triton(repo)` serves a
model repository on free loopback ports through `scripts/tritonserver_local.py`, the way people
start it here (its docstring: the backend folder with the stub, LD_LIBRARY_PATH, PATH), and waits
until it is ready; the session fixture `triton_server` serves the repository `invedge deploy triton
--embedding python --device cpu` writes from the session's `tiny_export` (the Python backend runs
ONNX Runtime there, as this binary has no ONNX Runtime backend).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from rtsp_testing import free_port
from script_loading import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "tritonserver_local.py"
READY_TIMEOUT_S = 120.0  # model loads: the Python backend starts one stub process per model instance
STOP_TIMEOUT_S = 20.0
SERVER_FLAGS = (  # after the script's own: loopback only, fail fast, quiet
    "--allow-metrics=true",
    "--allow-gpu-metrics=false",
    "--strict-readiness=true",
    "--exit-on-error=true",
    "--log-verbose=0",
)


local = load_script(SCRIPT)


@dataclass
class TritonServer:
    """A running tritonserver: `http_url`/`grpc_url` are "127.0.0.1:PORT" (tritonclient's form)."""

    repo: Path
    model: str | None  # the invedge ensemble clients call (None: a repository without one)
    log_path: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self) -> str:
        """The server's output so far (for failure messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def missing() -> str | None:
    """None when the server can run the Python backend here, else why not and what to do (the script's
    check: a missing binary or stub Python names `make triton-server`, a missing stub its own fix)."""
    return local.missing()


def skip_or_fail(
    reason: str, install: str | None = None, what: str = "PyTriton's tritonserver binary"
) -> None:
    """Skip with the reason (and `Run install` when given), except in CI (CI=true), where a missing
    server must not pass silently."""
    message = f"the Triton tests need {what}: {reason}" + (f". Run {install}" if install else "")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require(module: str) -> ModuleType:
    """`module` imported, else skip the tests (fail under CI=true) naming it: the runtime's [triton]
    extra (tritonclient) and onnx come with `make install`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        skip_or_fail(f"{module} cannot be imported ({exc})", install="make install", what=module)
        raise  # not reached: skip_or_fail raises


def start_triton(repo: Path, model: str | None = None, work: Path | None = None) -> TritonServer:
    """Serve `repo` on free loopback ports; return once every model is ready (RuntimeError with the
    server's log when it exits or is not ready in READY_TIMEOUT_S). Stop it with `.stop()` or `with`."""
    work = work or repo.parent
    try:
        return _start(repo, model, work)
    except PortTaken:  # another process took a free port between our probe and the server's bind
        return _start(repo, model, work)


class PortTaken(RuntimeError):
    """The server could not bind one of its ports."""


def _start(repo: Path, model: str | None, work: Path) -> TritonServer:
    server = TritonServer(repo=repo, model=model, log_path=work / "tritonserver.log")
    command = [
        sys.executable,
        str(SCRIPT),
        str(repo),
        f"--http-port={server.http_port}",
        f"--grpc-port={server.grpc_port}",
        f"--metrics-port={server.metrics_port}",
        "--address=127.0.0.1",
        "--",
        *SERVER_FLAGS,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one OpenMP thread per stub: many stubs share the cores
    with server.log_path.open("wb") as log:
        server.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        if "Address already in use" in server.log():
            raise PortTaken(server.log()[-4000:]) from None
        raise
    return server


def _wait_ready(server: TritonServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    url = f"http://{server.http_url}/v2/health/ready"
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"tritonserver exited ({server.proc.returncode}):\n{server.log()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"tritonserver not ready after {READY_TIMEOUT_S:.0f} s:\n{server.log()[-4000:]}")


def statistics(server: TritonServer, model: str) -> dict:
    """Triton's statistics of `model` (the HTTP endpoint's JSON, version 1)."""
    url = f"http://{server.http_url}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["model_stats"][0]


@pytest.fixture(scope="session")
def triton_repository(tiny_export, tmp_path_factory) -> Path:
    """The repository `invedge deploy triton --embedding python --device cpu` writes from `tiny_export`
    (models named after the export's folder: see `triton_server.model`). Skips (fails under CI=true)
    without the server, before any work."""
    from invspread_edge_runtime.deploy.triton import write_repository

    if reason := missing():
        skip_or_fail(reason)

    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(tiny_export, repo, name="tiny", embedding="python", device="cpu", queue_delay_us=20_000)
    return repo


@pytest.fixture(scope="session")
def triton_server(triton_repository) -> TritonServer:
    """A real tritonserver serving `triton_repository` for the whole session (one start); the ensemble
    clients call is `triton_server.model` ("invedge_tiny"). Skips (fails under CI=true) without the binary."""
    if reason := missing():
        skip_or_fail(reason)
    with start_triton(triton_repository, model="invedge_tiny") as server:
        yield server
