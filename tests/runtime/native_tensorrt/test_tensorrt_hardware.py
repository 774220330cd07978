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


def _dla_cores() -> int:
    """The DLA cores TensorRT sees on this device (0 on every discrete GPU; 2 on a Jetson AGX Orin)."""
    from invspread_edge_runtime.tensorrt import api

    trt = api.import_tensorrt()
    return int(trt.Builder(api.make_logger(trt)).num_DLA_cores)


def test_dla_build_on_a_gpu_without_dla_is_one_line(tmp_path, make_tiny_onnx):
    """Any GPU without DLA (every discrete one): --dla is refused in one line, nothing written."""
    _gpu_or_skip()
    if _dla_cores() > 0:
        pytest.skip("this device has a DLA (see the Jetson test below)")
    from invspread_edge_runtime.errors import EngineError
    from invspread_edge_runtime.tensorrt.build import build_engine

    onnx = make_tiny_onnx(tmp_path / "model.fp16.onnx", precision="fp16")
    with pytest.raises(EngineError, match=r"this GPU has no DLA \(DLA cores: 0\)"):
        build_engine(onnx, tmp_path / "m.engine", max_batch=4, check=None, dla_core=0)
    assert list(tmp_path.glob("m.engine*")) == []


def test_dla_engine_builds_runs_and_matches_onnxruntime(tmp_path, make_tiny_onnx):
    """On a Jetson with a DLA (AGX Orin): an fp16 engine for DLA core 0 with GPU fallback, the
    layers TensorRT reports as not DLA-capable in the sidecar, run through the backend (fixed batch,
    padded) against ONNX Runtime."""
    _gpu_or_skip()
    if _dla_cores() == 0:
        pytest.skip("no DLA on this device (a Jetson AGX Orin or Xavier has two cores)")
    import onnxruntime as ort

    from invspread_edge_runtime.backends.trt import TensorRTBackend

    onnx = make_tiny_onnx(tmp_path / "model.fp16.onnx", precision="fp16")
    x = np.random.default_rng(0).standard_normal((5, 3, 28, 28)).astype(np.float32)
    expected = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with TensorRTBackend(onnx, max_batch=4, cache_dir=tmp_path / "cache", check=None, dla_core=0) as backend:
        info = backend.loaded.info
        assert info.key.dla_core == 0 and info.extra["dla"]["core"] == 0
        assert isinstance(info.extra["dla"]["not_dla_capable"], list)
        assert backend.info.device.startswith("DLA core 0")
        out = backend.infer(x)  # 4 + 1 (padded to the fixed batch of 4)
    cos = (out * expected).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() >= 0.999  # the DLA computes in FP16
