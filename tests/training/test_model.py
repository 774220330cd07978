"""The encoders: the paper's CIFAR ResNet-18 and torchvision ResNets, each with the L2-normalised head."""

from __future__ import annotations

import pytest
import torch

from invspread_edge.model import ARCHS, CifarResNet, create_model
from invspread_edge_runtime.errors import InvedgeError


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_network_size_and_output():
    model = create_model("cifar_resnet18", width=64, embedding_dim=128)
    # CIFAR ResNet-18: 11.17 M parameters in the trunk + the 512→128 linear head
    assert n_params(model) == pytest.approx(11_168_832 + 512 * 128 + 128, rel=1e-3)
    z = model.eval()(torch.randn(3, 3, 32, 32))
    assert z.shape == (3, 128)
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("width", [8, 16, 32])
def test_width_scales_every_stage(width):
    model = create_model("cifar_resnet18", width=width, embedding_dim=32)
    assert isinstance(model, CifarResNet) and model.num_features == 8 * width
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)  # CIFAR stem, no max-pool
    feats = model.eval().forward_features(torch.randn(2, 3, 28, 28))
    assert feats.shape == (2, 8 * width)
    assert model.forward_head(feats).shape == (2, 32)


def test_width_does_not_apply_to_torchvision_backbones():
    a = create_model("resnet18", width=8, embedding_dim=64)
    b = create_model("resnet18", width=64, embedding_dim=64)
    assert n_params(a) == n_params(b)
    z = a.eval()(torch.randn(2, 3, 64, 64))
    assert z.shape == (2, 64) and torch.allclose(z.norm(dim=1), torch.ones(2), atol=1e-5)


def test_head_is_float32_under_bf16_autocast():
    model = create_model("cifar_resnet18", width=8, embedding_dim=16).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = model(torch.randn(2, 3, 28, 28))
    assert z.dtype == torch.float32
    assert torch.allclose(z.norm(dim=1), torch.ones(2), atol=1e-5)


def test_every_registered_arch_builds():
    for name in ARCHS:
        assert isinstance(create_model(name, width=8, embedding_dim=16), torch.nn.Module)


def test_unknown_arch_names_the_allowed_ones():
    with pytest.raises(InvedgeError, match="Only cifar_resnet18, cifar_resnet34"):
        create_model("vit_b16")
