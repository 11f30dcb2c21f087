"""Adam for an upper level that holds several kinds of learned quantity (LFM's B, V and r).

Two things plain `torch.optim.Adam` cannot do, both needed for LFM's per-example r:

- a gradient-norm clip per parameter group (the LFM code clips A, V and r separately, so a large
  encoder gradient cannot shrink r's step to nothing); `clip=None` leaves a group unclipped;
- lazy groups (`lazy=True`): an entry whose gradient is exactly zero — a validation example that
  is not in this step's batch — keeps its value and its moment estimates, and each entry counts
  its own steps for Adam's bias correction. This is the "lazy"/sparse Adam of TensorFlow's
  LazyAdam and `torch.optim.SparseAdam`, on dense gradients. With dense Adam plus weight decay an
  absent entry gets gradient wd·r_j, which Adam normalises to a step of ~lr towards 0 every step:
  r decayed uniformly to 0 (issue 9, defect 1). Weight decay, when set, is applied only to the
  entries a step updates.

Coupled (L2) weight decay as `torch.optim.Adam`, per group. One scheduler over this optimizer
anneals every group (LambdaLR keeps each group's own base rate).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class GroupAdam(torch.optim.Optimizer):
    """Adam with a per-group `clip` (gradient-norm bound) and `lazy` flag (see module doc)."""

    def __init__(
        self,
        groups: Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip: float | None = None,
        lazy: bool = False,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "clip": clip, "lazy": lazy}
        super().__init__(list(groups), defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: D102 - torch.optim.Optimizer API
        if closure is not None:
            raise ValueError("GroupAdam does not take a closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["clip"] is not None:
                torch.nn.utils.clip_grad_norm_(params, group["clip"])
            for param in params:
                self._update(param, group)

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        grad = param.grad
        state = self.state[param]
        if not state:
            shape = param.shape if group["lazy"] else ()
            state["step"] = torch.zeros(shape, dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        elif state["step"].device != param.device:  # torch restores "step" on the CPU
            state["step"] = state["step"].to(param.device)
        if group["weight_decay"]:
            grad = grad.add(param, alpha=group["weight_decay"])
        if not group["lazy"]:
            state["step"] += 1
            exp_avg = state["exp_avg"].lerp_(grad, 1 - beta1)
            exp_avg_sq = state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step = state["step"]
            update = self._adam_step(exp_avg, exp_avg_sq, step, group)
            param.sub_(update)
            return
        present = param.grad != 0  # absent entries: no value, moment or step-count change
        if group["weight_decay"]:
            grad = torch.where(present, grad, torch.zeros_like(grad))
        state["step"] += present
        exp_avg = torch.where(present, state["exp_avg"].lerp(grad, 1 - beta1), state["exp_avg"])
        exp_avg_sq = torch.where(present, state["exp_avg_sq"] * beta2 + (1 - beta2) * grad * grad,
                                 state["exp_avg_sq"])
        state["exp_avg"].copy_(exp_avg)
        state["exp_avg_sq"].copy_(exp_avg_sq)
        update = self._adam_step(exp_avg, exp_avg_sq, state["step"].clamp_min(1), group)
        param.sub_(torch.where(present, update, torch.zeros_like(update)))

    @staticmethod
    def _adam_step(
        exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: torch.Tensor, group: dict[str, Any]
    ) -> torch.Tensor:
        beta1, beta2 = group["betas"]
        bias1 = 1 - beta1 ** step
        bias2 = 1 - beta2 ** step
        denom = (exp_avg_sq / bias2).sqrt_().add_(group["eps"])
        return group["lr"] * (exp_avg / bias1) / denom
