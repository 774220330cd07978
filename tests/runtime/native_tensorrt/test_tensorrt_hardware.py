"""On a machine with TensorRT and an NVIDIA GPU: build a real engine, run it, compare with ONNX Runtime.

Marked `hardware` (excluded by default; `pytest -m hardware`) and skipped without TensorRT,
cuda-python or a GPU. These are the only tests that show an engine builds and runs.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.hardware


def _gpu_or_skip():
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT's Python bindings are not installed")
    from invspread_edge_runtime.errors import InvedgeError
    from invspread_edge_runtime.tensorrt.cuda import CudaRuntime

    try:
        return CudaRuntime().gpu()
    except InvedgeError as exc:
        pytest.skip(f"no usable GPU: {exc}")


def test_engine_builds_runs_and_matches_onnxruntime(tmp_path, make_tiny_onnx):
    _gpu_or_skip()
    import onnxruntime as ort

    from invspread_edge_runtime.backends.trt import TensorRTBackend

    onnx = make_tiny_onnx(tmp_path / "model.onnx")
    x = np.random.default_rng(0).standard_normal((37, 3, 28, 28)).astype(np.float32)
    expected = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with TensorRTBackend(onnx, max_batch=16, cache_dir=tmp_path / "cache", check=None) as backend:
        assert backend.loaded.status == "built"
        out = backend.infer(x)  # 16 + 16 + 5: split across the profile
        device_ms = backend.last_device_ms()  # CUDA events around the three executions, summed
        assert device_ms is not None and device_ms > 0.0
    cos = (out * expected).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() >= 0.9999
    with TensorRTBackend(onnx, max_batch=16, cache_dir=tmp_path / "cache", check=None) as again:
        assert again.loaded.status == "cached"


def test_explicit_engine_file_round_trip(tmp_path, make_tiny_onnx):
    gpu = _gpu_or_skip()
    from invspread_edge_runtime.tensorrt.build import build_engine
    from invspread_edge_runtime.tensorrt.load import load_engine

    onnx = make_tiny_onnx(tmp_path / "model.onnx")
    info = build_engine(
        onnx, tmp_path / "model.engine", max_batch=8, timing_cache=tmp_path / "timing.cache", check=None
    )
    assert info.key.gpu_name == gpu.name and (tmp_path / "timing.cache").stat().st_size > 0
    loaded = load_engine(info.engine_path, onnx_path=onnx)
    assert loaded.engine.num_io_tensors == 2
