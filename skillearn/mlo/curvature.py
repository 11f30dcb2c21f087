"""Curvature of a loss in some parameters: exact Hessian-vector products and power iteration.

The dominant eigenvalue of the validation loss's Hessian in the architecture is R-DARTS'
(Zela et al., 2020) indicator of a search about to collapse onto parameter-free ops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from skillearn.mlo.hypergrad import global_norm


def dominant_hessian_eigenvalue(
    loss_at: Callable[[Sequence[torch.Tensor]], torch.Tensor],
    params: Sequence[torch.Tensor],
    iters: int = 20,
    generator: torch.Generator | None = None,
) -> float:
    """The eigenvalue of largest magnitude of the Hessian of ``loss_at`` at ``params``.

    Power iteration on exact Hessian-vector products (double backward through one gradient
    graph, built once): ``v <- Hv / ||Hv||``, the estimate is the Rayleigh quotient ``<v, Hv>``.
    ``params`` are not modified.
    """
    leaves = [p.detach().requires_grad_(True) for p in params]
    with torch.enable_grad():
        # a parameter the loss does not read (the reduction alphas of a net without a
        # reduction cell) has a zero row and column in the Hessian
        grads = torch.autograd.grad(loss_at(leaves), leaves, create_graph=True,
                                    allow_unused=True)
        if all(g is None for g in grads):
            return 0.0
        v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
             for p in leaves]
        norm = global_norm(v)
        v = [t / norm for t in v]
        estimate = 0.0
        for _ in range(iters):
            inner = sum((g * t).sum() for g, t in zip(grads, v, strict=True) if g is not None)
            hv = torch.autograd.grad(inner, leaves, retain_graph=True, allow_unused=True)
            hv = [torch.zeros_like(t) if h is None else h.detach() for h, t in zip(hv, v,
                                                                                     strict=True)]
            estimate = float(sum((h * t).sum() for h, t in zip(hv, v, strict=True)))
            norm = global_norm(hv)
            if float(norm) == 0.0:
                return 0.0
            v = [h / norm for h in hv]
    return estimate
