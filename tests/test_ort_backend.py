"""ONNX Runtime backends. The CPU one runs here; CUDA and TensorRT provider settings are checked as data."""

from __future__ import annotations

import numpy as np
import pytest

from invspread_edge_runtime.backends.ort import OrtBackend, available_providers, trt_provider_options
from invspread_edge_runtime.errors import EngineError, ModelError
from invspread_edge_runtime.metadata import read_model_meta

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def inputs(tiny_export, fmnist_test):
    from invspread_edge_runtime.preprocess import normalize

    meta = read_model_meta(tiny_export / "model.onnx")
    return normalize(fmnist_test.images[:13], meta.mean, meta.std)


@pytest.mark.parametrize(
    "artifact", ["model.onnx", "model.int8-cpu.onnx", "model.int8.onnx", "model.fp16.onnx"]
)
def test_cpu_backend_runs_every_artifact(tiny_export, inputs, artifact):
    with OrtBackend(tiny_export / artifact, "ort-cpu", threads=1) as backend:
        out = backend.infer(inputs)
        assert backend.info.name == "ort-cpu" and backend.info.device == "cpu"
        assert backend.info.precision == read_model_meta(tiny_export / artifact).precision
    assert out.shape == (13, 32) and out.dtype == np.float32
    with OrtBackend(tiny_export / "model.onnx", "ort-cpu", threads=1) as fp32:
        reference = fp32.infer(inputs)
    cosine = (out * reference).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.99  # quantized artifacts stay close to FP32


def test_batches_are_split_at_a_static_batch_size(tiny_export, inputs):
    with OrtBackend(tiny_export / "model.onnx", "ort-cpu", threads=1) as backend:
        whole = backend.infer(inputs)
        backend._max_batch = 4  # as for a model exported with a fixed batch, or a TensorRT profile
        np.testing.assert_allclose(backend.infer(inputs), whole, atol=1e-6)
        assert backend.infer(inputs[:0]).shape == (0, 32)


def test_wrong_input_shape_is_a_clear_error(tiny_export, inputs):
    with (
        OrtBackend(tiny_export / "model.onnx", "ort-cpu") as backend,
        pytest.raises(ModelError, match="expected input"),
    ):
        backend.infer(inputs[:, :, :20, :20])


def test_missing_gpu_providers_say_how_to_get_them(tiny_export):
    for kind, provider in (("ort-cuda", "CUDAExecutionProvider"), ("ort-trt", "TensorrtExecutionProvider")):
        if provider in available_providers():
            continue  # a GPU build of onnxruntime: nothing to check here
        with pytest.raises(EngineError, match="onnxruntime-gpu"):
            OrtBackend(tiny_export / "model.onnx", kind)


def test_tensorrt_provider_options_follow_the_artifact(tiny_export, tmp_path):
    int8 = trt_provider_options(
        read_model_meta(tiny_export / "model.int8.onnx"), tmp_path, max_batch=32, opt_batch=8
    )
    assert int8["trt_int8_enable"] is True and int8["trt_fp16_enable"] is True  # Q/DQ scales in the graph
    assert int8["trt_engine_cache_enable"] is True and int8["trt_timing_cache_enable"] is True
    assert int8["trt_engine_cache_path"] == str(tmp_path) == int8["trt_timing_cache_path"]
    assert int8["trt_profile_min_shapes"] == "images:1x3x28x28"
    assert int8["trt_profile_opt_shapes"] == "images:8x3x28x28"
    assert int8["trt_profile_max_shapes"] == "images:32x3x28x28"
    fp32 = trt_provider_options(read_model_meta(tiny_export / "model.onnx"), tmp_path)
    assert fp32["trt_int8_enable"] is False and fp32["trt_fp16_enable"] is False  # FP32 stays FP32
    fp16 = trt_provider_options(read_model_meta(tiny_export / "model.fp16.onnx"), tmp_path)
    assert fp16["trt_fp16_enable"] is True and fp16["trt_int8_enable"] is False


@pytest.mark.hardware
def test_gpu_providers_agree_with_cpu(tiny_export, inputs):
    """On a GPU machine with onnxruntime-gpu: CUDA and TensorRT providers against the CPU."""
    with OrtBackend(tiny_export / "model.onnx", "ort-cpu") as cpu:
        reference = cpu.infer(inputs)
    for kind in ("ort-cuda", "ort-trt"):
        with OrtBackend(tiny_export / "model.onnx", kind) as gpu:
            out = gpu.infer(inputs)
        cosine = (out * reference).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)
        assert cosine.min() > 0.9999, kind
