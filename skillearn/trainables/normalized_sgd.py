"""SGD whose step in each parameter group is normalised by that group's gradient RMS.

Why: LFM-DR's outer variables get hypergradients of wildly different sizes. b's is a product of
two unrolled steps (scale eta1 * eta2 / n^2, ~1e-6 on digits), V's and r's one step (~1e-4), so
one plain-SGD learning rate per group either freezes b, V and r (issue 9: relative change 2e-8
in 70 steps with the official code's rates) or blows up as the classifier's rate changes. Here a
group's step is `lr * g / rms(g)`: the direction of the exact hypergradient inside the group is
kept, and a typical coordinate moves by `lr` per step, whatever the scale.

The RMS is taken over the coordinates whose gradient is not zero, so a sparse group (b: only the
batch's examples have a hypergradient) moves its batch entries by ~lr and leaves every other
entry exactly where it is (no momentum, no weight decay: either would move absent entries).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

RMS_FLOOR = 1e-30


class NormalizedSGD(torch.optim.Optimizer):
    """param <- param - lr * grad / rms(nonzero grad of the group); groups may set their own lr."""

    def __init__(self, params: Iterable[Any], lr: float) -> None:
        if lr <= 0:
            raise ValueError(f"NormalizedSGD needs lr > 0, got {lr}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: D102 - torch's signature
        if closure is not None:
            raise ValueError("NormalizedSGD does not take a closure")
        for group in self.param_groups:
            grads = [p.grad for p in group["params"] if p.grad is not None]
            if not grads:
                continue
            square_sum = sum(g.double().pow(2).sum() for g in grads)
            nonzero = sum((g != 0).sum() for g in grads)
            if int(nonzero) == 0:
                continue
            rms = float((square_sum / nonzero).sqrt())
            if not rms > RMS_FLOOR:  # also catches NaN: the runner reports the loss
                continue
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] / rms)
