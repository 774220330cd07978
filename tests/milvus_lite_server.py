"""A `milvus-lite server` subprocess on a free loopback port: a remote Milvus (`milvus://127.0.0.1:PORT`)
for the tests of the store and of `invedge serve --store`, so the remote code path and real connection
faults (a killed server, a restarted one) are exercised for real. A module of its own, as tiny.py is."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

WAIT_S = 60


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
