"""benchmarks/explore.py at toy size, so that it cannot rot: every step in its own process, the planted
duplicates found, the tables written. The times and memory themselves are not checked: they are the
machine's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from script_loading import load_script
from tiny import REPO

SCRIPT = REPO / "benchmarks" / "explore.py"


def test_vectors_are_unit_seeded_and_hold_the_planted_copies():
    bench = load_script(SCRIPT)
    vectors, truth, copies = bench.make_vectors(2000, 16, 5, 0.02, seed=0, block=300)
    again, _, _ = bench.make_vectors(2000, 16, 5, 0.02, seed=0, block=700)
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.array_equal(vectors, again)  # the same vectors whatever the block size
    assert 0 < len(copies) <= 40 and set(truth.tolist()) <= set(range(5))
    cosines = (vectors[copies[:, 0]] * vectors[copies[:, 1]]).sum(axis=1)
    assert cosines.min() > 0.95


def test_bad_arguments_are_one_line_errors():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "50", "--k", "100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "every size needs more items" in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "dedup,sort"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "unknown value in --steps: sort" in proc.stderr


def test_toy_run_writes_every_step(tmp_path):
    pytest.importorskip(
        "sklearn", reason="the explore steps need the extra: pip install './runtime[explore]'"
    )
    out = tmp_path / "explore"
    argv = [sys.executable, str(SCRIPT), "--sizes", "3000", "--dim", "32", "--clusters", "6", "--k", "6",
            "--count", "20", "--map-size", "600", "--map-methods", "pca", "--json", str(out / "e.json"),
            "--md", str(out / "e.md")]  # fmt: skip
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "e.json").read_text())
    assert report["format"] == "invspread-edge/explore-bench/1"
    rows = {row["step"]: row for row in report["rows"]}
    assert list(rows) == ["dedup (exact)", "dedup (approximate)", "cluster", "select", "map (pca)"]
    for row in rows.values():
        assert row["peak_mb"] >= row["vectors_mb"] > 0, row
    dedup = rows["dedup (exact)"]
    assert dedup["planted"] > 0 and dedup["planted_found"] == dedup["planted"] <= dedup["pairs"]
    assert 0 < rows["dedup (approximate)"]["planted_found"] <= dedup["planted"]
    assert rows["cluster"]["nmi_vs_generating"] > 0.9  # six well-separated clusters
    assert rows["select"]["count"] == 20 and 0 < rows["select"]["coverage"]["max_distance"] <= 2
    assert rows["map (pca)"]["items"] == 600 and rows["map (pca)"]["method"] == "pca"
    md = (out / "e.md").read_text()
    assert "| dedup (exact) | 3,000 |" in md and "ru_maxrss" in md
