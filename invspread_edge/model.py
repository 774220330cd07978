"""Encoders: the CIFAR ResNet of the paper's recipe and torchvision ResNets, each with the
linear embedding head and L2 normalisation of Ye et al. (2019). No MLP head.

Reads top to bottom: block, model, configs, entry point (timm's layout). Variants are data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from invspread_edge_runtime.errors import InvedgeError


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with a 3×3 stride-1 stem and no max-pool, for small images (32×32, 28×28, 64×64)."""

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), width: int = 64, embedding_dim: int = 128):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, in_planes = [], width
        for i, blocks in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            stage = []
            for b in range(blocks):
                stage.append(BasicBlock(in_planes, planes, stride if b == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = in_planes
        self.fc = nn.Linear(in_planes, embedding_dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) → (N, C) globally average-pooled features."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) → (N, d) unit-length embeddings."""
        return l2_normalize(self.fc(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet (ImageNet stem: 7×7 stride-2 conv + max-pool) for larger images."""

    def __init__(self, name: str, embedding_dim: int = 128) -> None:
        super().__init__()
        import torchvision

        backbone = getattr(torchvision.models, name)(weights=None)
        self.num_features = backbone.fc.in_features
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.fc = nn.Linear(self.num_features, embedding_dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.fc(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    # In float32 whatever the autocast dtype: the sum of squares overflows in fp16.
    return F.normalize(x.float(), dim=1, eps=1e-12)


@dataclass(frozen=True)
class ArchConfig:
    builder: Callable[..., nn.Module]
    kwargs: dict
    description: str
    width_configurable: bool


ARCHS: dict[str, ArchConfig] = {
    "cifar_resnet18": ArchConfig(CifarResNet, dict(layers=(2, 2, 2, 2)), "CIFAR ResNet-18 (paper)", True),
    "cifar_resnet34": ArchConfig(CifarResNet, dict(layers=(3, 4, 6, 3)), "CIFAR ResNet-34", True),
    "resnet18": ArchConfig(
        TorchvisionResNet, dict(name="resnet18"), "torchvision ResNet-18 (ImageNet stem)", False
    ),
    "resnet34": ArchConfig(
        TorchvisionResNet, dict(name="resnet34"), "torchvision ResNet-34 (ImageNet stem)", False
    ),
    "resnet50": ArchConfig(
        TorchvisionResNet, dict(name="resnet50"), "torchvision ResNet-50 (ImageNet stem)", False
    ),
}


def create_model(arch: str = "cifar_resnet18", width: int = 64, embedding_dim: int = 128) -> nn.Module:
    """Build an encoder by name. `width` applies to the CIFAR family (64 is the paper's)."""
    if arch not in ARCHS:
        raise InvedgeError(f"Invalid architecture {arch!r}. Only {', '.join(ARCHS)} are supported.")
    cfg = ARCHS[arch]
    kwargs = dict(cfg.kwargs, embedding_dim=embedding_dim)
    if cfg.width_configurable:
        kwargs["width"] = width
    return cfg.builder(**kwargs)
