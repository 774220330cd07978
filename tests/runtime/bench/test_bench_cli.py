"""`invedge bench` end to end on a tiny exported model: every JSON column present and sane."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from invspread_edge_runtime.bench.registry import unregister_runtime
from invspread_edge_runtime.cli import create_app, run

REQUIRED = (
    "runtime", "precision", "batch", "status", "cold_start_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
    "std_ms", "throughput_ips", "size_mb", "cosine_min", "top1_agreement", "knn_acc",
)  # fmt: skip
QUICK = ["--images", "64", "--iters", "5", "--warmup", "1", "--threads", "1"]


@pytest.fixture
def full_toolkit():
    """The app as `invedge` of the full toolkit builds it: torch runtimes registered."""
    from invspread_edge.torch_backend import register_torch_runtimes

    register_torch_runtimes()
    yield create_app()
    unregister_runtime("torch")
    unregister_runtime("torch-compile")


@pytest.fixture
def run_with_export(tmp_path, tiny_run, tiny_export) -> Path:
    run_dir = tmp_path / "run"
    (run_dir / "export").mkdir(parents=True)
    shutil.copy(tiny_run / "checkpoint.safetensors", run_dir)
    shutil.copy(tiny_export / "model.onnx", run_dir / "export")
    return run_dir


def bench(app, *args: str) -> int:
    return run(app, ["bench", *map(str, args)])


def check_ok_row(row: dict, model_bytes: int | None = None) -> None:
    assert row["samples"] == 5
    assert row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["min_ms"] <= row["mean_ms"] <= row["max_ms"]
    assert row["std_ms"] <= row["max_ms"] - row["min_ms"] + 1e-9  # these samples' spread, no other
    assert row["throughput_ips"] == pytest.approx(row["batch"] * 1000 / row["mean_ms"], rel=1e-9)
    assert row["e2e_p50_ms"] <= row["e2e_p90_ms"] <= row["e2e_p99_ms"]
    assert row["e2e_throughput_ips"] == pytest.approx(row["batch"] * 1000 / row["e2e_mean_ms"], rel=1e-9)
    assert row["cold_start_ms"] == pytest.approx(row["load_ms"] + row["first_infer_ms"])
    if model_bytes is not None:
        assert row["size_mb"] == pytest.approx(model_bytes / 1e6)
    assert 0.0 <= row["top1_agreement"] <= 1.0 and 0.0 <= row["knn_acc"] <= 1.0
    assert -1.0 <= row["cosine_min"] <= row["cosine_mean"] <= 1.0 + 1e-9


def test_bench_export_folder_writes_json_md_plot(tmp_path, tiny_export, full_toolkit, capsys):
    out = tmp_path / "out"
    code = bench(
        full_toolkit, tiny_export, "--runtimes", "ort-cpu,ort-cuda,trt,torch", "--batch", "1,4", *QUICK,
        "--json", out / "bench.json", "--md", out / "bench.md", "--plot", out / "bench.png",
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = json.loads((out / "bench.json").read_text())
    env, rows = records[0], records[1:]
    assert env["record"] == "environment" and env["cpu"]["model"]
    assert env["bench"]["threads"] == 1 and env["bench"]["images"] == 64
    assert "threads: 1 intra-op threads for every runtime" in captured.out  # the settings line is printed
    for row in rows:
        assert row["record"] == "row" and set(REQUIRED) <= set(row)
        assert row["status"] in ("ok", "not present", "failed")
        if row["status"] != "ok":
            assert row["reason"] or row["error"]  # listed with why, never silently dropped
            assert row["p50_ms"] is None
    ort = [r for r in rows if r["runtime"] == "ort-cpu"]
    files = {
        "fp32": "model.onnx",
        "fp16": "model.fp16.onnx",
        "int8": "model.int8.onnx",
        "int8-cpu": "model.int8-cpu.onnx",
    }
    assert [(r["precision"], r["batch"], r["status"]) for r in ort] == [
        (p, b, "ok") for p in ("fp32", "fp16", "int8", "int8-cpu") for b in (1, 4)
    ]  # every artifact of the export, at every batch size
    for row in ort:
        check_ok_row(row, (tiny_export / files[row["precision"]]).stat().st_size)
        assert row["model_file"].endswith(files[row["precision"]])
    fp32 = next(r for r in ort if r["precision"] == "fp32")
    assert fp32["cosine_min"] == pytest.approx(1.0, abs=1e-6) and fp32["top1_agreement"] == 1.0
    int8 = next(r for r in ort if r["precision"] == "int8-cpu")
    assert int8["size_mb"] < fp32["size_mb"]  # int8 weights
    by_runtime = {r["runtime"]: r for r in rows}
    assert set(by_runtime) == {"ort-cpu", "ort-cuda", "trt", "torch"}
    assert "run folder" in by_runtime["torch"]["reason"]  # an export folder has no checkpoint
    if by_runtime["trt"]["status"] == "not present":
        assert "tensorrt" in by_runtime["trt"]["reason"].lower()

    md = (out / "bench.md").read_text()
    assert md.startswith("| runtime | precision | batch | status |") and md.count("\n| ort-cpu | ") == 8
    with Image.open(out / "bench.png") as img:
        assert img.format == "PNG"
    assert "wrote" in captured.err and "bench.json" in captured.err


def test_bench_run_folder_adds_torch_rows(run_with_export, full_toolkit, capsys):
    code = bench(
        full_toolkit, run_with_export, "--runtimes", "ort-cpu,torch", "--batch", "2", *QUICK, "--json", "-"
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = json.loads(captured.out)  # '--json -': stdout holds the JSON and nothing else
    rows = {(r["runtime"], r["precision"]): r for r in records[1:]}
    assert set(rows) == {("ort-cpu", "fp32"), ("torch", "fp32"), ("torch", "bf16")}
    for row in rows.values():
        check_ok_row(row)
    assert rows[("torch", "fp32")]["cosine_min"] > 0.9999  # the same checkpoint as the export
    assert records[0]["bench"]["reference"] == "model.onnx on ort-cpu"


def test_bench_one_onnx_file_without_labels(tmp_path, tiny_export, image_folder, full_toolkit, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))[:12]):
        shutil.copy(path, flat / f"{i}.png")
    code = bench(
        full_toolkit, tiny_export / "model.onnx", "-r", "ort-cpu", "--batch", "3", "--data", flat,
        "--images", "12", "--iters", "5", "--warmup", "1", "--json", tmp_path / "b.json",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (row,) = json.loads((tmp_path / "b.json").read_text())[1:]
    assert row["status"] == "ok" and row["knn_acc"] is None and row["recall_at_1"] is None  # no labels
    assert row["cosine_min"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runtimes", "ort-gpu"], "Invalid runtime 'ort-gpu'"),
        (["--precision", "int4"], "Invalid precision 'int4'"),
        (["--batch", "0,8"], "--batch 0 is out of range. Use 1 to 1024"),
        (["--batch", "1,100000"], "--batch 100000 is out of range"),
        (["--iters", "5", "--seconds", "1"], "were both given"),
        (["--iters", "0"], "--iters 0 is out of range"),
        (["--iters", "99999999999"], "--iters 99999999999 is out of range. Use 1 to 1000000"),
        (["--seconds", "-1"], "--seconds -1 is out of range"),
        (["--seconds", "inf"], "--seconds inf is out of range. Use a number above 0 and at most 3600"),
        (["--warmup", "soon"], "Invalid --warmup"),
        (["--warmup", "99999999"], "--warmup 99999999 is out of range. Use 0 to 100000"),
        (["--warmup", "10000s"], "--warmup duration 10000 is out of range"),
        (["--images", "1"], "--images 1 is out of range. Use 2 to 10000"),
        (["--images", "1000000"], "--images 1000000 is out of range"),
        (["--threads", "-1"], "--threads -1 is out of range"),
        (["--threads", "100000"], "--threads 100000 is out of range. Use 0 to 1024 (0: all cores)"),
        (["--batch", ","], "Invalid --batch"),
        (["--data", "/nonexistent/folder"], "unknown data"),
    ],
)
def test_bad_options_are_one_line_errors(tiny_export, full_toolkit, capsys, args, message):
    assert bench(full_toolkit, tiny_export, *args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("error:") == 1
    assert err.startswith("error:")  # rejected before anything was printed or measured


@pytest.mark.parametrize("option", ["--json", "--md", "--plot"])
@pytest.mark.parametrize("where", ["folder", "parent-is-a-file", "unwritable"])
def test_an_output_that_cannot_be_written_fails_before_measuring(
    tmp_path, tiny_export, full_toolkit, capsys, monkeypatch, option, where
):
    import invspread_edge_runtime.bench.runner as runner

    def must_not_run(*args, **kwargs):
        raise AssertionError("measured although the output cannot be written")

    monkeypatch.setattr(runner, "run_bench", must_not_run)
    if where == "folder":
        target = tmp_path / "out.x"
        target.mkdir()
    elif where == "parent-is-a-file":
        (tmp_path / "f.txt").write_text("x")
        target = tmp_path / "f.txt" / "deeper" / "out.x"
    else:
        if not Path("/sys").is_dir():
            pytest.skip("needs /sys as a place nobody can write to")
        target = Path("/sys/invedge-bench-out.x")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert bench(full_toolkit, tiny_export, option, target) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and option in err and str(target) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no probe file left


def test_outputs_in_folders_not_made_yet_are_written(tmp_path, tiny_export, full_toolkit, capsys):
    md = tmp_path / "new" / "deeper" / "table.md"
    code = bench(full_toolkit, tiny_export / "model.onnx", "-r", "ort-cpu", "--batch", "2", "--no-accuracy",
                 "--images", "8", "--iters", "2", "--warmup", "0", "--md", md)  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "ort-cpu" in md.read_text()


def test_bad_targets(tmp_path, full_toolkit, capsys):
    assert bench(full_toolkit, tmp_path / "missing") == 1
    assert "not found" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("hello")
    assert bench(full_toolkit, tmp_path / "notes.txt") == 1
    assert "not an ONNX model" in capsys.readouterr().err
    (tmp_path / "fake.onnx").write_bytes(b"\x08\x07garbage")
    assert bench(full_toolkit, tmp_path / "fake.onnx") == 1
    err = capsys.readouterr().err
    assert "fake.onnx" in err and "Traceback" not in err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.safetensors").write_bytes(b"x")
    assert bench(full_toolkit, tmp_path / "run") == 1
    assert "invedge export" in capsys.readouterr().err


def test_a_triton_model_is_refused_without_its_password(full_toolkit, capsys):
    assert bench(full_toolkit, "triton:http://viewer:sekret@127.0.0.1:1/invedge_shop") == 1
    err = capsys.readouterr().err
    assert "Triton server" in err and "perf_analyzer" in err and len(err.strip().splitlines()) == 1
    assert "sekret" not in err


def test_invedge_bench_via_console_script_stays_torch_free_for_onnx(tiny_export, tmp_path):
    """The installed `invedge` (full toolkit) benchmarks an export without importing torch."""
    code = (
        "import sys\n"
        "from invspread_edge_runtime.cli import main  # what the `invedge` console script runs\n"
        "sys.argv = ['invedge', 'bench', sys.argv[1], '-r', 'ort-cpu,torch', '--batch', '2', '--no-accuracy', '--images', '16',\n"
        "            '--iters', '3', '--warmup', '0', '--json', sys.argv[2]]\n"
        "try:\n"
        "    code = main()\n"
        "finally:\n"
        "    print('TORCH_LOADED', 'torch' in sys.modules, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_export), str(tmp_path / "b.json")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "TORCH_LOADED False" in done.stderr
    rows = json.loads((tmp_path / "b.json").read_text())[1:]
    assert [(r["runtime"], r["status"]) for r in rows] == [("ort-cpu", "ok")] * 4 + [("torch", "not present")]


def test_nothing_measured_is_an_error_after_the_table(tmp_path, tiny_export, full_toolkit, capsys):
    """A runtime this machine lacks: the table and --json say why, and the exit code says it failed."""
    from invspread_edge_runtime.backends.select import backend_status

    if backend_status()["ort-cuda"] is None:
        pytest.skip("this machine has ONNX Runtime's CUDA provider")
    out = tmp_path / "b.json"
    code = bench(full_toolkit, tiny_export / "model.onnx", "-r", "ort-cuda", "--batch", "2", "--no-accuracy",
                 "--images", "8", "--iters", "2", "--warmup", "0", "--json", out)  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip().splitlines()[-1].startswith("error: nothing was measured")
    assert [r["status"] for r in json.loads(out.read_text())[1:]] == ["not present"]  # written all the same
