"""The full toolkit's torch runtimes for `invedge bench`: the checkpoint's model behind `Backend`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from tiny import EMBEDDING_ATOL, FMNIST_MEAN, FMNIST_STD

from invspread_edge.checkpoint import build_model, load_checkpoint
from invspread_edge.torch_backend import TorchBackend, register_torch_runtimes, torch_unavailable
from invspread_edge_runtime.bench.registry import NotPresent, OpenOptions, runtimes, unregister_runtime
from invspread_edge_runtime.bench.target import resolve_target
from invspread_edge_runtime.preprocess import normalize


@pytest.fixture(scope="module")
def batch(fmnist_test) -> np.ndarray:
    return normalize(fmnist_test.images[:6], FMNIST_MEAN, FMNIST_STD)


@pytest.fixture
def run_dir(tmp_path, tiny_run, tiny_export):
    (tmp_path / "export").mkdir()
    shutil.copy(tiny_run / "checkpoint.safetensors", tmp_path)
    shutil.copy(tiny_export / "model.onnx", tmp_path / "export")
    return tmp_path


def test_fp32_equals_the_checkpoint_model(tiny_run, batch):
    with TorchBackend(tiny_run / "checkpoint.safetensors", "fp32", threads=1) as backend:
        out = backend.infer(batch)
        assert backend.info.name == "torch" and backend.info.device == "cpu"
        assert backend.last_device_ms() is None  # no CUDA events on the CPU
        assert backend.model_size_bytes > 0
    with torch.no_grad():
        expected = build_model(load_checkpoint(tiny_run))(torch.from_numpy(batch)).numpy()
    assert out.dtype == np.float32 and out.shape == (6, 32)
    np.testing.assert_allclose(out, expected, rtol=0, atol=EMBEDDING_ATOL)  # other thread count


def test_bf16_close_to_fp32_and_fp16_needs_cuda(tiny_run, batch):
    with TorchBackend(tiny_run, "fp32") as fp32, TorchBackend(tiny_run, "bf16") as bf16:
        a, b = fp32.infer(batch), bf16.infer(batch)
    assert b.dtype == np.float32
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-2)
    assert (a * b).sum(axis=1).min() > 0.99
    if not torch.cuda.is_available():
        with pytest.raises(NotPresent, match="CUDA"):
            TorchBackend(tiny_run, "fp16")


def test_registration_and_reasons(run_dir, tiny_export):
    register_torch_runtimes()
    try:
        specs = runtimes()
        assert specs["torch"].precisions == ("fp32", "bf16", "fp16") and specs["torch"].defaults == (
            "fp32",
            "bf16",
        )
        target = resolve_target(run_dir)
        assert torch_unavailable(target) is None
        backend = specs["torch"].factory(target, "fp32", OpenOptions(threads=1, max_batch=8))
        backend.close()
        assert "run folder" in torch_unavailable(resolve_target(tiny_export))
    finally:
        unregister_runtime("torch")
        unregister_runtime("torch-compile")


def test_stale_export_is_reported(run_dir):
    model = build_model(load_checkpoint(run_dir))
    from invspread_edge.checkpoint import save_checkpoint

    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_checkpoint(
        run_dir / "checkpoint.safetensors", model, load_checkpoint(run_dir).config, epoch=1, step=1
    )
    assert "re-export" in torch_unavailable(resolve_target(run_dir))


@pytest.mark.slow
def test_torch_compile_matches_eager(tiny_run, batch):
    with TorchBackend(tiny_run, "fp32", compile=True, threads=1) as compiled, TorchBackend(tiny_run) as eager:
        assert compiled.info.name == "torch-compile"
        np.testing.assert_allclose(compiled.infer(batch), eager.infer(batch), rtol=0, atol=EMBEDDING_ATOL)
