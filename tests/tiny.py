"""The tiny run every test shares. A module of its own: `from conftest import` can find
tests/trt/conftest.py instead, depending on which one a pytest worker imported first."""

from __future__ import annotations

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
