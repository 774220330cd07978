"""`invedge export`: success output, and every kind of bad input → one line, exit 1, no files."""

from __future__ import annotations

import importlib.util
import json

import pytest
from PIL import Image
from tiny import invedge, tiny_config

from invspread_edge.checkpoint import save_checkpoint
from invspread_edge.model import create_model


def _one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def _final_error(capsys, *needles: str) -> list[str]:
    """A failure after work began: progress lines, then exactly one error line, last; no traceback."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("error:"), lines
    assert sum(line.startswith("error:") for line in lines) == 1 and not any("Traceback" in x for x in lines)
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines


def _files(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_export_writes_model_report_and_next_steps(tiny_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert invedge("export", tiny_run, "--out", out, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [a["file"] for a in report["artifacts"]] == ["model.onnx"]
    assert report["artifacts"][0]["parity"]["passed"] and report["artifacts"][0]["parity"]["batch_sizes"] == [
        1,
        7,
    ]
    assert any(cmd.startswith("invedge bench") for cmd in report["next"])
    assert (
        json.loads((out / "report.json").read_text())["artifacts"][0]["sha256"]
        == report["artifacts"][0]["sha256"]
    )


def test_table_output(tiny_run, tmp_path, capsys):
    assert invedge("export", tiny_run, "--out", tmp_path / "e") == 0
    text = capsys.readouterr().out
    assert "model.onnx" in text and "parity min cos" in text and "Next:" in text and "invedge embed" in text


def test_onnx_file_instead_of_checkpoint(tiny_export, tmp_path, capsys):
    assert invedge("export", tiny_export / "model.onnx", "--out", tmp_path / "o") == 1
    _one_line_error(capsys, "ONNX model, not a training checkpoint")
    assert _files(tmp_path / "o") == []


def test_truncated_checkpoint(tiny_run, tmp_path, capsys):
    data = (tiny_run / "checkpoint.safetensors").read_bytes()
    (tmp_path / "checkpoint.safetensors").write_bytes(data[: len(data) // 2])
    assert invedge("export", tmp_path, "--out", tmp_path / "o") == 1
    _one_line_error(capsys, "damaged")
    assert _files(tmp_path / "o") == []


def test_foreign_safetensors(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "checkpoint.safetensors"))
    assert invedge("export", tmp_path) == 1
    _one_line_error(capsys, "not an invspread-edge checkpoint")
    assert _files(tmp_path / "export") == []


def test_checkpoint_of_another_architecture(tmp_path, capsys):
    model = create_model("cifar_resnet18", width=8, embedding_dim=32)
    save_checkpoint(
        tmp_path / "checkpoint.safetensors", model, tiny_config(arch="cifar_resnet34"), epoch=0, step=0
    )
    assert invedge("export", tmp_path) == 1
    _one_line_error(capsys, "do not fit architecture")
    assert _files(tmp_path / "export") == []


def test_unwritable_output_folder(tiny_run, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    assert invedge("export", tiny_run, "--out", blocker / "export") == 1
    _one_line_error(capsys, "cannot write")


@pytest.mark.parametrize("kind", ["empty", "few", "broken"])
def test_bad_calibration_folder(tiny_run, tmp_path, capsys, fmnist_test, kind):
    calib = tmp_path / "calib"
    calib.mkdir()
    count = {"empty": 0, "few": 3, "broken": 40}[kind]
    for i in range(count):
        Image.fromarray(fmnist_test.images[i, 0]).save(calib / f"{i:02d}.png")
    if kind == "broken":
        (calib / "05.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "o"
    assert invedge("export", tiny_run, "--out", out, "--int8", "--calib", calib) == 1
    needle = {"empty": "no images", "few": "at least 32", "broken": "unreadable image: 05.png"}[kind]
    _one_line_error(capsys, needle)
    assert _files(out) == []  # checked before any export work


def test_engine_without_tensorrt_fails_cleanly(tiny_run, tmp_path, capsys):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; tests/trt covers the real build")
    out = tmp_path / "o"
    assert invedge("export", tiny_run, "--out", out, "--int8", "--engine", "--max-batch", "8") == 1
    _one_line_error(capsys, "tensorrt")
    assert _files(out) == []  # refused before exporting anything


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--int8", "--dla", "0"], "--dla is used only with --engine"),
        (["--engine", "--dla", "0"], "--dla needs an fp16 or int8 artifact"),
        (["--int8", "--engine", "--dla", "2"], "--dla 2 is out of range. Use 0 to 1"),
        (
            ["--fp16", "--engine", "--dla", "0", "--min-batch", "2"],
            "--min-batch 2 differs from --max-batch 64",
        ),
        (
            ["--fp16", "--engine", "--dla", "0", "--opt-batch", "4", "--max-batch", "8"],
            "--opt-batch 4 differs",
        ),
    ],
)
def test_dla_flags_are_refused_before_any_export(tiny_run, tmp_path, capsys, args, needle):
    out = tmp_path / "o"
    assert invedge("export", tiny_run, "--out", out, *args) == 1
    _one_line_error(capsys, needle)
    assert _files(out) == []


def test_dla_on_a_gpu_without_dla_is_refused_before_any_export(tiny_run, tmp_path, capsys, monkeypatch):
    """TensorRT reports no DLA core (every discrete GPU): one line before the checkpoint loads."""
    from types import SimpleNamespace

    import invspread_edge.export_run as export_run
    from invspread_edge_runtime.tensorrt import api

    class Logger:
        WARNING = VERBOSE = 0

        def __init__(self, severity: int) -> None:
            pass

    builder = SimpleNamespace(num_DLA_cores=0, max_DLA_batch_size=4096)
    monkeypatch.setattr(
        api, "import_tensorrt", lambda: SimpleNamespace(Logger=Logger, Builder=lambda _: builder)
    )
    monkeypatch.setattr(export_run, "load_checkpoint", lambda run: pytest.fail("the checkpoint was loaded"))
    out = tmp_path / "o"
    assert (
        invedge("export", tiny_run, "--out", out, "--int8", "--engine", "--dla", "0", "--max-batch", "8") == 1
    )
    _one_line_error(capsys, "error: this GPU has no DLA (DLA cores: 0). Build without --dla")
    assert _files(out) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--calib-method", "kl"], "Invalid --calib-method"),
        (["--calib", "somewhere"], "--calib is used only with --int8"),
        (["--int8", "--calib-count", "4"], "--calib-count"),
        (["--accuracy-images", "3"], "--accuracy-images"),
        (["--int8", "--calib-count", "1000000"], "--calib-count 1000000 is out of range. Use 32 to 10000"),
        (["--accuracy-images", "100000000"], "--accuracy-images 100000000 is out of range"),
        (["--min-cosine", "1.5"], "--min-cosine 1.5 is out of range. Use a number above 0 and at most 1"),
        (["--max-accuracy-drop", "-1"], "--max-accuracy-drop -1 is out of range. Use 0 to 100"),
        (["--max-accuracy-drop", "nan"], "--max-accuracy-drop nan is not a number"),
        (["--allow-accuracy-drop", "inf"], "--allow-accuracy-drop inf is out of range"),
        (["--opset", "9"], "--opset 9 is out of range. Use 18 to 23"),
        (["--opset", "99999999999999999999"], "--opset 99999999999999999999 is out of range"),
    ],
)
def test_bad_flags(tiny_run, tmp_path, capsys, args, needle):
    assert invedge("export", tiny_run, "--out", tmp_path / "o", *args) == 1
    _one_line_error(capsys, needle)
    assert _files(tmp_path / "o") == []


# --- a reused export folder: one checkpoint's artifacts, never a mix ------------------------------


@pytest.fixture(scope="module")
def other_run(make_tiny_run):
    """A second run (another checkpoint: other weights) to export over `tiny_run`'s export."""
    return make_tiny_run(seed=1)


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _checkpoints(folder):
    from invspread_edge_runtime.metadata import read_model_meta

    return {p.name: read_model_meta(p).checkpoint_sha256 for p in folder.glob("*.onnx")}


@pytest.fixture
def old_export(tiny_export, tmp_path):
    """A copy of tiny_run's full export (fp32, fp16, int8, int8-cpu) plus an engine built from its int8."""
    import shutil

    from invspread_edge_runtime.tensorrt.cache import BatchProfile, EngineInfo, EngineKey, write_sidecar

    out = tmp_path / "export"
    shutil.copytree(tiny_export, out)
    (out / "model.int8.engine").write_bytes(b"plan")
    key = EngineKey("e" * 64, "10.3.0", "NVIDIA Orin", "8.7", "int8", *vars(BatchProfile()).values())
    old_sha = json.loads((out / "report.json").read_text())["metadata"]["invedge.checkpoint_sha256"]
    write_sidecar(
        EngineInfo(
            out / "model.int8.engine",
            key,
            "f" * 64,
            4,
            checkpoint_sha256=old_sha,
            onnx_path="model.int8.onnx",
        )
    )
    return out


def test_export_over_another_checkpoints_export_is_refused_without_overwrite(other_run, old_export, capsys):
    before = _snapshot(old_export)
    assert invedge("export", other_run, "--out", old_export) == 1
    _one_line_error(capsys, "holds an export of another checkpoint", "model.int8.onnx", "--overwrite")
    assert _snapshot(old_export) == before  # byte for byte


def test_overwrite_leaves_only_the_new_checkpoints_artifacts(other_run, old_export, capsys):
    old_sha = set(_checkpoints(old_export).values())
    assert invedge("export", other_run, "--out", old_export, "--overwrite", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    new_sha = report["metadata"]["invedge.checkpoint_sha256"]
    assert new_sha not in old_sha
    assert _checkpoints(old_export) == {"model.onnx": new_sha}  # the old fp16/int8/int8-cpu are gone
    names = {p.name for p in old_export.iterdir()}
    assert "model.int8.engine" not in names and "model.int8.engine.json" not in names
    assert "calibration.json" not in names  # it described the old INT8 models
    assert not [n for n in names if n.startswith(".export-new-") or n.endswith(".tmp")]
    from invspread_edge_runtime.backends.select import find_artifacts

    assert set(find_artifacts(old_export)) == {"fp32"}


def test_a_failed_overwrite_keeps_the_old_export(other_run, old_export, capsys, monkeypatch):
    from invspread_edge_export import pipeline

    before = _snapshot(old_export)

    def fail(*args, **kwargs):
        from invspread_edge_runtime.errors import ModelError

        raise ModelError("parity check failed (simulated)")

    monkeypatch.setattr(pipeline, "_export_fp16", fail)
    assert (
        invedge("export", other_run, "--out", old_export, "--overwrite", "--fp16", "--accuracy-images", "20")
        == 1
    )
    _final_error(capsys, "parity check failed (simulated)")
    assert _snapshot(old_export) == before  # the new fp32 model passed, but nothing was moved in
    assert not [p.name for p in old_export.iterdir() if p.name.startswith(".export-new-")]


def test_reexport_of_the_same_run_needs_no_flag_and_leftovers_never_block(tiny_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert invedge("export", tiny_run, "--out", out) == 0
    # what a killed export leaves: a staging folder and an atomic write's temporary file
    (out / ".export-new-killed").mkdir()
    (out / ".export-new-killed" / "model.onnx").write_bytes(b"half")
    (out / ".model.onnx.abc123.tmp").write_bytes(b"half")
    capsys.readouterr()
    assert invedge("export", tiny_run, "--out", out) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "model.onnx",
        "probes",
        "report.json",
    ]
    assert not [p.name for p in out.iterdir() if p.name.startswith((".export-new-", ".model.onnx."))]


def test_a_second_export_of_the_same_run_keeps_describing_the_artifacts_it_kept(tiny_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert invedge("export", tiny_run, "--out", out, "--fp16") == 0
    fp16 = (out / "model.fp16.onnx").read_bytes()
    assert invedge("export", tiny_run, "--out", out) == 0  # fp32 only: the fp16 file stays
    report = json.loads((out / "report.json").read_text())
    files = {a["file"]: a for a in report["artifacts"]}
    assert (
        sorted(files) == ["model.fp16.onnx", "model.onnx"] and (out / "model.fp16.onnx").read_bytes() == fp16
    )
    assert (
        files["model.fp16.onnx"]["from_earlier_export"] and "from_earlier_export" not in files["model.onnx"]
    )


def test_a_second_export_into_the_same_folder_waits_for_the_lock(tiny_run, tmp_path, capsys, monkeypatch):
    from invspread_edge_export.export_folder import export_lock
    from invspread_edge_runtime import locks

    out = tmp_path / "export"
    monkeypatch.setattr(locks, "DEFAULT_TIMEOUT_S", 0.2)
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom invspread_edge_runtime.locks import exclusive_lock\n"
            f"with exclusive_lock({str(out)!r}, 'export folder'):\n    print('held', flush=True)\n    time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert invedge("export", tiny_run, "--out", out) == 1
        lines = _final_error(capsys, "is being written by another invedge process", f"pid {holder.pid}")
        assert lines[0].startswith("waiting for export folder")  # said once, before giving up
        assert not (out / "model.onnx").exists()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with export_lock(out), export_lock(out):  # re-entrant in one process (the CLI nests it)
        pass
