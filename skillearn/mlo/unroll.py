"""The virtual step w' = P(w - Delta(g)) that upper levels differentiate through.

It is the level's real optimizer step, computed out of place, so the unrolled point is where
the real step would land: torch.optim.SGD in full (every param group, momentum, dampening,
Nesterov, weight decay; DARTS' `_compute_unrolled_model` is the plain-momentum case) and
Adam/AdamW (bias correction, L2 or decoupled weight decay), as Betty's `DifferentiableAdam`.
Any other optimizer is refused when the program is built (`check_unrollable`): an unroll that
silently assumed plain SGD would send the hypergradient through the wrong point.

The step's state (momentum buffers, Adam moments) does not depend on the upper levels, so only
g = grad_w f(w, u) carries the hypergradient, and every step here is elementwise in g:
dDelta/dg = diag(s). A cotangent v on w' therefore reaches u as -grad_u <g, s * P'^T v>, the
mixed product of `hypergrad` applied to a rescaled v (`UnrolledStep.pull_back`). For plain SGD
s is one number, the step size xi, and v is left as it is. `P` is the level's projection
(identity when it has none). `torch._foreach_*` keeps SGD to a handful of kernel launches
however many parameter tensors the level has. Not mirrored, as in DARTS' code: the level's
`grad_clip`, which clips the real step's gradient only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from skillearn.errors import SkillearnError
from skillearn.mlo.hypergrad import add_like_params, like_params
from skillearn.mlo.level import Level, ParamDict, Projection

# torch.optim classes whose step is mirrored here; subclasses may step differently and are not.
UNROLLABLE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


class UnrollError(SkillearnError):
    """A level cannot be unrolled exactly; the message names the level and what to change."""


def check_unrollable(level: Level) -> None:
    """Raise UnrollError unless `level`'s optimizer step can be mirrored by `unrolled_step`."""
    optimizer = level.optimizer
    kind = type(optimizer).__name__
    if type(optimizer) not in UNROLLABLE_OPTIMIZERS:
        raise UnrollError(
            f"level {level.name!r} is unrolled by a level that reads it, but its optimizer {kind} "
            f"has no differentiable step; use one of "
            f"{', '.join(o.__name__ for o in UNROLLABLE_OPTIMIZERS)} for it"
        )
    for group in optimizer.param_groups:
        if group.get("maximize"):
            raise UnrollError(f"level {level.name!r}: {kind}(maximize=True) is not unrolled; "
                              "declare Level(maximize=True) instead")
        if group.get("amsgrad"):
            raise UnrollError(f"level {level.name!r}: {kind}(amsgrad=True) has no "
                              "differentiable step here; use amsgrad=False")
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [key for key, p in level.params.items() if id(p) not in in_optimizer]
    if missing:
        raise UnrollError(f"level {level.name!r}: parameter(s) {', '.join(missing[:3])} are not "
                          f"in its optimizer, so its real step would not move them")


@dataclass
class UnrolledStep:
    """w' of one level, and what it takes to send a cotangent on w' back to the gradient g."""

    values: ParamDict  # w' = P(z), z = w - Delta(g)
    scale: list[float | torch.Tensor]  # dDelta/dg per parameter (elementwise), in key order
    before_projection: ParamDict | None = None  # z, when the level has a projection
    projection: Projection | None = None

    def pull_back(self, v: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], float]:
        """(v_g, xi) with xi * v_g = s * P'(z)^T v: the cotangent on w' as one on g, up to sign.

        The upper level's share is then -xi * grad_u <g, v_g>. `xi` is the common step size when
        every s is that one number (plain SGD: v is not rescaled, as before), else 1.
        """
        v = list(v)
        if self.projection is not None and self.before_projection is not None:
            v = _projection_vjp(self.projection, self.before_projection, v)
        first = self.scale[0]
        if isinstance(first, float) and all(
            isinstance(s, float) and s == first for s in self.scale
        ):
            return v, first
        return [s * vi for s, vi in zip(self.scale, v, strict=True)], 1.0


def virtual_step(level: Level, grads: ParamDict) -> ParamDict:
    """w' for every parameter of `level`, given its gradient at the current point."""
    return unrolled_step(level, grads).values


def unrolled_step(level: Level, grads: ParamDict) -> UnrolledStep:
    """The real optimizer step of `level` from `grads`, out of place, and its scale dDelta/dg.

    `grads` are the gradients of what the optimizer descends (the level's objective).
    """
    optimizer = level.optimizer
    if type(optimizer) not in UNROLLABLE_OPTIMIZERS:
        check_unrollable(level)  # raises, naming the level and the optimizer
    keys = list(level.params)
    position = {id(level.params[k]): i for i, k in enumerate(keys)}
    values: list[torch.Tensor | None] = [None] * len(keys)
    scale: list[float | torch.Tensor] = [0.0] * len(keys)
    step = _adam_step if isinstance(optimizer, torch.optim.Adam) else _sgd_step
    with torch.no_grad():
        for group in optimizer.param_groups:
            indices = [position[id(p)] for p in group["params"] if id(p) in position]
            if not indices:
                continue
            params = [level.params[keys[i]] for i in indices]
            lr = level.unroll_lr if level.unroll_lr is not None else float(group["lr"])
            group_values, group_scale = step(
                group, lr, params, [grads[keys[i]] for i in indices], optimizer.state
            )
            for i, value, s in zip(indices, group_values, group_scale, strict=True):
                values[i], scale[i] = value, s
        # the parameters' memory layout (see `like_params`: a layout flip slows every kernel)
        values = like_params([level.params[k] for k in keys], values)
        unrolled = dict(zip(keys, values, strict=True))
        if level.projection is None:
            return UnrolledStep(unrolled, scale)
        projected = level.projection(unrolled)
        return UnrolledStep({k: projected[k] for k in keys}, scale, unrolled, level.projection)


StepResult = tuple[list[torch.Tensor], list[float | torch.Tensor]]


def _sgd_step(
    group: Mapping, lr: float, params: list[torch.Tensor], grads: list[torch.Tensor],
    state: Mapping,
) -> StepResult:
    """torch.optim.SGD's update, out of place: d = g + wd w; b = mu b + (1 - tau) d (b = d on
    the first step); Delta = lr (d + mu b) with Nesterov, else lr b."""
    momentum = float(group.get("momentum", 0.0))
    dampening = float(group.get("dampening", 0.0))
    weight_decay = float(group.get("weight_decay", 0.0))
    nesterov = bool(group.get("nesterov", False))
    direction = list(grads)
    if weight_decay:
        direction = torch._foreach_add(direction, params, alpha=weight_decay)
    slope = [1.0] * len(params)  # d(direction)/dg per parameter
    if momentum:
        buffers = [state.get(p, {}).get("momentum_buffer") for p in params]
        if all(b is not None for b in buffers):
            damped = torch._foreach_mul(direction, 1.0 - dampening) if dampening else direction
            new_buffers = torch._foreach_add(damped, buffers, alpha=momentum)
            slope = [1.0 - dampening] * len(params)
        else:  # a first step (no buffer yet) takes the direction as it is, undamped
            new_buffers = [d if b is None else (1.0 - dampening) * d + momentum * b
                           for d, b in zip(direction, buffers, strict=True)]
            slope = [1.0 if b is None else 1.0 - dampening for b in buffers]
        if nesterov:
            direction = torch._foreach_add(direction, new_buffers, alpha=momentum)
            slope = [1.0 + momentum * s for s in slope]
        else:
            direction = new_buffers
    return add_like_params(params, direction, alpha=-lr), [lr * s for s in slope]


def _adam_step(
    group: Mapping, lr: float, params: list[torch.Tensor], grads: list[torch.Tensor],
    state: Mapping,
) -> StepResult:
    """torch.optim.Adam/AdamW's update, out of place, and its elementwise derivative in g.

    m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,  D = sqrt(v / c2) + eps,
    Delta = lr m / (c1 D)  with c_i = 1 - b_i^t; L2 weight decay adds wd w to g, decoupled
    (AdamW) multiplies w by 1 - lr wd first. dDelta/dg = lr / c1 ((1 - b1) / D
    - m (1 - b2) g / (sqrt(v c2) D^2)).
    """
    beta1, beta2 = (float(b) for b in group["betas"])
    eps = float(group["eps"])
    weight_decay = float(group.get("weight_decay", 0.0))
    decoupled = bool(group.get("decoupled_weight_decay", False))
    values: list[torch.Tensor] = []
    scale: list[float | torch.Tensor] = []
    for p, g in zip(params, grads, strict=True):
        p_state = state.get(p, {})
        t = float(p_state["step"]) + 1.0 if "step" in p_state else 1.0
        m0 = p_state.get("exp_avg")
        v0 = p_state.get("exp_avg_sq")
        base = p
        if weight_decay and decoupled:
            base = p * (1.0 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * p
        m = (1.0 - beta1) * g if m0 is None else m0.lerp(g, 1.0 - beta1)
        v = (1.0 - beta2) * g * g if v0 is None else v0 * beta2 + (1.0 - beta2) * g * g
        c1, c2_sqrt = 1.0 - beta1**t, (1.0 - beta2**t) ** 0.5
        root_v = v.sqrt()
        denom = root_v / c2_sqrt + eps
        step_size = lr / c1
        values.append(base - step_size * m / denom)
        # where v = 0, g = 0 too and the second term vanishes
        curvature = torch.where(root_v > 0, m * (1.0 - beta2) * g / (root_v * c2_sqrt), 0.0)
        scale.append(step_size * ((1.0 - beta1) - curvature / denom) / denom)
    return values, scale


def _projection_vjp(
    projection: Projection, before: ParamDict, v: list[torch.Tensor]
) -> list[torch.Tensor]:
    """P'(z)^T v by autograd through the projection at z."""
    keys = list(before)
    leaves = [before[k].detach().requires_grad_(True) for k in keys]
    with torch.enable_grad():
        projected = projection(dict(zip(keys, leaves, strict=True)))
        outputs = [projected[k] for k in keys]
        pairs = [(o, vi) for o, vi in zip(outputs, v, strict=True) if o.requires_grad]
        grads = torch.autograd.grad([o for o, _ in pairs], leaves, [vi for _, vi in pairs],
                                    allow_unused=True) if pairs else [None] * len(leaves)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves, strict=True)]
