"""benchmarks/gpu_check.sh: its dry run (every step at toy size on the CPU) and its report.

The real check needs a CUDA GPU (an H200 when one is lent); what runs here is the same script and
the same code paths at toy size, so a broken step shows up in the default suite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from tiny import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = ("environment", "throughput", "train_fp16", "long_run", "cifar10_estimate", "export_verify", "bench")


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "report.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return proc, out


def test_dry_run_runs_every_step(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["format"] == "invspread-edge/gpu-check/1"
    assert report["dry_run"] is True and report["what"].startswith("DRY RUN")
    assert tuple(report["steps"]) == STEPS
    assert {name: s["status"] for name, s in report["steps"].items()} == dict.fromkeys(STEPS, "ok")
    for name in STEPS:
        assert name in proc.stdout  # the table names every step
    assert "DRY RUN" in proc.stdout


def test_throughput_rows_cover_precisions_and_compile(dry_run):
    _, out = dry_run
    rows = json.loads(out.read_text())["steps"]["throughput"]["rows"]
    assert [(r["precision"], r["compiled"]) for r in rows] == [
        ("bf16", False),
        ("bf16", True),
        ("fp16", False),
        ("fp16", True),
    ]
    for r in rows:
        assert r["loop_images_per_s"] > 0 and r["bare_images_per_s"] > 0
        assert r["loop_over_bare"] == pytest.approx(r["loop_images_per_s"] / r["bare_images_per_s"], rel=0.01)
        assert r["meets_target"] == (r["loop_over_bare"] >= 0.9)
        assert "peak_memory_mb" in r and r["augment_device"] == "cpu"
        assert r["grad_scaler"] is (r["precision"] == "fp16")
        assert r["compile_backend"] == ("eager" if r["compiled"] else None)


def test_long_run_estimate_and_bench_records(dry_run):
    _, out = dry_run
    steps = json.loads(out.read_text())["steps"]
    long = steps["long_run"]
    assert long["epochs"] == 2 and [e for e, _ in long["knn"]] == [1, 2]
    assert 0 <= long["final_knn_accuracy"] <= 1 and long["cpu_recipe"]["knn_accuracy"] == 0.8513
    assert long["vs_cpu_recipe_points"] == pytest.approx(
        100 * (long["final_knn_accuracy"] - 0.8513), abs=0.01
    )
    fp16 = steps["train_fp16"]
    assert fp16["device"] == "cpu" and fp16["trained_precision"] == fp16["precision"] == "bf16"  # dry run
    estimate = steps["cifar10_estimate"]
    assert "ESTIMATE" in estimate["kind"] and estimate["measured_images_per_s"] == long["images_per_s"]
    assert [r["status"] for r in steps["export_verify"]["verify"]] == ["pass"]
    rows = steps["bench"]["rows"]
    assert {r["precision"] for r in rows} == {"fp32", "bf16", "fp16"} and {r["runtime"] for r in rows} == {
        "torch"
    }
    ran = [r for r in rows if r["status"] == "ok"]
    assert sorted({r["batch"] for r in ran}) == [1, 4]
    assert all(r["verify"].startswith("pass ") for r in ran)  # the bench's probe check column
    (fp16_row,) = [r for r in rows if r["precision"] == "fp16"]
    assert (
        fp16_row["status"] == "not present" and "CUDA" in fp16_row["reason"]
    )  # the CPU has no fp16 torch row


def test_cifar10_estimate_is_plain_arithmetic():
    gpu_check = _module()
    check = SimpleNamespace(report={"steps": {"long_run": {"images_per_s": 10000.0}}})
    estimate = gpu_check.cifar10_estimate(check)
    # 1e7 images at 10000 / (32/28)^2 images/s
    assert estimate["estimated_hours"] == pytest.approx(1e7 / (10000 / (32 / 28) ** 2) / 3600, abs=0.01)


def test_missing_fashion_mnist_is_one_line(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "INVEDGE_FASHION_MNIST": str(tmp_path / "none")}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path / "r.json")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "INVEDGE_FASHION_MNIST" in proc.stderr
