"""Shared fixtures: small real data and a tiny checkpoint, made once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FMNIST_MEAN = (0.2860, 0.2860, 0.2860)
FMNIST_STD = (0.3530, 0.3530, 0.3530)


def tiny_config(**overrides) -> dict:
    """The config keys every run has (training adds more); a width-8 network trains and exports fast."""
    cfg = dict(
        arch="cifar_resnet18",
        width=8,
        embedding_dim=32,
        image_size=28,
        mean=list(FMNIST_MEAN),
        std=list(FMNIST_STD),
        data="fashion-mnist",
    )
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def fmnist_test():
    from invspread_edge_runtime.datasets import open_dataset

    return open_dataset("fashion-mnist", "test")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder holding a randomly initialised width-8 encoder's checkpoint (no training)."""
    import torch

    from invspread_edge.checkpoint import save_checkpoint
    from invspread_edge.model import create_model

    torch.manual_seed(0)
    cfg = tiny_config()
    model = create_model(cfg["arch"], width=cfg["width"], embedding_dim=cfg["embedding_dim"])
    run = tmp_path_factory.mktemp("tiny_run")
    save_checkpoint(run / "checkpoint.safetensors", model, cfg, epoch=0, step=0)
    return run


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    """`tiny_run` exported to a folder holding model.onnx (FP32, with invspread-edge metadata)."""
    from invspread_edge_export.meta import meta_from_config
    from invspread_edge_export.onnx_export import export_onnx

    from invspread_edge.checkpoint import build_model, load_checkpoint

    ckpt = load_checkpoint(tiny_run)
    folder = tmp_path_factory.mktemp("tiny_export")
    export_onnx(build_model(ckpt), meta_from_config(ckpt.config, ckpt.sha256), folder / "model.onnx")
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
