"""Image encoders V for LFM's visual similarity (seed 000 eq. 2).

The paper uses an ImageNet-pretrained ResNet-18/34 (and deeper ones in its ablation). Weights
cannot be downloaded here, so a ResNet starts from random initialisation unless
`encoder_weights` names a torchvision ResNet state dict saved on a connected machine (README:
"Pretrained encoder"); it is trained as part of the upper level either way. 8x8 inputs get a
small CNN.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from skillearn.data.input_size import is_small_input
from skillearn.knobs import ConfigError, Knob

RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50}

# Shared by the skills that learn V (lfm, lfm_dr): spread into their knobs.
ENCODER_KNOBS: dict[str, Knob] = {
    "encoder": Knob("auto", "encoder V: auto = small CNN for <=16px inputs, else ResNet-18",
                    choices=("auto", "small", *RESNET_DEPTHS)),
    "encoder_weights": Knob("", "torchvision ResNet state dict (torch.save of .state_dict(), "
                            "e.g. ImageNet weights) V starts from; needs encoder=resnet18/34/50 "
                            "to match it ('': random init)"),
}


class SmallEncoder(nn.Module):
    """Two conv blocks, a linear projection and a LayerNorm: enough for 8x8 digits.

    The LayerNorm gives features of norm ~sqrt(dim) (raw ones had ~0.05), so LFM's dot-product
    softmax over validation examples is peaked on similar images, as with pretrained ResNet
    features, instead of uniform.
    """

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.project = nn.Linear(32 * 4, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.project(self.features(x)))


def resnet_encoder(in_channels: int, depth: int) -> nn.Module:
    """A torchvision ResNet-18/34/50 trunk (fc removed): 512-d pooled features (2048-d for 50)."""
    from torchvision.models import resnet18, resnet34, resnet50

    net = {18: resnet18, 34: resnet34, 50: resnet50}[depth](weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return net


def auto_encoder_kind(setting: str, input_shape: tuple[int, ...]) -> str:
    """The `encoder` knob's choice: `auto` is the small CNN for small inputs, else ResNet-18."""
    if setting != "auto":
        return setting
    return "small" if is_small_input(input_shape) else "resnet18"


def make_encoder(kind: str, in_channels: int, dim: int, weights: str = "") -> nn.Module:
    """`small` (dim-d output) or `resnet18` / `resnet34` / `resnet50`, optionally starting from
    the torchvision state dict at `weights` (checked against this encoder's shapes first)."""
    if kind == "small":
        if weights:
            raise ConfigError(_needs_resnet(weights, kind))
        return SmallEncoder(in_channels, dim)
    if kind not in RESNET_DEPTHS:
        raise ValueError(f"unknown encoder {kind!r}; use small, {', '.join(RESNET_DEPTHS)}")
    net = resnet_encoder(in_channels, RESNET_DEPTHS[kind])
    if weights:
        state = load_encoder_weights(weights)
        check_encoder_weights(state, weights, kind, in_channels)
        net.load_state_dict(_trunk(state))
    return net


def load_encoder_weights(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a saved state dict, read with `weights_only=True` (no pickled code runs);
    ConfigError with one line when the file is missing or not such a dict."""
    if not Path(path).is_file():
        raise ConfigError(f"encoder_weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # weights_only's own message suggests turning it off: say what the file is instead
        reason = ("not a torch.save file, or it pickles objects other than tensors, e.g. a "
                  "whole model" if isinstance(err, pickle.UnpicklingError)
                  else " ".join(str(err).split())[:200])
        raise ConfigError(
            f"encoder_weights {path} cannot be read as a PyTorch state dict with "
            f"weights_only=True ({type(err).__name__}: {reason}); save one with "
            "torch.save(model.state_dict(), PATH)"
        ) from None
    if not isinstance(state, Mapping) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ConfigError(
            f"encoder_weights {path} holds a {type(state).__name__}, not a state dict of named "
            "tensors; save one with torch.save(model.state_dict(), PATH)"
        )
    return dict(state)


def check_encoder_weights(
    state: Mapping[str, torch.Tensor], path: str, kind: str, in_channels: int | None = None
) -> None:
    """Raise ConfigError (one line) unless `state` fits the `kind` encoder's trunk exactly.

    `fc.*` (the ImageNet classifier) is ignored: V uses the pooled features. With
    `in_channels=None` (not known yet, e.g. before the data is loaded) conv1's input-channel
    count is not compared.
    """
    if kind not in RESNET_DEPTHS:
        raise ConfigError(_needs_resnet(path, kind))
    problem = _mismatch(state, kind, in_channels)
    if problem:
        fits = [k for k in RESNET_DEPTHS if k != kind and not _mismatch(state, k, None)]
        hint = f"it fits encoder={fits[0]}" if fits else "it fits no torchvision ResNet-18/34/50"
        raise ConfigError(f"encoder_weights {path} does not fit encoder={kind}: {problem}; {hint}")


def _needs_resnet(path: str, kind: str) -> str:
    return (f"encoder_weights {path} needs encoder=resnet18, resnet34 or resnet50 (the ResNet "
            f"the weights were saved from), got encoder={kind}")


def _trunk(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without the classification head."""
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _mismatch(state: Mapping[str, torch.Tensor], kind: str, in_channels: int | None) -> str:
    """'' when `state` fits the encoder's trunk, else the first difference in words."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        expected = resnet_encoder(in_channels or 3, RESNET_DEPTHS[kind]).state_dict()
    given = _trunk(state)
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    if missing:
        return f"{len(missing)} tensors missing (first {missing[0]})"
    if extra:
        return f"{len(extra)} unexpected tensors (first {extra[0]})"
    for key, tensor in expected.items():
        shape, have = tuple(tensor.shape), tuple(given[key].shape)
        if in_channels is None and key == "conv1.weight" and len(have) == 4:
            shape, have = shape[:1] + shape[2:], have[:1] + have[2:]
        if shape != have:
            return f"{key} has shape {tuple(given[key].shape)}, the encoder needs " \
                   f"{tuple(tensor.shape)}"
    return ""
