"""Levels that maximise and levels with a projection, against closed forms on quadratics.

Lower level delta, upper level u reading delta's one-step-unrolled value delta':
- maximise: delta ascends g = -1/2 d'Ad + d'Bu, so delta' = d + xi (Bu - Ad) and
  dF/du = lam u + xi B'(delta' - c)  for  F = 1/2 |delta' - c|^2 + lam/2 |u|^2;
- projection onto |delta|_inf <= eps: z = d - xi (d - Bu), delta' = clamp(z, -eps, eps), and
  dF/du = lam u + xi B' diag(|z| < eps) (delta' - c): clamped coordinates pass nothing back.
"""

from __future__ import annotations

import pytest
import torch

from skillearn.mlo import Level, MultilevelProgram, linf_ball
from skillearn.mlo.unroll import virtual_step

DTYPE = torch.float64
XI, LAM, N = 0.3, 0.2, 6


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _tensors(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(N, N, generator=gen, dtype=DTYPE)
    A = m @ m.T / N + torch.eye(N, dtype=DTYPE)
    B = 2 * torch.randn(N, N, generator=gen, dtype=DTYPE)
    c = torch.randn(N, generator=gen, dtype=DTYPE)
    delta = (0.1 * torch.randn(N, generator=gen, dtype=DTYPE)).requires_grad_(True)
    u = torch.randn(N, generator=gen, dtype=DTYPE).requires_grad_(True)
    return A, B, c, delta, u


def _upper(u: torch.Tensor, c: torch.Tensor, **kwargs) -> Level:
    return Level("u", {"x": u}, torch.optim.SGD([u], lr=0.05),
                 lambda p, _: 0.5 * (p["delta"]["x"] - c).pow(2).sum()
                 + 0.5 * LAM * p["u"]["x"].pow(2).sum(), reads_lower=("delta",), **kwargs)


@pytest.mark.parametrize("method", ["exact", "finite_difference"])
def test_a_maximising_lower_level_ascends_and_passes_the_closed_form_hypergradient(
    method: str,
) -> None:
    A, B, c, delta, u = _tensors()
    lower = Level("delta", {"x": delta}, torch.optim.SGD([delta], lr=XI),
                  lambda p, _: -0.5 * p["delta"]["x"] @ A @ p["delta"]["x"]
                  + p["delta"]["x"] @ B @ p["u"]["x"], maximize=True)
    program = MultilevelProgram([lower, _upper(u, c)], method=method, order="bottom_up")
    with torch.no_grad():
        ascended = delta + XI * (B @ u - A @ delta)
        closed_form = LAM * u + XI * B.T @ (ascended - c)
    grads, _ = program.gradient("u", {})
    assert _rel_err(grads["x"], closed_form) < 1e-8

    with torch.no_grad():
        loss_before = float(lower.loss({"delta": {"x": delta}, "u": {"x": u}}, {}))
    losses = program.step({})  # bottom_up: delta takes its real (ascent) step first
    assert torch.allclose(delta.detach(), ascended, rtol=1e-12, atol=1e-14)
    assert float(losses["delta"]) == pytest.approx(loss_before)  # reported as declared
    with torch.no_grad():
        assert float(lower.loss({"delta": {"x": delta}, "u": {"x": u}}, {})) > loss_before


def test_a_maximising_upper_level_steps_up_its_hypergradient() -> None:
    A, B, c, delta, u = _tensors(1)
    lower = Level("delta", {"x": delta}, torch.optim.SGD([delta], lr=XI),
                  lambda p, _: 0.5 * p["delta"]["x"] @ A @ p["delta"]["x"]
                  - p["delta"]["x"] @ B @ p["u"]["x"])
    program = MultilevelProgram([lower, _upper(u, c, maximize=True)], method="exact",
                                order="top_down")
    with torch.no_grad():
        descended = delta - XI * (A @ delta - B @ u)
        ascent = LAM * u + XI * B.T @ (descended - c)  # dF/du, F as declared
        expected = u + 0.05 * ascent
    grads, _ = program.gradient("u", {})
    assert _rel_err(grads["x"], -ascent) < 1e-8  # what its optimizer descends: -F
    program.step({})  # top_down: u steps first, at the current delta
    assert torch.allclose(u.detach(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("method", ["exact", "finite_difference"])
def test_a_projected_lower_level_matches_the_clamped_closed_form(method: str,
                                                                 maximize: bool) -> None:
    _, B, c, delta, u = _tensors(2)
    eps = 0.5
    sign = -1.0 if maximize else 1.0  # ascending -f is descending f: the same step
    lower = Level("delta", {"x": delta}, torch.optim.SGD([delta], lr=XI),
                  lambda p, _: sign * 0.5 * (p["delta"]["x"] - B @ p["u"]["x"]).pow(2).sum(),
                  maximize=maximize, projection=linf_ball(eps))
    program = MultilevelProgram([lower, _upper(u, c)], method=method, order="bottom_up")
    with torch.no_grad():
        z = delta - XI * (delta - B @ u)
        inside = (z.abs() < eps).to(DTYPE)
        projected = z.clamp(-eps, eps)
        closed_form = LAM * u + XI * B.T @ (inside * (projected - c))
    assert 0 < inside.sum() < N  # some coordinates are cut by the ball, some are not
    grad = torch.autograd.grad(lower.objective(lower.loss({"delta": {"x": delta},
                                                           "u": {"x": u}}, {})), delta)[0]
    assert torch.allclose(virtual_step(lower, {"x": grad})["x"], projected, rtol=1e-12, atol=1e-14)
    grads, _ = program.gradient("u", {})
    assert _rel_err(grads["x"], closed_form) < 1e-8
    unclamped = LAM * u.detach() + XI * B.T @ (projected - c)
    assert _rel_err(grads["x"], unclamped) > 1e-2  # the projection's derivative matters

    program.step({})  # the real step lands on the same clamped point
    assert torch.allclose(delta.detach(), projected, rtol=1e-12, atol=1e-14)
    assert float(delta.detach().abs().max()) <= eps


def test_the_real_step_of_a_top_level_is_projected() -> None:
    A, B, c, delta, u = _tensors(3)
    lower = Level("delta", {"x": delta}, torch.optim.SGD([delta], lr=XI),
                  lambda p, _: 0.5 * p["delta"]["x"] @ A @ p["delta"]["x"]
                  - p["delta"]["x"] @ B @ p["u"]["x"])
    upper = _upper(u, c, projection=linf_ball(0.1))
    upper.optimizer = torch.optim.SGD([u], lr=1.0)
    program = MultilevelProgram([lower, upper], method="exact", order="top_down")
    grads, _ = program.gradient("u", {})
    with torch.no_grad():
        expected = (u - grads["x"]).clamp(-0.1, 0.1)
    program.step({})
    assert torch.equal(u.detach(), expected)
    assert float(expected.abs().max()) == pytest.approx(0.1)  # the ball was reached
