"""Milvus fixtures: Milvus Lite (the real engine, in this process) and `milvus-lite server` subprocesses.

Each client open costs about a second: galleries are built once per module. A `milvus-lite server`
on a free port stands for a remote Milvus (`milvus://127.0.0.1:PORT`), so the remote code path and
real connection faults (a killed server) are exercised for real.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from milvus_lite_server import WAIT_S, Server, free_port  # noqa: F401 (the tests import them from here)


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
