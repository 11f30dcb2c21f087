"""Implicit hypergradient methods: the inverse-Hessian-vector product, at any level of a program.

Implicit differentiation takes a lower level to be at a stationary point w*(u) of its objective
f(w, u) (grad_w f = 0), so dw*/du = -H^{-1} grad2_wu f with H = grad2_ww f, and an upper loss L
that reads w* gets

    dL/du = grad_u L - grad2_uw f . H^{-1} grad_w L.

Each method here returns grad_u <grad_w f, q> with q ~= H^{-1} v for the cotangent v = grad_w L
that the engine hands it; the engine subtracts it (no step size: the level is not unrolled).

Across levels this is the chain rule through every intermediate level's response: the
contribution computed for a level w_k is a cotangent on the levels w_k's loss reads (w_{k-1},
...), which is added to whatever the upper loss sends them directly and then goes down through
*their* response the same way — an H_{k-1}^{-1} solve if w_{k-1} is implicit, the unrolled step
if it is unrolled. So on a chain theta -> w_3 -> w_2 -> w_1 with every level implicit,

    dF/dtheta = grad_theta F + sum over levels k of  -grad2_{theta w_k} f_k . q_k,
    q_k = H_k^{-1} (grad_{w_k} F - sum over levels j reading w_k of grad2_{w_k w_j} f_j . q_j),

which is exact when every lower level sits at its stationary point and each solve is exact.

Both methods build the graph of grad_w f once and take every Hessian-vector product H x from
it by backward (one double-backward pass each), so `iterations` costs that many products.
They are registered by name in `methods.HYPERGRADIENT_METHODS` and take their settings as
keyword arguments (the `neumann_*` and `cg_*` knobs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from skillearn.mlo.methods import implicit

Tensors = Sequence[torch.Tensor]


class _GradientGraph:
    """grad_w f at w, kept differentiable: H x and grad_u <grad_w f, q> are backward passes."""

    def __init__(self, loss_at: Callable[[Tensors], torch.Tensor], w: Tensors,
                 damping: float = 0.0) -> None:
        self.damping = damping
        self.leaves = [t.detach().requires_grad_(True) for t in w]
        grads = torch.autograd.grad(loss_at(self.leaves), self.leaves, create_graph=True,
                                    allow_unused=True)
        # positions where grad_w f depends on something (w or an input): the rest are constant
        self.live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self.grads = [grads[i] for i in self.live]

    def hvp(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        """(H + damping I) x, H x = grad_w <grad_w f, x> (zero where f does not curve)."""
        if not self.grads:
            products: Sequence[torch.Tensor | None] = [None] * len(x)
        else:
            products = torch.autograd.grad(self.grads, self.leaves, [x[i] for i in self.live],
                                           retain_graph=True, allow_unused=True)
        hx = [torch.zeros_like(t) if p is None else p for p, t in zip(products, x, strict=True)]
        return torch._foreach_add(hx, x, alpha=self.damping) if self.damping else hx

    def mixed(self, inputs: Tensors, q: list[torch.Tensor]) -> list[torch.Tensor]:
        """grad_inputs <grad_w f, q>, the last use of the graph."""
        if not self.grads or not inputs:
            return [torch.zeros_like(x) for x in inputs]
        grads = torch.autograd.grad(self.grads, list(inputs), [q[i] for i in self.live],
                                    allow_unused=True)
        return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]


def _dot(a: Tensors, b: Tensors) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


@implicit
def neumann(
    loss_at: Callable[[Tensors], torch.Tensor],
    w: Tensors,
    inputs: Tensors,
    v: Tensors,
    radius: float = 0.0,
    *,
    step: float = 1.0,
    iterations: int = 5,
    alpha: float = 0.0,
    damping: float = 0.0,
) -> list[torch.Tensor]:
    """grad_inputs <grad_w f, q>, q = alpha * sum_{i=0..iterations} (I - alpha H)^i v.

    The truncated Neumann series of H^{-1} v (Lorraine et al. 2020): it converges as
    `iterations` grows when 0 < alpha < 2 / lambda_max(H) and H is positive definite, and
    iterations=0 is one gradient step of size alpha (DARTS' unrolled direction, read at w).
    `alpha=0` uses the level's own step size `step` (its learning rate), which a stable SGD on
    that level keeps below 2 / lambda_max already. `damping` > 0 inverts H + damping I instead
    (see `conjugate_gradient`). `radius` is unused.
    """
    alpha = alpha or step
    with torch.enable_grad():
        graph = _GradientGraph(loss_at, w, damping)
        term = [t.detach() for t in v]
        total = list(term)
        for _ in range(iterations):
            term = torch._foreach_sub(term, torch._foreach_mul(graph.hvp(term), alpha))
            total = torch._foreach_add(total, term)
        return graph.mixed(inputs, torch._foreach_mul(total, alpha))


@implicit
def conjugate_gradient(
    loss_at: Callable[[Tensors], torch.Tensor],
    w: Tensors,
    inputs: Tensors,
    v: Tensors,
    radius: float = 0.0,
    *,
    step: float = 1.0,
    iterations: int = 10,
    tolerance: float = 1e-6,
    damping: float = 0.0,
) -> list[torch.Tensor]:
    """grad_inputs <grad_w f, q>, q solving H q = v by conjugate gradient from q = 0.

    Stops after `iterations` Hessian-vector products or once ||v - H q|| <= tolerance * ||v||
    (exact in n steps on an n-dimensional positive-definite H, up to rounding). CG assumes H is
    positive definite; where it meets a direction of non-positive curvature (a nonconvex lower
    loss away from its minimum) it stops with the solution so far, and before any step falls
    back to `step * v`, the one-step-unrolled direction. `damping` > 0 solves
    (H + damping I) q = v: a positive-definite system even where H is not, and q no longer
    blows up along H's near-zero directions (an untrained network's Hessian has many). `radius`
    is unused.
    """
    with torch.enable_grad():
        graph = _GradientGraph(loss_at, w, damping)
        residual = [t.detach().clone() for t in v]
        direction = [t.clone() for t in residual]
        solution = [torch.zeros_like(t) for t in residual]
        rr = _dot(residual, residual)
        threshold = tolerance**2 * float(rr)
        for taken in range(iterations):
            if float(rr) <= threshold or float(rr) == 0.0:
                break
            h_direction = graph.hvp(direction)
            curvature = _dot(direction, h_direction)
            if float(curvature) <= 0.0:
                if taken == 0:
                    solution = torch._foreach_mul(residual, step)
                break
            step_length = rr / curvature
            solution = torch._foreach_add(solution, torch._foreach_mul(direction, step_length))
            residual = torch._foreach_sub(residual, torch._foreach_mul(h_direction, step_length))
            rr_next = _dot(residual, residual)
            direction = torch._foreach_add(residual, torch._foreach_mul(direction, rr_next / rr))
            rr = rr_next
        return graph.mixed(inputs, solution)
