"""Milvus fixtures: Milvus Lite (the real engine, in this process), `milvus-lite server` subprocesses, and
the real Milvus server (2.3 standalone: the C++ engine, scripts/milvus_server_local.py).

Each client open costs about a second: galleries are built once per module. A server on a free port
stands for a remote Milvus (`milvus://127.0.0.1:PORT`), so the remote code path and real connection
faults (a killed server) are exercised for real. The gallery tests run on each engine: `where` is
Milvus Lite or the session's shared standalone server (`milvus_standalone`; collection names made
unique per module there), `milvus_server` the `milvus-lite server` or a standalone server of the
test's own (for the tests that kill it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

import milvus_testing
from milvus_testing import ENGINES, SERVERS, Where


@pytest.fixture(scope="module", params=ENGINES)
def where(request, tmp_path_factory) -> Where:
    """Milvus Lite (a module's own folder) or the shared standalone server."""
    return milvus_testing.where(request.param, request, tmp_path_factory.mktemp("lite"))


@pytest.fixture(params=SERVERS)
def milvus_server(request, tmp_path):
    """Factory: `milvus_server()` starts a server of this test's own on a new data folder;
    `milvus_server(data)` starts one on `data` again (a standalone server: restarted on its own ports).
    All are killed afterwards."""
    started: list = []

    def start(data: Path | None = None):
        if request.param == "standalone":
            again = next((s for s in started if data is not None and s.data == Path(data).absolute()), None)
            if again is not None:
                return again.restart()
        server = milvus_testing.own_server(request.param, data or tmp_path / f"milvus-data-{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()
