"""The benchmark's outputs: markdown, JSON, the rich table and the latency plot (both engines)."""

from __future__ import annotations

import json
import sys

import pytest
from PIL import Image
from rich.console import Console

from invspread_edge_runtime.bench.report import markdown, plot_series, rich_table, write_json, write_plot
from invspread_edge_runtime.bench.runner import BenchReport, BenchRow


def ok_row(runtime: str, precision: str, batch: int, p50: float) -> BenchRow:
    return BenchRow(
        runtime, precision, batch, "ok", device="cpu", size_mb=1.5, load_ms=10.0, first_infer_ms=2.0,
        cold_start_ms=12.0, warmup=2, samples=10, p50_ms=p50, p90_ms=p50 * 1.1, p99_ms=p50 * 1.2,
        mean_ms=p50, std_ms=0.1, min_ms=p50 * 0.9, max_ms=p50 * 1.3, throughput_ips=batch * 1000 / p50,
        e2e_p50_ms=p50 + 0.5, cosine_mean=0.999, cosine_min=0.99, top1_agreement=0.97, knn_acc=0.8,
    )  # fmt: skip


@pytest.fixture
def report() -> BenchReport:
    rows = [
        ok_row("ort-cpu", "fp32", 1, 2.0),
        ok_row("ort-cpu", "fp32", 8, 9.0),
        ok_row("ort-cpu", "int8-cpu", 1, 1.0),
        BenchRow("trt", None, None, "not present", reason="TensorRT | not installed"),
        BenchRow("torch", "fp32", 8, "failed", error="RuntimeError: boom"),
    ]
    settings = {
        "threads_line": "threads: 2 intra-op threads for every runtime",
        "images": 100,
        "data": "fashion-mnist",
        "timing": "warm-up 2 calls, then 10 calls",
        "latency": "p*_ms: backend call",
        "reference": "model.onnx on ort-cpu",
        "knn": "weighted kNN",
    }
    env = {"cpu": {"model": "Test CPU", "logical_cores": 2}, "memory_gb": 8, "os": "Linux", "packages": {}}
    return BenchReport(rows=rows, environment=env, settings=settings)


def test_markdown_table(report):
    text = markdown(report)
    lines = text.splitlines()
    assert lines[0].startswith("| runtime | precision | batch | status |")
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(report.rows)
    assert all(
        line.count(" | ") == lines[0].count(" | ") for line in table[2:]
    )  # the escaped '|' stays in its cell
    assert "not present: TensorRT \\| not installed" in text and "failed: RuntimeError: boom" in text
    assert "- threads: 2 intra-op threads for every runtime" in text and "CPU: Test CPU" in text


def test_json_records(report, tmp_path):
    report.rows[0].std_ms = float("nan")
    path = write_json(report, tmp_path / "bench.json")
    records = json.loads(path.read_text())
    assert records[0]["record"] == "environment" and records[0]["bench"]["images"] == 100
    assert [r["status"] for r in records[1:]] == ["ok", "ok", "ok", "not present", "failed"]
    assert records[1]["std_ms"] is None  # NaN is not JSON


def test_rich_table_renders_every_row(report):
    console = Console(width=250, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(rich_table(report))
    text = console.export_text()
    for runtime in ("ort-cpu", "trt", "torch"):
        assert runtime in text
    assert "not present" in text and "failed" in text


def test_plot_series_keeps_measured_rows_sorted(report):
    assert plot_series(report) == {"ort-cpu fp32": [(1, 2.0), (8, 9.0)], "ort-cpu int8-cpu": [(1, 1.0)]}


@pytest.mark.parametrize("engine", ["matplotlib", "pillow"])
def test_plot_png(report, tmp_path, engine):
    if engine == "matplotlib":
        pytest.importorskip("matplotlib")
    path = write_plot(report, tmp_path / f"{engine}.png", engine=engine)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 200
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_plot_without_matplotlib_falls_back_to_pillow(report, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    import importlib.util

    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else object()
    )
    path = write_plot(report, tmp_path / "fallback.png")
    with Image.open(path) as img:
        assert img.format == "PNG"
