"""Backend selection and artifact choice (GPU backends replaced by doubles: this machine has none)."""

from __future__ import annotations

import shutil
import sys
import types
from typing import ClassVar

import numpy as np
import pytest

from invspread_edge_runtime.backends import select
from invspread_edge_runtime.backends.base import Backend, BackendInfo
from invspread_edge_runtime.backends.select import find_artifacts, open_backend, pick_artifact
from invspread_edge_runtime.errors import EngineError, ModelError


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
    with pytest.raises(ModelError, match="Invalid precision"):
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
    with pytest.raises(EngineError, match="Invalid backend"):
        open_backend(tiny_export, "tensorflow")


class FakeTensorRT(Backend):
    """Stands in for the native TensorRT backend (no GPU here): records what it was given."""

    fail: ClassVar[str | None] = None
    opened: ClassVar[list] = []

    def __init__(self, onnx_path, precision=None, max_batch=64, cache_dir=None):
        if self.fail:
            raise EngineError(self.fail)
        FakeTensorRT.opened.append((onnx_path.name, precision, max_batch))
        self.info = BackendInfo("trt", "cuda:0 (fake)", precision, str(onnx_path), max_batch)

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


def test_auto_moves_on_when_a_faster_backend_fails_to_start(tiny_export, fake_trt):
    fake_trt.fail = "no CUDA device"
    backend = open_backend(tiny_export)  # ort-trt and ort-cuda fail too: this onnxruntime is CPU-only
    assert backend.info.name == "ort-cpu"
    assert backend.notes[0] == "trt: skipped (no CUDA device)"
    assert any(n.startswith("ort-cuda: skipped") for n in backend.notes)
    with pytest.raises(EngineError, match="no CUDA device"):
        open_backend(tiny_export, "trt")  # asked for by name: the error is the answer
