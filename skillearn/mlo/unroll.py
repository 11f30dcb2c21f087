"""The virtual one-step update w' = w - xi * d that upper levels differentiate through.

It mirrors the level's real optimizer where that is cheap to do exactly (SGD with momentum and
weight decay, as DARTS' `_compute_unrolled_model`), so the unrolled point is where the real
step would land. Momentum and weight-decay terms do not depend on the upper levels, so they
shift w' without adding to the hypergradient.
"""

from __future__ import annotations

import torch

from skillearn.mlo.level import Level, ParamDict


def virtual_step(level: Level, grads: ParamDict) -> ParamDict:
    """w' for every parameter of `level`, given its gradient at the current point."""
    optimizer = level.optimizer
    group = optimizer.param_groups[0]
    xi = level.xi
    is_sgd = isinstance(optimizer, torch.optim.SGD)
    momentum = float(group.get("momentum", 0.0)) if is_sgd else 0.0
    weight_decay = float(group.get("weight_decay", 0.0)) if is_sgd else 0.0
    unrolled: ParamDict = {}
    with torch.no_grad():
        for key, param in level.params.items():
            direction = grads[key]
            if weight_decay:
                direction = direction + weight_decay * param
            if momentum:
                buffer = optimizer.state.get(param, {}).get("momentum_buffer")
                if buffer is not None:
                    direction = direction + momentum * buffer
            unrolled[key] = param - xi * direction
    return unrolled
