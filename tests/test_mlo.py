"""The engine against closed-form one-step-unrolled hypergradients on quadratic problems."""

from __future__ import annotations

import pytest
import torch

from skillearn.mlo import Level, MultilevelProgram
from skillearn.mlo.unroll import virtual_step

DTYPE = torch.float64


def _spd(n: int, gen: torch.Generator, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    m = torch.randn(n, n, generator=gen, dtype=dtype)
    return m @ m.T / n + torch.eye(n, dtype=dtype)


def _param(n: int, gen: torch.Generator, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    return torch.randn(n, generator=gen, dtype=dtype).requires_grad_(True)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _chain(depth: int, seed: int = 0, dtype: torch.dtype = DTYPE):
    """A chain of `depth` quadratic lower levels under an outer level theta.

    Level 1:  f1 = 1/2 w1'A1 w1 - w1'B1 theta
    Level k:  fk = 1/2 wk'Ak wk - wk'Bk w_{k-1}' - wk'Ck theta   (reads level k-1)
    Top:      F  = 1/2 ||w_depth' - c||^2 + 1/2 lam ||theta||^2  (reads level depth)
    """
    gen = torch.Generator().manual_seed(seed)
    n = 5
    theta = _param(n, gen, dtype)
    lrs = [0.1 + 0.05 * k for k in range(depth)]
    mats = [dict(A=_spd(n, gen, dtype), B=torch.randn(n, n, generator=gen, dtype=dtype),
                 C=torch.randn(n, n, generator=gen, dtype=dtype)) for _ in range(depth)]
    c = torch.randn(n, generator=gen, dtype=dtype)
    lam = 0.3
    weights = [_param(n, gen, dtype) for _ in range(depth)]
    levels = []
    for k in range(depth):
        name = f"w{k + 1}"

        def loss(p, _b, k=k, name=name):
            w = p[name]["x"]
            m = mats[k]
            upstream = p["theta"]["x"] if k == 0 else p[f"w{k}"]["x"]
            value = 0.5 * w @ m["A"] @ w - w @ m["B"] @ upstream
            if k > 0:
                value = value - w @ m["C"] @ p["theta"]["x"]
            return value

        levels.append(Level(
            name=name, params={"x": weights[k]},
            optimizer=torch.optim.SGD([weights[k]], lr=lrs[k]), loss=loss,
            reads_lower=(f"w{k}",) if k > 0 else (),
        ))

    def top_loss(p, _b):
        w = p[f"w{depth}"]["x"]
        t = p["theta"]["x"]
        return 0.5 * (w - c).pow(2).sum() + 0.5 * lam * t.pow(2).sum()

    levels.append(Level(name="theta", params={"x": theta},
                        optimizer=torch.optim.SGD([theta], lr=0.01), loss=top_loss,
                        reads_lower=(f"w{depth}",)))

    def closed_form() -> torch.Tensor:
        with torch.no_grad():
            t = theta
            upstream = t
            jac = None  # d w_k' / d theta
            for k in range(depth):
                m, w, xi = mats[k], weights[k], lrs[k]
                extra = m["C"] @ t if k > 0 else 0.0
                w_new = w - xi * (m["A"] @ w - m["B"] @ upstream - extra)
                if k == 0:
                    jac = xi * m["B"]
                else:
                    jac = xi * (m["B"] @ jac + m["C"])
                upstream = w_new
            return lam * t + jac.T @ (upstream - c)

    return levels, closed_form


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_exact_matches_closed_form(depth: int) -> None:
    levels, closed_form = _chain(depth)
    program = MultilevelProgram(levels, method="exact")
    grads, _ = program.gradient("theta", {})
    assert _rel_err(grads["x"], closed_form()) < 1e-6


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_finite_difference_matches_closed_form(depth: int) -> None:
    levels, closed_form = _chain(depth)
    program = MultilevelProgram(levels, method="finite_difference")
    grads, _ = program.gradient("theta", {})
    assert _rel_err(grads["x"], closed_form()) < 1e-3


def test_first_order_is_the_direct_gradient() -> None:
    levels, closed_form = _chain(1)
    program = MultilevelProgram(levels, method="first_order")
    grads, _ = program.gradient("theta", {})
    theta = levels[-1].params["x"]
    assert torch.allclose(grads["x"], 0.3 * theta.detach())
    assert _rel_err(grads["x"], closed_form()) > 1e-2  # the dropped term is not negligible here


@pytest.mark.parametrize(("method", "asked"), [("first_order", False), ("exact", True)])
def test_first_order_asks_no_gradient_of_the_levels_it_reads(method: str, asked: bool) -> None:
    """First order drops the lower level's cotangent, so the upper backward skips it (DARTS'
    first-order step: the architecture's backward only, not the weights' as well)."""
    levels, _ = _chain(1)
    seen = []
    original = levels[-1].loss
    levels[-1].loss = lambda p, b: seen.append(p["w1"]["x"].requires_grad) or original(p, b)
    MultilevelProgram(levels, method=method).gradient("theta", {})
    assert seen == [asked]


@pytest.mark.parametrize("method", ["finite_difference", "exact"])
def test_parameters_restored_bit_exactly(method: str) -> None:
    levels, _ = _chain(3)
    program = MultilevelProgram(levels, method=method)
    before = {lv.name: lv.params["x"].detach().clone() for lv in levels}
    program.gradient("theta", {})
    for lv in levels:
        assert torch.equal(lv.params["x"], before[lv.name]), lv.name


def test_float32_finite_difference_close_to_exact() -> None:
    levels, _ = _chain(2, seed=3, dtype=torch.float32)
    program = MultilevelProgram(levels, method="finite_difference")
    gap = program.hypergradient_gap("theta", {})
    assert float(gap) < 1e-3


def test_step_updates_each_level_and_honours_frequency() -> None:
    levels, _ = _chain(2)
    levels[1].every = 3
    program = MultilevelProgram(levels, method="exact", order="bottom_up")
    stepped = [sorted(program.step({})) for _ in range(4)]
    assert stepped[0] == ["theta", "w1", "w2"]
    assert stepped[1] == ["theta", "w1"]
    assert stepped[3] == ["theta", "w1", "w2"]


def test_step_moves_theta_along_the_hypergradient() -> None:
    levels, closed_form = _chain(1)
    program = MultilevelProgram(levels, method="exact", order="top_down")
    theta = levels[-1].params["x"]
    expected = theta.detach() - 0.01 * closed_form()
    program.step({})  # top_down: theta is stepped first, at the current w
    assert torch.allclose(theta.detach(), expected, rtol=1e-10, atol=1e-12)


def test_virtual_step_lands_where_sgd_with_momentum_lands() -> None:
    gen = torch.Generator().manual_seed(1)
    w = _param(4, gen)
    opt = torch.optim.SGD([w], lr=0.05, momentum=0.9, weight_decay=3e-4)
    level = Level("w", {"x": w}, opt, loss=lambda p, b: p["w"]["x"].pow(3).sum())
    for _ in range(2):  # build a momentum buffer
        opt.zero_grad()
        w.pow(3).sum().backward()
        opt.step()
    grad = torch.autograd.grad(w.pow(3).sum(), w)[0]
    predicted = virtual_step(level, {"x": grad})["x"]
    opt.zero_grad()
    w.pow(3).sum().backward()
    opt.step()
    assert torch.allclose(predicted, w.detach(), rtol=1e-12, atol=1e-14)


def test_levels_must_be_listed_lowest_first() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = _param(2, gen), _param(2, gen)
    upper = Level("upper", {"x": a}, torch.optim.SGD([a], lr=0.1),
                  loss=lambda p, _: p["upper"]["x"].sum(), reads_lower=("lower",))
    lower = Level("lower", {"x": b}, torch.optim.SGD([b], lr=0.1),
                  loss=lambda p, _: p["lower"]["x"].sum())
    with pytest.raises(ValueError, match="not a lower level"):
        MultilevelProgram([upper, lower])
    with pytest.raises(ValueError, match="unknown hypergradient method"):
        MultilevelProgram([lower, upper], method="newton")


def test_reads_upper_prunes_work_without_changing_results() -> None:
    levels, closed_form = _chain(2)
    program = MultilevelProgram(levels, method="finite_difference")
    unpruned, _ = program.gradient("w2", {})
    levels[0].reads_upper = ("theta",)  # w1's loss does not read w2
    pruned_program = MultilevelProgram(levels, method="finite_difference")
    calls = []
    original = levels[0].loss
    levels[0].loss = lambda p, b: calls.append(1) or original(p, b)
    pruned, _ = pruned_program.gradient("w2", {})
    assert len(calls) == 1  # the unroll of w1 only: no finite-difference passes through it
    assert _rel_err(pruned["x"], unpruned["x"]) < 1e-8
    theta_grad, _ = pruned_program.gradient("theta", {})
    assert _rel_err(theta_grad["x"], closed_form()) < 1e-3


def test_reuse_unroll_grad_skips_the_lower_pass_and_uses_the_old_gradient() -> None:
    levels, _ = _chain(1)
    w, theta = levels[0].params["x"], levels[1].params["x"]
    calls = []
    original = levels[0].loss
    levels[0].loss = lambda p, b: calls.append(1) or original(p, b)
    program = MultilevelProgram(levels, method="exact", order="top_down", reuse_unroll_grad=True)
    grad_at_old_theta = torch.autograd.grad(original({"w1": {"x": w}, "theta": {"x": theta}}, {}),
                                            w)[0]
    w_before = w.detach().clone()
    program.step({})
    # one unroll + one exact mixed product; the w step itself costs no extra pass
    assert len(calls) == 2
    assert torch.allclose(w.detach(), w_before - levels[0].xi * grad_at_old_theta)
