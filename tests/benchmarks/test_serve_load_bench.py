"""benchmarks/serve_load.py at toy size (a few seconds), so that it cannot rot: the real server, every
row and both ratios of its JSON. The figures themselves are not checked: they are the machine's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tiny import REPO

pytest.importorskip("fastapi", reason="invedge serve needs its extra: pip install './runtime[serve]'")
SCRIPT = REPO / "benchmarks" / "serve_load.py"
CLIENTS = (1, 3)


def test_toy_run_writes_every_row_and_ratio(tiny_export, tmp_path):
    out = tmp_path / "serve_load.json"
    argv = [
        sys.executable, str(SCRIPT), "--model", str(tiny_export), "--backend", "ort-cpu",
        "--images", "12", "--jpeg-size", "32", "--seconds", "0.5", "--warmup", "0.2",
        "--clients", ",".join(map(str, CLIENTS)), "--batch", "4", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        argv,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report["format"] == "invspread-edge/serve-load/1"
    assert report["model"] == {"path": str(tiny_export), "source": "given with --model"}
    assert report["backend"]["same"] and report["backend"]["served"]["name"] == "ort-cpu"
    assert report["server_exit_code"] == 0
    offline = report["offline"]
    assert offline["images_per_s"] > 0 and offline["single_latency_ms"]["p50"] > 0
    assert offline["served_max_abs_diff"] < 1e-4  # the service embeds as Embedder.embed does
    assert [row["clients"] for row in report["rows"]] == list(CLIENTS)
    for row in report["rows"]:
        assert row["requests"] > 0 and row["images_per_s"] > 0, row
        assert set(row["latency_ms"]) == {"p50", "p95", "p99"}
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p95"] <= row["latency_ms"]["p99"]
        assert row["connection_errors"] == 0 and row["other_statuses"] == {}, row
        assert row["vs_offline"] == pytest.approx(row["images_per_s"] / offline["images_per_s"])
    rate, latency = report["ratios"]["rate"], report["ratios"]["latency"]
    assert rate["clients"] == max(CLIENTS) and rate["target"] == 0.8 and isinstance(rate["met"], bool)
    assert latency["clients"] == min(CLIENTS) and latency["target_ms"] == 3.0
    assert latency["overhead_ms"] == pytest.approx(
        latency["served_p50_ms"] - latency["offline_single_p50_ms"]
    )
    for words in ("offline (batches)", "offline (1 image)", "served, 3 clients", "× the offline rate"):
        assert words in proc.stdout, proc.stdout
