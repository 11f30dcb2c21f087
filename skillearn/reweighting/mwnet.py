"""Meta-Weight-Net (Shu et al., 2019): an MLP mapping an example's loss to its training weight.

The original is Linear(1, 100) -> ReLU -> Linear(100, 1) -> sigmoid on the *detached* loss
(`VNet(cost.data)`): the weight steers the classifier's update but is not itself a path for the
classifier's gradient. Seed 003 searches the hidden layers and optionally appends a (detached)
intermediate feature of the classifier to the input, so both are constructor arguments here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MetaWeightNet(nn.Module):
    """weight = sigmoid(MLP([loss, feature])), one weight in (0, 1) per example."""

    def __init__(
        self,
        in_features: int = 1,
        hidden: Sequence[int] = (100,),
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if in_features < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"MetaWeightNet needs positive sizes, got {in_features}, {hidden}")
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), activation()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.in_features = in_features
        self.hidden = tuple(hidden)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """`inputs` is (n, in_features); returns (n,) weights."""
        return torch.sigmoid(self.mlp(inputs)).squeeze(-1)


# What MW-Net reads about an example: its loss (MW-Net), loss and a classifier feature (seed 003),
# the feature alone, or the feature with the one-hot observed label (seed 003's other inputs).
MWNET_INPUTS = ("loss", "loss+feature", "feature", "feature+label")


def input_width(kind: str, feature_dim: int, num_classes: int) -> int:
    """Number of MW-Net input columns for input `kind` (one of MWNET_INPUTS)."""
    if kind not in MWNET_INPUTS:
        raise ValueError(f"unknown MW-Net input {kind!r}; use one of {MWNET_INPUTS}")
    uses = kind.split("+")
    return (("loss" in uses) + feature_dim * ("feature" in uses)
            + num_classes * ("label" in uses))


def weight_inputs(
    losses: torch.Tensor,
    features: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    num_classes: int = 0,
    use_loss: bool = True,
    detach: bool = True,
) -> torch.Tensor:
    """MW-Net's input columns: [loss] [feature] [one-hot label], whichever are given.

    Detached by default as in the original noise code (`cost.data`): theta learns only through
    the meta loss. `detach=False` is MW-Net's class-imbalance variant, whose virtual step also
    differentiates through V's input.
    """
    columns = [losses.reshape(-1, 1)] if use_loss else []
    if features is not None:
        columns.append(features.flatten(1))
    if labels is not None:
        columns.append(F.one_hot(labels, num_classes).to(losses.dtype))
    if not columns:
        raise ValueError("MW-Net needs at least one input column")
    inputs = torch.cat(columns, dim=1)
    return inputs.detach() if detach else inputs


@torch.no_grad()
def weight_curve(
    vnet: MetaWeightNet, losses: torch.Tensor, weights: torch.Tensor, points: int = 41
) -> list[list[float]]:
    """[[loss, weight], ...] on a grid of losses from 0 to the largest observed loss.

    A loss-only MW-Net is evaluated on the grid itself (its learned weighting function); one that
    also reads features has no single curve, so the observed weights are averaged per loss bin.
    """
    if vnet.in_features > 1:
        return binned_weight_curve(losses, weights, points)
    grid = loss_grid(losses, points)
    values = vnet(grid[:, None])
    return [[round(float(g), 4), round(float(v), 4)] for g, v in zip(grid, values, strict=True)]


def loss_grid(losses: torch.Tensor, points: int) -> torch.Tensor:
    """`points` evenly spaced losses from 0 to the largest observed one."""
    top = float(losses.max()) if losses.numel() else 1.0
    return torch.linspace(0.0, max(top, 1e-6), points, device=losses.device)


@torch.no_grad()
def binned_weight_curve(
    losses: torch.Tensor, weights: torch.Tensor, points: int = 41
) -> list[list[float]]:
    """[[loss, mean weight of the examples in that loss bin], ...], empty bins left out: the
    loss -> weight relation of weights that are not a function of the loss alone."""
    grid = loss_grid(losses, points)
    bins = torch.bucketize(losses, grid).clamp(max=points - 1)
    curve = []
    for i in range(points):
        members = weights[bins == i]
        if members.numel():
            curve.append([round(float(grid[i]), 4), round(float(members.mean()), 4)])
    return curve
