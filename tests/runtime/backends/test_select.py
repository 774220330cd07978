"""Backend selection and artifact choice (GPU backends replaced by doubles: this machine has none)."""

from __future__ import annotations

import json
import shutil
import sys
import types
from typing import ClassVar

import numpy as np
import pytest

from invspread_edge_runtime.backends import select
from invspread_edge_runtime.backends.base import Backend, BackendInfo
from invspread_edge_runtime.backends.select import find_artifacts, pick_artifact
from invspread_edge_runtime.embedder import open_backend
from invspread_edge_runtime.errors import ConfigError, EngineError, ModelError


def test_export_folder_artifacts_follow_the_backend(tiny_export):
    artifacts = find_artifacts(tiny_export)
    assert set(artifacts) == {"fp32", "fp16", "int8", "int8-cpu"}
    name = {b: pick_artifact(artifacts, b)[0].name for b in ("ort-cpu", "ort-cuda", "ort-trt", "trt")}
    assert name == {
        "ort-cpu": "model.int8-cpu.onnx",
        "ort-cuda": "model.fp16.onnx",
        "ort-trt": "model.int8.onnx",
        "trt": "model.int8.onnx",
    }
    assert pick_artifact(artifacts, "ort-cpu", precision="fp32")[0].name == "model.onnx"
    with pytest.raises(ModelError, match="cannot run on TensorRT"):
        pick_artifact(artifacts, "trt", precision="int8-cpu")
    with pytest.raises(ConfigError, match="Invalid precision"):
        pick_artifact(artifacts, "ort-cpu", precision="int4")


def test_partial_export_folders_fall_back(tiny_export, tmp_path):
    shutil.copy(tiny_export / "model.onnx", tmp_path / "model.onnx")
    artifacts = find_artifacts(tmp_path)
    assert pick_artifact(artifacts, "ort-cpu")[0].name == "model.onnx"
    assert pick_artifact(artifacts, "trt")[0].name == "model.onnx"
    with pytest.raises(ModelError, match="no int8 artifact"):
        pick_artifact(artifacts, "trt", precision="int8")
    only_cpu = find_artifacts(tiny_export / "model.int8-cpu.onnx")
    with pytest.raises(ModelError, match="cannot run on TensorRT"):
        pick_artifact(only_cpu, "ort-trt")


def test_a_precision_missing_from_one_file_names_the_file_not_its_folder(tiny_export):
    int8 = tiny_export / "model.int8.onnx"
    with pytest.raises(ModelError) as caught:
        pick_artifact(find_artifacts(int8), "trt", precision="fp16")
    message = str(caught.value)
    assert message == (
        f"{int8} is the int8 artifact; pass its export folder, or the fp16 file (model.fp16.onnx)"
    )
    assert "no fp16 artifact" not in message and "Export it" not in message
    assert pick_artifact(find_artifacts(tiny_export), "trt", precision="fp16")[0].name == "model.fp16.onnx"


def test_run_folders_and_folders_without_models(tiny_export, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_export, run / "export")
    assert set(find_artifacts(run)) == {"fp32", "fp16", "int8", "int8-cpu"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no invspread-edge model"):
        find_artifacts(tmp_path / "empty")
    with pytest.raises(ModelError, match="not found"):
        find_artifacts(tmp_path / "missing.onnx")


def test_auto_on_a_cpu_machine_says_why_it_chose_the_cpu(tiny_export, monkeypatch):
    monkeypatch.setattr(
        select,
        "backend_status",
        lambda: {
            "trt": "the tensorrt Python package is not installed",
            "ort-trt": "no TensorrtExecutionProvider",
            "ort-cuda": "no CUDAExecutionProvider",
            "ort-cpu": None,
        },
    )
    backend = open_backend(tiny_export)
    assert backend.info.name == "ort-cpu" and backend.info.precision == "int8-cpu"
    assert backend.notes[0].startswith("trt: skipped (the tensorrt")
    assert backend.notes[-1].startswith("ort-cpu: model.int8-cpu.onnx (int8-cpu) on cpu")
    with pytest.raises(ConfigError, match="Invalid backend"):
        open_backend(tiny_export, "tensorflow")


class FakeTensorRT(Backend):
    """Stands in for the native TensorRT backend (no GPU here): records what it was given."""

    fail: ClassVar[str | None] = None
    opened: ClassVar[list] = []

    def __init__(
        self, onnx_path, precision=None, max_batch=64, cache_dir=None, *, meta, engine_path=None, **kw
    ):
        if self.fail:
            raise EngineError(self.fail)
        FakeTensorRT.opened.append((onnx_path.name, precision, max_batch))
        self.meta = meta  # the interface: open_backend hands over the ONNX file's metadata it read
        model_path = engine_path or onnx_path  # as the real one: the engine file when one runs
        self.info = BackendInfo("trt", "cuda:0 (fake)", precision, str(model_path), max_batch)

    def infer(self, batch):
        return np.zeros((len(batch), 32), np.float32)


@pytest.fixture
def fake_trt(monkeypatch):
    module = types.ModuleType("invspread_edge_runtime.backends.trt")
    module.TensorRTBackend = FakeTensorRT
    monkeypatch.setitem(sys.modules, "invspread_edge_runtime.backends.trt", module)
    monkeypatch.setattr(select, "backend_status", lambda: dict.fromkeys(select.BACKENDS))
    FakeTensorRT.fail, FakeTensorRT.opened = None, []
    return FakeTensorRT


def test_auto_prefers_native_tensorrt_with_the_symmetric_int8_model(tiny_export, fake_trt):
    backend = open_backend(tiny_export, max_batch=16)
    assert backend.info.name == "trt"
    assert fake_trt.opened == [("model.int8.onnx", "int8", 16)]


def test_the_backend_gets_the_onnx_files_metadata_even_when_an_engine_file_runs(
    tiny_export, fake_trt, tmp_path
):
    """The metadata is read once, from the ONNX file, and passed in: the Embedder preprocesses from
    `backend.meta`, never from `info.model_path` (the .engine file here, which has no metadata)."""
    from invspread_edge_runtime.embedder import Embedder
    from invspread_edge_runtime.metadata import read_model_meta

    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(b"not read by the fake")
    backend = open_backend(tiny_export, "trt", engine_path=engine)
    assert backend.info.model_path == str(engine)
    assert backend.meta == read_model_meta(tiny_export / "model.int8.onnx")
    with Embedder(backend) as embedder:
        assert embedder.meta == backend.meta and embedder.space_id == backend.meta.space_id
        assert embedder.notes == list(backend.notes) and embedder.notes[-1].startswith("trt: model.int8.onnx")


def test_auto_moves_on_when_a_faster_backend_fails_to_start(tiny_export, fake_trt):
    fake_trt.fail = "no CUDA device"
    backend = open_backend(tiny_export)  # ort-trt and ort-cuda fail too: this onnxruntime is CPU-only
    assert backend.info.name == "ort-cpu"
    assert backend.notes[0] == "trt: skipped (no CUDA device)"
    assert any(n.startswith("ort-cuda: skipped") for n in backend.notes)
    with pytest.raises(EngineError, match="no CUDA device"):
        open_backend(tiny_export, "trt")  # asked for by name: the error is the answer


def test_auto_refuses_an_unknown_precision_at_once(tiny_export, fake_trt):
    with pytest.raises(ConfigError, match="Invalid precision 'int4'"):
        open_backend(tiny_export, precision="int4")  # no backend can help: none is tried
    assert fake_trt.opened == []


# --- an export folder holds the artifacts of one checkpoint, checked when it is opened ------------


def retag(path, checkpoint_sha256=None, **props):
    """Rewrite our metadata in an ONNX file (another checkpoint, or metadata that lies about the graph)."""
    import onnx

    model = onnx.load(path)
    values = {"checkpoint_sha256": checkpoint_sha256, **props}
    for prop in model.metadata_props:
        key = prop.key.removeprefix("invedge.")
        if values.get(key) is not None:
            prop.value = str(values[key])
    onnx.save(model, path)
    return path


def mixed_folder(tmp_path, make_tiny_onnx, report_sha=None):
    folder = tmp_path / "export"
    make_tiny_onnx(folder / "model.onnx")  # checkpoint ccc…
    retag(make_tiny_onnx(folder / "model.fp16.onnx", precision="fp16"), "a" * 64)  # an older export's
    if report_sha is not None:
        (folder / "report.json").write_text(
            json.dumps({"metadata": {"invedge.checkpoint_sha256": report_sha}}), encoding="utf-8"
        )
    return folder


def test_mixed_checkpoints_without_a_report_are_refused(tmp_path, make_tiny_onnx):
    folder = mixed_folder(tmp_path, make_tiny_onnx)
    with pytest.raises(ModelError, match="mixes models of different checkpoints") as exc:
        find_artifacts(folder)
    message = str(exc.value)
    assert "\n" not in message
    assert (
        f"checkpoint {'a' * 12}…: model.fp16.onnx" in message
        and f"checkpoint {'c' * 12}…: model.onnx" in message
    )
    assert "--overwrite" in exc.value.hint


def test_mixed_checkpoints_follow_the_report_and_name_the_stale_files(tmp_path, make_tiny_onnx, capsys):
    folder = mixed_folder(tmp_path, make_tiny_onnx, report_sha="c" * 64)
    artifacts = find_artifacts(folder)
    assert set(artifacts) == {"fp32"}  # the fp16 file of the other checkpoint is never picked
    err = capsys.readouterr().err
    assert "ignoring model.fp16.onnx" in err and "another checkpoint" in err
    # a backend that prefers fp16 gets the fp32 model of the report's checkpoint, not the stale fp16
    assert pick_artifact(artifacts, "ort-cuda")[0].name == "model.onnx"


def test_a_report_naming_none_of_the_models_is_refused(tmp_path, make_tiny_onnx):
    folder = mixed_folder(tmp_path, make_tiny_onnx, report_sha="b" * 64)
    with pytest.raises(ModelError, match=f"report.json names checkpoint {'b' * 12}"):
        find_artifacts(folder)


def test_one_checkpoint_with_its_report_opens_silently(tiny_export, capsys):
    assert set(find_artifacts(tiny_export)) == {"fp32", "fp16", "int8", "int8-cpu"}
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "empty", "not onnx"])
def test_a_damaged_artifact_is_named_not_skipped(tmp_path, make_tiny_onnx, capsys, damage):
    folder = tmp_path / "export"
    make_tiny_onnx(folder / "model.onnx")
    bad = make_tiny_onnx(folder / "model.int8.onnx", precision="int8")
    data = bad.read_bytes()
    bad.write_bytes(
        {"truncated": data[: len(data) // 2], "empty": b"", "not onnx": b"\x00garbage" * 9}[damage]
    )
    (folder / "graph-dump.onnx").write_bytes(b"not ours, not named like ours")
    assert set(find_artifacts(folder)) == {"fp32"}
    err = capsys.readouterr().err
    assert "skipping model.int8.onnx" in err and "graph-dump" not in err
    (folder / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="no usable invspread-edge model") as exc:
        find_artifacts(folder)
    assert "model.onnx" in str(exc.value) and "model.int8.onnx" in str(exc.value)


def test_an_engine_file_runs_on_native_tensorrt_only(tiny_export, fake_trt, tmp_path):
    with pytest.raises(ConfigError, match="native TensorRT backend, not ort-cpu"):
        open_backend(tiny_export, "ort-cpu", engine_path=tmp_path / "m.engine")


@pytest.mark.parametrize("report", ["{not json", "[]", '{"metadata": {}}'])
def test_a_damaged_report_is_named_and_the_models_metadata_decides(tmp_path, make_tiny_onnx, capsys, report):
    folder = tmp_path / "export"
    make_tiny_onnx(folder / "model.onnx")
    make_tiny_onnx(folder / "model.fp16.onnx", precision="fp16")
    (folder / "report.json").write_text(report)
    assert set(find_artifacts(folder)) == {"fp32", "fp16"}
    assert "report.json" in capsys.readouterr().err
    retag(folder / "model.fp16.onnx", "a" * 64)  # and with two checkpoints, nothing tells which: refused
    with pytest.raises(ModelError, match="mixes models of different checkpoints"):
        find_artifacts(folder)


def test_an_engine_where_a_model_is_expected_says_what_to_pass(tmp_path):
    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ModelError, match="is a TensorRT engine, not an ONNX model") as exc:
        find_artifacts(engine)
    assert "invedge verify" in exc.value.hint
