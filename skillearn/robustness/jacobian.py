"""DSRNA's Jacobian regulariser: the input-output Jacobian's size, by random projection.

DSRNA (Eqs. 1.12-1.15) bounds an l_p attack's effect on the logits by Hoelder,
``|f_k(x+e) - f_k(x)| ~ |J_k(x) . e| <= |J_k(x)|_q |e|_p`` (1/p + 1/q = 1), and penalises
``sum_k |J_k(x)|_q``. The thesis then says that for l2 and l_inf attacks this sum "is the
Frobenius norm and l1 norm of the Jacobian" and computes it "by random projection" (Hoffman
et al., 2019). Only the l_inf half is exact; what is implemented:

- ``norm="l2"``: Hoffman et al.'s estimator of the *squared Frobenius* norm,
  ``|J|_F^2 = E_v |v^T J|^2`` for ``v ~ N(0, I_K)`` (unbiased; n_proj=1 is Hoffman's setting).
  The thesis' ``sum_k |J_k|_2`` is not the Frobenius norm (it lies between |J|_F and
  sqrt(K) |J|_F); we regularise what Hoffman et al. and the thesis' citation compute.
- ``norm="linf"``: ``sum_k |J_k|_1`` (entrywise l1, exactly the Hoelder dual of l_inf), estimated
  without bias by projecting on one uniformly drawn class row: ``K |e_k^T J|_1``.

Both need one vector-Jacobian product per projection, built with ``create_graph`` so the
estimate is differentiable in the network's weights and architecture. With BatchNorm in train
mode the batch's examples interact; the VJP of the summed projections then includes that
(small) cross-example path, as in Hoffman et al.'s batched implementation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

JACOBIAN_NORMS = ("l2", "linf")


def jacobian_norm(model: Callable[[Tensor], Tensor], x: Tensor, norm: str = "l2",
                  n_proj: int = 1, create_graph: bool = True,
                  generator: torch.Generator | None = None) -> Tensor:
    """Per example, an unbiased estimate of ``|J(x)|_F^2`` (``l2``) or ``sum_k |J_k(x)|_1``
    (``linf``) of the logits ``model(x)`` w.r.t. the input, from ``n_proj`` projections."""
    if norm not in JACOBIAN_NORMS:
        raise ValueError(f"jacobian norm {norm!r}; use one of {', '.join(JACOBIAN_NORMS)}")
    if n_proj < 1:
        raise ValueError(f"n_proj must be >= 1, got {n_proj}")
    x = x.detach().requires_grad_(True)
    logits = model(x)
    n, k = logits.shape
    total = torch.zeros(n, dtype=logits.dtype, device=logits.device)
    for i in range(n_proj):
        if norm == "l2":
            v = torch.randn(n, k, dtype=logits.dtype, device=logits.device, generator=generator)
        else:
            rows = torch.randint(k, (n,), device=logits.device, generator=generator)
            v = torch.nn.functional.one_hot(rows, k).to(logits.dtype)
        (vjp,) = torch.autograd.grad((logits * v).sum(), x, create_graph=create_graph,
                                     retain_graph=create_graph or i + 1 < n_proj)
        flat = vjp.flatten(1)
        total = total + (flat.pow(2).sum(1) if norm == "l2" else k * flat.abs().sum(1))
    return total / n_proj


def exact_jacobian_norm(model: Callable[[Tensor], Tensor], x: Tensor, norm: str = "l2"
                        ) -> Tensor:
    """The same quantity from the full Jacobian (K backward passes): the reference the
    estimator is tested against, and a cheap exact value when K is small."""
    out = []
    for example in x:
        jac = torch.autograd.functional.jacobian(lambda z: model(z.unsqueeze(0))[0], example)
        flat = jac.flatten(1)  # (K, D)
        out.append(flat.pow(2).sum() if norm == "l2" else flat.abs().sum())
    return torch.stack(out)
