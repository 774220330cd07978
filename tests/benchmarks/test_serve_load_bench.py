"""benchmarks/serve_load.py at toy size (one run of about 12 s), so that it cannot rot: the real server
driven by wrk (benchmarks/serve_load.lua) and by the Python clients, every row, the offline baseline
before and after, and both targets of its JSON and Markdown. The figures themselves are not checked:
they are the machine's."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
from tiny import REPO

pytest.importorskip("fastapi", reason="invedge serve needs its extra: pip install './runtime[serve]'")
SCRIPT = REPO / "benchmarks" / "serve_load.py"
CONNECTIONS = (1, 3)
NO_WRK = "wrk not installed (apt-get install wrk)"


def load_script():
    spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def toy_run(tiny_export, tmp_path_factory):
    """One toy run, both drivers (the wrk rows say so when wrk is not installed): (report, stdout, md)."""
    out = tmp_path_factory.mktemp("serve_load")
    argv = [
        sys.executable, str(SCRIPT), "--models", f"tiny={tiny_export}", "--backend", "ort-cpu",
        "--images", "12", "--jpeg-size", "32", "--seconds", "0.5", "--warmup", "0",
        "--connections", ",".join(map(str, CONNECTIONS)), "--batch", "4",
        "--json", str(out / "s.json"), "--md", str(out / "s.md"),
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
    return json.loads((out / "s.json").read_text()), proc.stdout, (out / "s.md").read_text()


def served_rows(report, driver):
    (model,) = report["models"]
    return [row for row in model["rows"] if row["driver"] == driver]


def check_rows(rows, offline):
    assert [row["connections"] for row in rows] == list(CONNECTIONS)
    for row in rows:
        assert row["requests"] > 0 and row["images_per_s"] > 0, row
        assert set(row["latency_ms"]) == {"p50", "p95", "p99"}
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p95"] <= row["latency_ms"]["p99"]
        assert row["non_2xx"] == {} and row["socket_errors"] == 0 and row["marked"] is False, row
        assert row["vs_offline"] == pytest.approx(row["images_per_s"] / offline["images_per_s"])
        assert row["threads"] == (
            row["connections"] if row["driver"] == "python" else min(row["connections"], 2)
        )


def test_offline_baseline_python_rows_and_targets(toy_run, tiny_export):
    report, stdout, md = toy_run
    assert report["format"] == "invspread-edge/serve-load/2"
    (model,) = report["models"]
    assert model["name"] == "tiny" and model["model"] == {
        "path": str(tiny_export),
        "source": "given with --models",
    }
    assert model["backend"]["same"] and model["backend"]["served"]["name"] == "ort-cpu"
    assert model["server_exit_code"] == 0
    assert model["body"] in ("raw", "multipart")
    offline = model["offline"]
    before, after = offline["before"]["images_per_s"], offline["after"]["images_per_s"]
    assert before > 0 and after > 0 and offline["images_per_s"] == pytest.approx((before + after) / 2)
    assert offline["drift"]["images_per_s"] == pytest.approx(after / before - 1)
    assert offline["served_max_abs_diff"] < 1e-4  # the service embeds as Embedder.embed does
    check_rows(served_rows(report, "python"), offline)

    found = model["targets"]
    rate, latency = found["rate"]["python"], found["latency"]["python"]
    assert rate["connections"] == max(CONNECTIONS) and rate["target"] == 0.7 and isinstance(rate["met"], bool)
    assert latency["connections"] == min(CONNECTIONS) and latency["target_ms"] == 1.0
    assert latency["overhead_ms"] == pytest.approx(
        latency["served_p50_ms"] - latency["offline_single_p50_ms"]
    )
    assert latency["met"] == (latency["overhead_ms"] <= 1.0)
    for words in (
        "| offline before |",
        "| offline after |",
        "offline mean (drift",
        "| python | 3 |",
        "× offline",
    ):
        assert words in md and words in stdout, md


def test_wrk_rows(toy_run):
    report, _, md = toy_run
    if shutil.which("wrk") is None:
        assert [row["skipped"] for row in served_rows(report, "wrk")] == [NO_WRK] * len(CONNECTIONS)
        message = f"the wrk rows need wrk: {NO_WRK}. Run make wrk"
        if os.environ.get("CI", "").lower() == "true":  # `make test` installs it: it must not pass silently
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    (model,) = report["models"]
    check_rows(served_rows(report, "wrk"), model["offline"])
    assert report["setup"]["wrk"].startswith("wrk ")
    assert model["targets"]["judged_by"] == "wrk" and model["targets"]["rate"]["wrk"]["target"] == 0.7
    assert "| wrk | 3 |" in md and "wrk (judged)" in md


def test_without_wrk_the_rows_say_how_to_get_it(tmp_path):
    """No wrk: its rows name the install, the Python rows judge the targets, the tables still render."""
    script = load_script()
    args = script.parse_args(["--models", "width64", "--connections", "1,2"])
    skipped = script.drive_wrk(None, "http://127.0.0.1:9", [], 2, "raw", tmp_path, args)
    assert skipped == {"driver": "wrk", "connections": 2, "skipped": NO_WRK}
    python = script.mark({
        "driver": "python", "connections": 2, "threads": 2, "seconds": 1.0, "images_per_s": 90.0, "requests": 90,
        "latency_ms": {"p50": 2.0, "p95": 3.0, "p99": 4.0}, "non_2xx": {"503": 1}, "socket_errors": 0,
        "vs_offline": 0.9,
    })  # fmt: skip
    assert python["marked"]  # one non-2xx answer marks the row, and fails the target it decides
    offline = {"images_per_s": 100.0, "single_p50_ms": 1.5}
    found = script.targets("width64", offline, [skipped, python])
    assert found["judged_by"] == "python" and found["rate"]["python"]["target"] == 0.8
    assert found["rate"]["python"]["met"] is False and found["latency"]["python"]["met"] is False
    assert found["latency"]["python"]["p50_vs_bound"] == pytest.approx(2.0 / 2.5)
    lines = "\n".join(script.target_lines(found))
    assert "FAIL (marked row)" in lines and script.row_line(skipped).endswith(NO_WRK)
