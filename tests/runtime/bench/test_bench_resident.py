"""Copies-excluded timing of ONNX Runtime GPU rows (IO binding), exercised on the CPU provider."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from invspread_edge_runtime.backends.ort import OrtBackend
from invspread_edge_runtime.bench import runner
from invspread_edge_runtime.bench.harness import TimingPlan
from invspread_edge_runtime.bench.images import load_bench_images
from invspread_edge_runtime.bench.registry import register_runtime, unregister_runtime
from invspread_edge_runtime.bench.resident import resident_call
from invspread_edge_runtime.bench.runner import BenchSettings, run_bench
from invspread_edge_runtime.bench.target import resolve_target
from invspread_edge_runtime.preprocess import normalize


@pytest.fixture(scope="module")
def batch(fmnist_test) -> np.ndarray:
    return normalize(fmnist_test.images[:4], (0.286,) * 3, (0.353,) * 3)


def test_io_binding_runs_the_same_model(tiny_export, batch):
    with OrtBackend(tiny_export / "model.onnx", "ort-cpu", threads=1) as backend:
        assert resident_call(backend, batch) is None  # a CPU row has no copy to exclude
        call = resident_call(backend, batch, device="cpu")  # the GPU path, on the CPU provider
        assert call is not None
        call()
        session = backend.session
        binding = session.io_binding()
        binding.bind_cpu_input(session.get_inputs()[0].name, batch)
        binding.bind_output(session.get_outputs()[0].name, "cpu")
        session.run_with_iobinding(binding)
        np.testing.assert_allclose(binding.copy_outputs_to_cpu()[0], backend.infer(batch), atol=1e-6)


def test_backend_without_session_has_no_resident_call(batch):
    class NoSession:
        info = type("Info", (), {"device": "cuda:0"})()

    assert resident_call(NoSession(), batch) is None  # type: ignore[arg-type]


def test_gpu_rows_get_device_columns(tiny_export, monkeypatch):
    """A backend on 'cuda:0' gets device_* from the resident loop; an IO-binding failure keeps wall times."""

    def open_fake(target, precision, options):
        backend = OrtBackend(tiny_export / "model.onnx", "ort-cpu", threads=1)
        backend.info = dataclasses.replace(backend.info, device="cuda:0")
        return backend

    register_runtime("fake-gpu", open_fake)
    try:
        pics = load_bench_images("fashion-mnist", 16)
        settings = BenchSettings(
            runtimes=["fake-gpu"], batches=[2], plan=TimingPlan(1, 0.0, 4, None), threads=1, accuracy=False
        )
        target = resolve_target(Path(tiny_export) / "model.onnx")
        (failed_binding,) = run_bench(target, pics, settings).rows  # this onnxruntime has no CUDA
        assert failed_binding.status == "ok" and failed_binding.device_p50_ms is None

        monkeypatch.setattr(runner, "resident_call", lambda backend, x: lambda: None)
        (row,) = run_bench(target, pics, settings).rows
        assert row.device_timing == "IO binding on the device, wall time"
        assert row.device_p50_ms is not None and row.device_p50_ms <= row.device_p99_ms
    finally:
        unregister_runtime("fake-gpu")
