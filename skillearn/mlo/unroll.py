"""The virtual one-step update w' = w - xi * d that upper levels differentiate through.

It mirrors the level's real optimizer where that is cheap to do exactly (SGD with momentum and
weight decay, as DARTS' `_compute_unrolled_model`), so the unrolled point is where the real
step would land. Momentum and weight-decay terms do not depend on the upper levels, so they
shift w' without adding to the hypergradient. `torch._foreach_*` keeps it to a handful of
kernel launches however many parameter tensors the level has.
"""

from __future__ import annotations

import torch

from skillearn.mlo.level import Level, ParamDict


def virtual_step(level: Level, grads: ParamDict) -> ParamDict:
    """w' for every parameter of `level`, given its gradient at the current point."""
    optimizer = level.optimizer
    group = optimizer.param_groups[0]
    is_sgd = isinstance(optimizer, torch.optim.SGD)
    momentum = float(group.get("momentum", 0.0)) if is_sgd else 0.0
    weight_decay = float(group.get("weight_decay", 0.0)) if is_sgd else 0.0
    keys = list(level.params)
    params = [level.params[k] for k in keys]
    with torch.no_grad():
        direction = [grads[k] for k in keys]
        if weight_decay:
            direction = torch._foreach_add(direction, params, alpha=weight_decay)
        if momentum:
            buffers = [optimizer.state.get(p, {}).get("momentum_buffer") for p in params]
            if all(b is not None for b in buffers):
                direction = torch._foreach_add(direction, buffers, alpha=momentum)
        unrolled = torch._foreach_add(params, direction, alpha=-level.xi)
    return dict(zip(keys, unrolled, strict=True))
