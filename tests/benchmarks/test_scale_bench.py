"""benchmarks/scale.py at toy size, so that it cannot rot: every row, the Ray and single-process folders
equal, the sizing lines; the Milvus server rows on servers the script starts itself. The figures
themselves are not checked: they are the machine's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import milvus_testing
import pytest
from tiny import REPO

pytest.importorskip("pymilvus", reason="the Milvus rows need the extra: pip install './runtime[milvus]'")
SCRIPT = REPO / "benchmarks" / "scale.py"
TOY = ["--sizes", "1500", "--dim", "16", "--queries", "5"]


def run_script(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *TOY, *args, "--json", str(out)],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["format"] == "invspread-edge/scale/2"
    return report


@pytest.mark.xdist_group("ray")  # its embed --ray row starts a Ray cluster: one at a time
def test_toy_run_writes_every_row(tiny_export, tmp_path):
    pytest.importorskip("ray", reason="the embed --ray rows need the extra: pip install './runtime[ray]'")
    report = run_script(
        tmp_path, "--model", str(tiny_export), "--images", "150", "--jpeg-size", "32", "--skip", "server"
    )

    (size,) = report["search"]["sizes"]
    assert size["gallery"] == 1500
    methods = [row["method"] for row in size["rows"]]
    assert methods == ["faiss flat (file index)", "Milvus Lite FLAT"]
    exact = {row["method"]: row["recall_at_10"] for row in size["rows"]}
    assert exact["faiss flat (file index)"] == 1.0 and exact["Milvus Lite FLAT"] == 1.0  # both exact
    assert all(row["searcher"].startswith(("faiss", "numpy", "milvus")) for row in size["rows"])
    assert size["rows"][0]["file_mb"] >= 0 and size["rows"][1]["insert_s"] >= 0
    embed = report["embed"]
    assert embed["rows"]["single"]["count"] == embed["rows"]["ray"]["count"] == 150
    assert embed["same_ids"] and embed["max_abs_diff"] < 1e-4
    assert report["sizing"]["query_nodes"] >= 1 and len(report["sizing"]["lines"]) == 3


def test_toy_server_rows(tmp_path):
    """FLAT and HNSW on a Milvus server each (started by scripts/milvus_server_local.py): exact FLAT,
    tuned HNSW, the server's memory measured, the sizing lines from it."""
    why = milvus_testing.local.available()
    if why is not None:
        milvus_testing.skip_or_fail(why)
    report = run_script(tmp_path, "--skip", "embed,lite")

    rows = {row["method"]: row for row in report["search"]["sizes"][0]["rows"]}
    assert list(rows) == ["faiss flat (file index)", "Milvus server FLAT", "Milvus server HNSW"]
    assert (
        rows["Milvus server FLAT"]["recall_at_10"]
        == rows["Milvus server FLAT"]["recall_at_10_reloaded"]
        == 1.0
    )
    assert 0 < rows["Milvus server HNSW"]["recall_at_10_reloaded"] <= 1.0
    assert (
        rows["Milvus server HNSW"]["ef_search"] >= 64 and rows["Milvus server HNSW"]["build_recall_at_10"] > 0
    )
    for row in (rows["Milvus server FLAT"], rows["Milvus server HNSW"]):
        assert row["rss_mb"] >= row["rss_empty_mb"] > 0 and row["engine_single_ms"] > 0
        assert row["build_s"] >= row["insert_s"] >= 0 and row["tuning_s"] >= 0
    sizing = report["sizing"]
    assert sizing["server_flat"]["at_items"] == sizing["server_hnsw"]["at_items"] == 1500
    assert len(sizing["lines"]) == 4  # the title, the arithmetic, the server's FLAT and HNSW lines
