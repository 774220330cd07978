"""Milvus fixtures: Milvus Lite (the real engine, in this process) and `milvus-lite server` subprocesses.

Each client open costs about a second: galleries are built once per module. A `milvus-lite server`
on a free port stands for a remote Milvus (`milvus://127.0.0.1:PORT`), so the remote code path and
real connection faults (a killed server) are exercised for real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from milvus_testing import Server


@pytest.fixture
def milvus_server(tmp_path):
    """Factory: `milvus_server()` starts a server on a new data folder; all are killed afterwards."""
    started: list[Server] = []

    def start(data: Path | None = None) -> Server:
        server = Server(data or tmp_path / f"milvus-data-{len(started)}").start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="module")
def lite_store(tmp_path_factory) -> str:
    """A Milvus Lite store (`milvus:PATH.db`) in a module's temporary folder."""
    return f"milvus:{tmp_path_factory.mktemp('lite') / 'gallery.db'}"
