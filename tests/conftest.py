"""Shared fixtures: small real data and a tiny checkpoint, made once per session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

# `pytest -n 2` puts two workers on this 2-core machine: one OpenMP thread each (set before torch
# loads), or the workers' threads fight over the cores (measured: training steps 15x slower).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Caches (map layouts) go to one folder per test session, never under ~/.cache; a test may set its own.
if "INVEDGE_CACHE_DIR" not in os.environ:
    os.environ["INVEDGE_CACHE_DIR"] = _CACHE = tempfile.mkdtemp(prefix="invedge-test-cache-")
    atexit.register(shutil.rmtree, _CACHE, True)

import milvus_testing
from rtsp_testing import rtsp_server, silent_port  # noqa: F401  (the stream tests' fixtures)
from tiny import FMNIST_MEAN, FMNIST_STD, tiny_config
from triton_testing import triton_repository, triton_server  # noqa: F401  (the Triton tests' server)
from watch_testing import watch_gallery, watch_known, watch_model, watch_strangers  # noqa: F401


@pytest.fixture(scope="session")
def milvus_standalone(tmp_path_factory):
    """A real Milvus server (2.3 standalone, scripts/milvus_server_local.py; its client port on every
    interface, needing `server.token`), one per session (per xdist worker: tests using it carry
    @pytest.mark.xdist_group("milvus-server"), which gives them MILVUS_TOKEN). Skips saying why where it
    cannot run, fails under CI=true. Tests give their collections unique names."""
    server = milvus_testing.standalone(tmp_path_factory.mktemp("milvus-standalone"))
    yield server
    server.kill()


@pytest.fixture(autouse=True)
def _milvus_token(request):
    """MILVUS_TOKEN (the test servers' token) for the tests on a real Milvus server, and only them."""
    if milvus_testing.on_standalone(request.node):
        milvus_testing.token_env(request.getfixturevalue("monkeypatch"))


@pytest.fixture(scope="session")
def fmnist_test():
    from invspread_edge_runtime.evaluation.datasets import open_dataset

    return open_dataset("fashion-mnist", "test")


@pytest.fixture(scope="session")
def make_tiny_run(tmp_path_factory):
    """Factory: `make_tiny_run(seed)` writes a run folder holding a width-8 encoder's checkpoint,
    randomly initialised from `seed` (no training), and returns it; another seed, other weights."""

    def make(seed: int = 0) -> Path:
        import torch

        from invspread_edge.checkpoint import save_checkpoint
        from invspread_edge.model import create_model

        torch.manual_seed(seed)
        cfg = tiny_config()
        model = create_model(cfg["arch"], width=cfg["width"], embedding_dim=cfg["embedding_dim"])
        run = tmp_path_factory.mktemp("tiny_run")
        save_checkpoint(run / "checkpoint.safetensors", model, cfg, epoch=0, step=0)
        return run

    return make


@pytest.fixture(scope="session")
def tiny_run(make_tiny_run) -> Path:
    """A run folder holding a randomly initialised width-8 encoder's checkpoint (no training)."""
    return make_tiny_run(seed=0)


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    """`tiny_run` exported (≈ 6 s) to a folder holding model.onnx (FP32), model.int8.onnx (TensorRT
    layout), model.int8-cpu.onnx, model.fp16.onnx, report.json and calibration.json."""
    from invspread_edge.checkpoint import build_model, load_checkpoint
    from invspread_edge_export.meta import meta_from_config
    from invspread_edge_export.pipeline import ExportOptions, export_model

    ckpt = load_checkpoint(tiny_run)
    folder = tmp_path_factory.mktemp("tiny_export")
    options = ExportOptions(
        out_dir=folder,
        int8=True,
        fp16=True,
        calib_count=64,
        accuracy_queries=100,
        accuracy_memory=200,
        allow_accuracy_drop=100.0,  # an untrained network: accuracy figures are noise
    )
    export_model(build_model(ckpt), meta_from_config(ckpt.config, ckpt.sha256), options, data="fashion-mnist")
    return folder


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory, fmnist_test) -> Path:
    """40 real Fashion-MNIST test images as PNG and JPEG files in 4 class folders."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    for cls in range(4):
        idx = np.flatnonzero(fmnist_test.labels == cls)[:10]
        (root / f"class{cls}").mkdir()
        for n, i in enumerate(idx):
            img = Image.fromarray(fmnist_test.images[i, 0])
            suffix = ".png" if n % 2 else ".jpg"
            img.save(root / f"class{cls}" / f"img{i:05d}{suffix}")
    return root


@pytest.fixture(scope="session")
def make_tiny_onnx():
    """Factory: a tiny valid ONNX encoder (Flatten → MatMul) carrying our metadata, made without torch.

    `make_tiny_onnx(path, precision="fp16")` writes it and returns the path; for tests of code that
    reads metadata, hashes or parses the file, not of accuracy.
    """

    def make(path: Path, precision: str = "fp32", image_size: int = 28, embedding_dim: int = 32) -> Path:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        from invspread_edge_runtime import __version__
        from invspread_edge_runtime.metadata import ModelMeta

        flat = 3 * image_size * image_size
        weight = np.random.default_rng(0).standard_normal((flat, embedding_dim)).astype(np.float32)
        graph = helper.make_graph(
            [
                helper.make_node("Flatten", ["images"], ["flat"]),
                helper.make_node("MatMul", ["flat", "w"], ["embeddings"]),
            ],
            "tiny",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, image_size, image_size])],
            [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", embedding_dim])],
            [numpy_helper.from_array(weight, "w")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        meta = ModelMeta(
            arch="cifar_resnet18",
            image_size=image_size,
            embedding_dim=embedding_dim,
            mean=FMNIST_MEAN,
            std=FMNIST_STD,
            checkpoint_sha256="c" * 64,
            toolkit_version=__version__,
            precision=precision,
        )
        helper.set_model_props(model, meta.to_props())
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, path)
        return path

    return make
