"""Mixed second-derivative products, the one primitive every hypergradient method needs.

Through an unrolled step w' = w - xi * grad_w f(w, u), a cotangent v on w' reaches any input u
of f as  -xi * grad_u <grad_w f(w, u), v>.  The methods differ only in how they compute
grad_u <grad_w f, v>:
- `exact`: double backward through grad_w f;
- `finite_difference`: DARTS' central difference
  (grad_u f(w + eps v, u) - grad_u f(w - eps v, u)) / (2 eps),  eps = radius / ||v||.
The perturbed points are new tensors, so w is never written to: it is restored bit-exactly
because it is never changed. Both have `methods.MixedProduct`'s signature and are registered by
name in `methods.HYPERGRADIENT_METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Tensors = Sequence[torch.Tensor]


def _grad_or_zeros(output: torch.Tensor, inputs: Tensors, **kwargs) -> list[torch.Tensor]:
    grads = torch.autograd.grad(output, list(inputs), allow_unused=True, **kwargs)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]


def global_norm(tensors: Tensors) -> torch.Tensor:
    """The 2-norm of a list of tensors taken as one vector (no host sync)."""
    norms = torch._foreach_norm(list(tensors))
    return torch.linalg.vector_norm(torch.stack([n.to(norms[0].dtype) for n in norms]))


def like_params(params: Tensors, tensors: Tensors) -> list[torch.Tensor]:
    """`tensors` with the memory layout of `params` (a copy only where the strides differ).

    Gradients and foreach results may come back in another layout than the parameters (NCHW
    grads of NHWC weights; size-1 dims make the tie-break ambiguous). A weight's strides steer
    the kernels: the stem conv of a 1-channel NHWC supernet ran the whole network in NCHW at the
    unrolled point, 1.6x slower than at the parameters. Same values, the parameters' layout.
    """
    return [t if t.stride() == p.stride() else torch.empty_like(p).copy_(t)
            for p, t in zip(params, tensors, strict=True)]


def add_like_params(params: Tensors, others: Tensors, alpha: float = 1.0) -> list[torch.Tensor]:
    """params + alpha * others, each result in its parameter's memory layout (`like_params`).

    Where the layouts already agree this is one foreach add. Where they differ (the NCHW
    gradients of NHWC weights: nearly every tensor of a channels-last supernet) each sum is
    written straight into a tensor shaped like its parameter, one kernel per tensor instead of
    an add and then a layout copy. Same values either way.
    """
    params, others = list(params), list(others)
    if all(o.stride() == p.stride() for p, o in zip(params, others, strict=True)):
        return like_params(params, torch._foreach_add(params, others, alpha=alpha))
    return [torch.add(p, o, alpha=alpha, out=torch.empty_like(p))
            for p, o in zip(params, others, strict=True)]


def mixed_vjp_exact(
    loss_at: Callable[[Tensors], torch.Tensor],
    w: Tensors,
    inputs: Tensors,
    v: Tensors,
    radius: float = 0.0,
) -> list[torch.Tensor]:
    """grad_inputs <grad_w f(w, inputs), v> by double backward (`radius` is unused: no step)."""
    w_leaf = [t.detach().requires_grad_(True) for t in w]
    with torch.enable_grad():
        loss = loss_at(w_leaf)
        grads_w = torch.autograd.grad(loss, w_leaf, create_graph=True, allow_unused=True)
        inner = sum(
            (g * vi).sum() for g, vi in zip(grads_w, v, strict=True) if g is not None
        )
        if not isinstance(inner, torch.Tensor) or not inner.requires_grad:
            return [torch.zeros_like(x) for x in inputs]
        return _grad_or_zeros(inner, inputs)


def mixed_vjp_finite_difference(
    loss_at: Callable[[Tensors], torch.Tensor],
    w: Tensors,
    inputs: Tensors,
    v: Tensors,
    radius: float = 0.01,
) -> list[torch.Tensor]:
    """grad_inputs <grad_w f(w, inputs), v> by DARTS' central difference around w.

    Only gradients with respect to `inputs` are computed in the two passes (not w's), which is
    what makes this cheaper than a plain training step's backward.
    """
    eps = radius / (global_norm(v) + 1e-12)
    with torch.no_grad():
        step = torch._foreach_mul(list(v), eps)
        w_plus = add_like_params(w, step)
        w_minus = add_like_params(w, step, alpha=-1.0)
    with torch.enable_grad():
        grads_plus = _grad_or_zeros(loss_at(w_plus), inputs)
        grads_minus = _grad_or_zeros(loss_at(w_minus), inputs)
    with torch.no_grad():
        return torch._foreach_div(torch._foreach_sub(grads_plus, grads_minus), 2 * eps)
