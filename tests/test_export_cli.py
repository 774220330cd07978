"""`invedge export`: success output, and every kind of bad input → one line, exit 1, no files."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import tiny_config
from PIL import Image

from invspread_edge.checkpoint import save_checkpoint
from invspread_edge.model import create_model


def invedge(*argv: str) -> int:
    from invspread_edge.cli import register_training_verbs
    from invspread_edge_runtime.cli import create_app, run

    return run(create_app(register_training_verbs), [str(a) for a in argv])


def _one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


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
        (["--calib-method", "kl"], "Invalid --calib-method"),
        (["--calib", "somewhere"], "--calib is used only with --int8"),
        (["--int8", "--calib-count", "4"], "--calib-count"),
        (["--accuracy-images", "3"], "--accuracy-images"),
    ],
)
def test_bad_flags(tiny_run, tmp_path, capsys, args, needle):
    assert invedge("export", tiny_run, "--out", tmp_path / "o", *args) == 1
    _one_line_error(capsys, needle)
    assert _files(tmp_path / "o") == []
