"""The fixed classifiers of the reweighting skills and their SGD schedule.

- ResNet-32 for CIFAR-shaped inputs: the MW-Net / class-balanced-loss network (3 stages x 5
  basic blocks, 16/32/64 channels, parameter-free "option A" shortcuts);
- a three-stage CNN for 8x8 digits, so a sweep of these skills runs in minutes on a CPU.
Both are `StagedClassifier`s with stages `layer1..3`, whose pooled outputs are the intermediate
features MW-Net may read (seed 003 searches which one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from skillearn.data import Split
from skillearn.data.input_size import is_small_input
from skillearn.knobs import Knob
from skillearn.trainables.weights import call_with

FEATURE_LAYERS = ("layer1", "layer2", "layer3")


class StagedClassifier(nn.Module):
    """stem -> layer1 -> layer2 -> layer3 -> global average pool -> linear.

    `forward(x, feature_layer="layer2")` also returns that stage's pooled output, so a weight
    set run through `torch.func.functional_call` yields logits and feature in one pass.
    """

    def __init__(self, stem: nn.Module, stages: list[nn.Module], widths: list[int],
                 num_classes: int) -> None:
        super().__init__()
        self.stem = stem
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(widths[-1], num_classes)
        self.feature_dims = dict(zip(FEATURE_LAYERS, widths, strict=True))

    def forward(
        self, x: torch.Tensor, feature_layer: str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if feature_layer is not None and feature_layer not in FEATURE_LAYERS:
            raise ValueError(f"unknown feature layer {feature_layer!r}; use {FEATURE_LAYERS}")
        h = self.stem(x)
        feature = None
        for name in FEATURE_LAYERS:
            h = getattr(self, name)(h)
            if name == feature_layer:
                feature = h.mean(dim=(2, 3))
        logits = self.fc(h.mean(dim=(2, 3)))
        return logits if feature is None else (logits, feature)


class BasicBlock(nn.Module):
    """Two 3x3 convs; a strided block's shortcut subsamples and zero-pads channels (option A)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride, self.pad = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


def resnet32(num_classes: int, in_channels: int = 3) -> StagedClassifier:
    """ResNet-32 for 32x32 inputs (He et al., 2016, CIFAR variant; as in MW-Net)."""
    widths = [16, 32, 64]
    stages, width = [], 16
    for stage, out in enumerate(widths):
        blocks = [BasicBlock(width if i == 0 else out, out, 2 if stage and i == 0 else 1)
                  for i in range(5)]
        stages.append(nn.Sequential(*blocks))
        width = out
    stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                         nn.ReLU())
    net = StagedClassifier(stem, stages, widths, num_classes)
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight)
    return net


def small_cnn(num_classes: int, in_channels: int = 1) -> StagedClassifier:
    """Three conv-BN-ReLU stages (16/32/64 channels, 8x8 -> 4x4 -> 2x2) for 8x8 digits."""

    def stage(cin: int, cout: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU())

    widths = [16, 32, 64]
    stages = [stage(in_channels, 16, 1), stage(16, 32, 2), stage(32, 64, 2)]
    return StagedClassifier(nn.Identity(), stages, widths, num_classes)


def make_classifier(kind: str, input_shape: tuple[int, ...], num_classes: int) -> StagedClassifier:
    """`auto` picks the small CNN for inputs up to 16 px and ResNet-32 above."""
    if kind == "auto":
        kind = "small_cnn" if is_small_input(input_shape) else "resnet32"
    builders = {"small_cnn": small_cnn, "resnet32": resnet32}
    if kind not in builders:
        raise ValueError(f"unknown classifier {kind!r}; use auto, small_cnn or resnet32")
    return builders[kind](num_classes, input_shape[0])


def logits_and_features(
    net: StagedClassifier,
    x: torch.Tensor,
    feature_layer: str | None,
    *tensor_sets: Mapping[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, pooled feature or None) of `net` run with the given weight sets."""
    merged: dict[str, torch.Tensor] = {}
    for tensors in tensor_sets:
        merged.update(tensors)
    out = call_with(net, merged, (x,), {"feature_layer": feature_layer})
    return out if feature_layer is not None else (out, None)


@torch.no_grad()
def split_losses(
    net: StagedClassifier,
    split: Split,
    device: torch.device,
    feature_layer: str | None = None,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-example CE on the split's observed (possibly noisy) labels, and features, in order.

    Used for the weight metrics over the whole train split; call with the net in eval mode.
    """
    losses, features = [], []
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device)
        y = split.y[start : start + batch_size].to(device)
        out = net(x, feature_layer)
        logits, feature = out if feature_layer is not None else (out, None)
        losses.append(F.cross_entropy(logits, y, reduction="none"))
        if feature is not None:
            features.append(feature)
    return torch.cat(losses), torch.cat(features) if features else None


CLASSIFIER_KNOBS: dict[str, Knob] = {
    "classifier": Knob("auto", "network: auto = small CNN for <=16px inputs, else ResNet-32",
                       choices=("auto", "small_cnn", "resnet32")),
    "w_lr": Knob(0.03, "classifier SGD learning rate. MW-Net's CIFAR/ResNet-32 value is 0.1 "
                 "(pass it there); 0.03 because on small data 0.1 memorises the noisy labels "
                 "before MW-Net learns to down-weight them", low=1e-3, high=0.5, log=True,
                 tune=True, search=(0.01, 0.2)),
    "w_wd": Knob(5e-4, "classifier weight decay (MW-Net: 5e-4)", low=0.0, high=0.01),
    "lr_schedule": Knob("step", "classifier schedule over `epochs`: step = x0.1 at 80% and 90% "
                        "(MW-Net's epochs 80/90 of 100), cosine = to w_lr_min",
                        choices=("step", "cosine")),
    "w_lr_min": Knob(0.0, "cosine schedule floor", low=0.0, high=0.1),
    "momentum": Knob("plain", "classifier SGD momentum 0.9: plain, or nesterov as the LFM-DR "
                     "code and MW-Net's imbalance code (the engine unrolls either exactly)",
                     choices=("plain", "nesterov")),
    "epochs": Knob(100, "training epochs (MW-Net, LFM: 100)", low=1, high=10000),
    "batch_size": Knob(100, "minibatch size of every level (MW-Net: 100)", low=2, high=8192),
}


def classifier_optimizer(
    params: Mapping[str, torch.Tensor], cfg: Mapping[str, Any]
) -> tuple[torch.optim.SGD, Any]:
    """SGD (momentum 0.9, plain or Nesterov by the `momentum` knob) and its per-epoch schedule
    sized to the `epochs` knob. The engine's unrolled step mirrors either exactly."""
    optimizer = torch.optim.SGD(params.values(), lr=cfg["w_lr"], momentum=0.9,
                                nesterov=cfg.get("momentum", "plain") == "nesterov",
                                weight_decay=cfg["w_wd"])
    epochs = int(cfg["epochs"])
    if cfg["lr_schedule"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs,
                                                               eta_min=cfg["w_lr_min"])
    else:
        milestones = [max(1, round(0.8 * epochs)), max(1, round(0.9 * epochs))]
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    return optimizer, scheduler
