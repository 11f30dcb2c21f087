"""A level of a multilevel program is plain data: parameters, optimizer, loss, schedule, and the
levels below and above whose parameters its loss reads."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

ParamDict = dict[str, torch.Tensor]
# What a loss sees: level name -> that level's parameters. For the levels in `reads_lower` these
# are the one-step-unrolled values w' = w - xi * grad; for every other level the current ones.
Params = Mapping[str, Mapping[str, torch.Tensor]]
Batches = Mapping[str, Any]
LossFn = Callable[[Params, Batches], torch.Tensor]
# Maps a level's parameters to the nearest point of its feasible set (same keys, new tensors);
# differentiable where the set's boundary is not, e.g. a clamp onto an infinity-norm ball.
Projection = Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]


@dataclass
class Level:
    """One level: it minimises `loss` over its own `params` with `optimizer` every `every` steps.

    `reads_lower` names the lower levels whose parameters `loss` reads, at their
    one-step-unrolled values; this level's hypergradient flows back through those updates.
    `unroll_lr` is the virtual step size xi used when an upper level unrolls this one
    (None: each param group's current learning rate, as DARTS does); the unrolled step is
    otherwise the optimizer's own (see `unroll`: SGD, Adam and AdamW).
    `reads_upper` names the upper levels whose (current) parameters `loss` reads; None means all
    of them. It only prunes work: an upper level's hypergradient skips lower levels it cannot
    reach (LFM's W1 loss reads the architecture but not W2).
    `maximize=True` makes the level ascend its loss (an adversary, a worst-case generator): the
    engine descends -loss in the real step, in the unrolled step and in the hypergradient, and
    still reports `loss` itself. `projection` keeps the parameters feasible (e.g.
    `projections.linf_ball(eps)` for a perturbation with ||delta||_inf <= eps): it is applied
    after every real step and to the unrolled step, which upper levels differentiate through.
    `method` is the hypergradient method upper levels differentiate through this level with
    (a name in `methods.HYPERGRADIENT_METHODS`); None: the program's.
    """

    name: str
    params: ParamDict
    optimizer: torch.optim.Optimizer
    loss: LossFn
    reads_lower: tuple[str, ...] = ()
    every: int = 1
    grad_clip: float | None = None
    unroll_lr: float | None = None
    scheduler: Any = None
    reads_upper: tuple[str, ...] | None = None
    maximize: bool = False
    projection: Projection | None = None
    method: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"level name {self.name!r} must be a Python identifier")
        if self.every < 1:
            raise ValueError(f"level {self.name!r}: every={self.every} must be >= 1")
        if not self.params:
            raise ValueError(f"level {self.name!r} has no parameters")
        for key, tensor in self.params.items():
            if not tensor.requires_grad:
                raise ValueError(f"level {self.name!r}: parameter {key!r} does not require grad")
        if self.projection is not None and not callable(self.projection):
            raise ValueError(f"level {self.name!r}: projection must be a function of the "
                             f"parameters, got {type(self.projection).__name__}")
        self.reads_lower = tuple(self.reads_lower)

    def objective(self, loss: torch.Tensor) -> torch.Tensor:
        """What this level's optimizer descends: `loss`, negated when the level maximises."""
        return -loss if self.maximize else loss

    @property
    def xi(self) -> float:
        """The virtual step size used when unrolling this level (its first group's)."""
        if self.unroll_lr is not None:
            return self.unroll_lr
        return float(self.optimizer.param_groups[0]["lr"])


def params_view(
    levels: Mapping[str, Level], replaced: Mapping[str, Mapping[str, torch.Tensor]]
) -> dict[str, Mapping[str, torch.Tensor]]:
    """Every level's current parameters, with the levels in `replaced` swapped out."""
    return {name: replaced.get(name, level.params) for name, level in levels.items()}
