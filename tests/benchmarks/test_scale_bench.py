"""benchmarks/scale.py at toy size, so that it cannot rot: every row, the Ray and single-process folders
equal, the sizing lines. The figures themselves are not checked: they are the machine's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tiny import REPO

pytest.importorskip("pymilvus", reason="the Milvus rows need the extra: pip install './runtime[milvus]'")
pytest.importorskip("ray", reason="the embed --ray rows need the extra: pip install './runtime[ray]'")
SCRIPT = REPO / "benchmarks" / "scale.py"
pytestmark = pytest.mark.xdist_group("ray")  # its embed --ray row starts a Ray cluster: one at a time


def test_toy_run_writes_every_row(tiny_export, tmp_path):
    out = tmp_path / "scale.json"
    argv = [
        sys.executable, str(SCRIPT), "--model", str(tiny_export), "--gallery", "1500", "--dim", "16",
        "--queries", "5", "--images", "150", "--jpeg-size", "32", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        argv,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report["format"] == "invspread-edge/scale/1"
    methods = [row["method"] for row in report["search"]["rows"]]
    assert methods == ["faiss flat (file index)", "Milvus Lite FLAT", "Milvus Lite HNSW"]
    exact = {row["method"]: row["recall_at_10"] for row in report["search"]["rows"]}
    assert exact["faiss flat (file index)"] == 1.0 and exact["Milvus Lite FLAT"] == 1.0  # both exact
    assert all(row["searcher"].startswith(("faiss", "numpy", "milvus")) for row in report["search"]["rows"])
    embed = report["embed"]
    assert embed["rows"]["single"]["count"] == embed["rows"]["ray"]["count"] == 150
    assert embed["same_ids"] and embed["max_abs_diff"] < 1e-4
    assert report["sizing"]["query_nodes"] >= 1 and len(report["sizing"]["lines"]) == 3
