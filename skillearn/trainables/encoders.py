"""Image encoders V for LFM's visual similarity (seed 000 eq. 2).

The paper uses an ImageNet-pretrained ResNet-18/34; no weights can be downloaded here, so the
ResNet starts from random initialisation (it is trained as part of the upper level either way).
8x8 inputs get a small CNN.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallEncoder(nn.Module):
    """Two conv blocks and a linear projection: enough for 8x8 digits."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.project = nn.Linear(32 * 4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x))


def resnet_encoder(in_channels: int, depth: int) -> nn.Module:
    """A torchvision ResNet-18/34 trunk (fc removed) giving 512-d pooled features."""
    from torchvision.models import resnet18, resnet34

    net = {18: resnet18, 34: resnet34}[depth](weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return net


def make_encoder(kind: str, in_channels: int, dim: int) -> nn.Module:
    """`small` (dim-d output) or `resnet18` / `resnet34` (512-d)."""
    if kind == "small":
        return SmallEncoder(in_channels, dim)
    if kind in ("resnet18", "resnet34"):
        return resnet_encoder(in_channels, int(kind[len("resnet"):]))
    raise ValueError(f"unknown encoder {kind!r}; use small, resnet18 or resnet34")
