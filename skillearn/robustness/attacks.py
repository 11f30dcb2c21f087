"""White-box l_inf attacks for evaluation: FGSM and PGD with random start (Madry et al.).

Written here because torchattacks pins an old ``requests`` that breaks MLflow and Ray. Budgets
are given in the data's own units through ``PixelSpace``: digits and CIFAR are normalised per
channel, so an eps of 0.3 "on [0, 1]-scaled pixels" is ``0.3 / std_c`` per channel, and every
adversarial input is kept inside the valid (normalised) pixel range.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

Model = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class PixelSpace:
    """Pixels in [0, 1] normalised as ``(p - mean_c) / std_c``: ``scale`` turns a pixel-unit
    budget into the model's input units, ``lo`` / ``hi`` are the valid input range."""

    scale: Tensor
    lo: Tensor
    hi: Tensor

    @classmethod
    def from_normalisation(cls, mean: Sequence[float], std: Sequence[float],
                           device: torch.device | str = "cpu") -> PixelSpace:
        m = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        s = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return cls(scale=1.0 / s, lo=(0.0 - m) / s, hi=(1.0 - m) / s)

    @classmethod
    def from_record(cls, record: Mapping, channels: int, device: torch.device | str = "cpu"
                    ) -> PixelSpace:
        """From a DataBundle's record (``norm_mean`` / ``norm_std``); identity if absent."""
        return cls.from_normalisation(record.get("norm_mean", [0.0] * channels),
                                      record.get("norm_std", [1.0] * channels), device)

    @classmethod
    def unit(cls, device: torch.device | str = "cpu") -> PixelSpace:
        """Un-normalised [0, 1] inputs."""
        return cls.from_normalisation([0.0], [1.0], device)

    def project(self, x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
        """Into the eps-ball around x (pixel units) and the valid range."""
        return _clip(x_adv, x, eps * self.scale, self.lo, self.hi)


def _clip(x_adv: Tensor, x: Tensor, radius: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    x_adv = torch.minimum(torch.maximum(x_adv, x - radius), x + radius)
    return torch.minimum(torch.maximum(x_adv, lo), hi)


def _loss_grad(model: Model, x: Tensor, y: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: Model, x: Tensor, y: Tensor, eps: float, space: PixelSpace) -> Tensor:
    """One signed-gradient step of size eps (Goodfellow et al.)."""
    step = eps * space.scale * _loss_grad(model, x, y).sign()
    return _clip(x + step, x, eps * space.scale, space.lo, space.hi).detach()


def pgd(model: Model, x: Tensor, y: Tensor, eps: float, space: PixelSpace, steps: int = 20,
        step_size: float | None = None, restarts: int = 1,
        generator: torch.Generator | None = None) -> Tensor:
    """l_inf PGD from a uniform random start in the ball; step ``eps/4`` unless given. With
    restarts, an example keeps the first restart that fools the model (else the last)."""
    step = (eps / 4 if step_size is None else step_size) * space.scale
    radius = eps * space.scale
    best = x.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        noise = torch.rand(x.shape, device=x.device, generator=generator) * 2 - 1
        x_adv = _clip(x + noise * radius, x, radius, space.lo, space.hi)
        for _ in range(steps):
            x_adv = _clip(x_adv + step * _loss_grad(model, x_adv, y).sign(), x, radius,
                          space.lo, space.hi)
        with torch.no_grad():
            wrong = model(x_adv).argmax(1) != y
        open_ = (~fooled).view(-1, *[1] * (x.dim() - 1))  # not fooled by an earlier restart
        best = torch.where(open_, x_adv, best)
        fooled |= wrong
    return best.detach()


@torch.no_grad()
def accuracy(model: Model, x: Tensor, y: Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def robust_accuracy(model: Model, x: Tensor, y: Tensor,
                    attack: Callable[[Model, Tensor, Tensor], Tensor]) -> float:
    """Accuracy on ``attack(model, x, y)``: the share of examples the attack does not flip."""
    return accuracy(model, attack(model, x, y), y)
