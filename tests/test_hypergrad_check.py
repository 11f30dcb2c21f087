"""The per-epoch hypergradient check: every upper level, the chosen method against exact."""

from __future__ import annotations

import pytest
import torch

from skillearn.mlo import Level, MultilevelProgram
from skillearn.trainables.hypergrad_check import hypergrad_check

DTYPE = torch.float64
N = 4


def _three_levels(method: str, **kwargs) -> MultilevelProgram:
    """w1 <- w2 <- theta on quadratics; w2's loss also reads theta, so both w2 and theta have
    a hypergradient part (w2's through w1, whose loss reads w2)."""
    gen = torch.Generator().manual_seed(0)
    B, C, D = (torch.randn(N, N, generator=gen, dtype=DTYPE) for _ in range(3))
    c = torch.randn(N, generator=gen, dtype=DTYPE)
    w1, w2, theta = (torch.randn(N, generator=gen, dtype=DTYPE).requires_grad_(True)
                     for _ in range(3))
    return MultilevelProgram([
        Level("w1", {"x": w1}, torch.optim.SGD([w1], lr=0.1),
              lambda p, b: b.get("scale", 1.0) * (0.5 * p["w1"]["x"].pow(2).sum()
              - p["w1"]["x"] @ (B @ p["theta"]["x"] + D @ p["w2"]["x"]))),
        Level("w2", {"x": w2}, torch.optim.SGD([w2], lr=0.2),
              lambda p, _: 0.5 * p["w2"]["x"].pow(2).sum() - p["w2"]["x"] @ C @ p["w1"]["x"],
              reads_lower=("w1",)),
        Level("theta", {"x": theta}, torch.optim.SGD([theta], lr=0.01),
              lambda p, _: 0.5 * (p["w2"]["x"] - c).pow(2).sum(), reads_lower=("w2",)),
    ], method=method, **kwargs)


def _check(program: MultilevelProgram, every: int = 1, epoch: int = 0, **config) -> dict:
    drawn = []
    metrics = hypergrad_check(program, {"hypergrad_check_every": every, **config}, epoch,
                              lambda: drawn.append(1) or {})
    assert len(drawn) == (1 if metrics else 0)  # one batch when due, none otherwise
    return metrics


def test_every_upper_level_is_checked_against_exact() -> None:
    metrics = _check(_three_levels("finite_difference"))
    assert set(metrics) == {"hypergrad_cos/w2", "hypergrad_relerr/w2",
                            "hypergrad_cos/theta", "hypergrad_relerr/theta"}
    for level in ("w2", "theta"):  # quadratics: the central difference is exact up to rounding
        assert metrics[f"hypergrad_cos/{level}"] == pytest.approx(1.0, abs=1e-9)
        assert metrics[f"hypergrad_relerr/{level}"] < 1e-6


def test_the_check_measures_what_the_chosen_method_drops() -> None:
    program = _three_levels("first_order")
    metrics = _check(program)
    exact, _ = program.gradient("theta", {}, method="exact")
    direct, _ = program.gradient("theta", {}, method="first_order")
    assert float(direct["x"].abs().max()) == 0.0  # theta reaches its loss only through w2'
    assert metrics["hypergrad_relerr/theta"] == pytest.approx(1.0)
    assert metrics["hypergrad_cos/theta"] == 0.0
    truncated = _check(_three_levels("neumann", method_options={"neumann": {"iterations": 3}}))
    assert 1e-3 < truncated["hypergrad_relerr/theta"] and truncated["hypergrad_cos/theta"] < 1
    assert float(exact["x"].norm()) > 0


def test_exact_is_its_own_reference_and_costs_nothing() -> None:
    program = _three_levels("exact")
    calls = []
    for level in program.levels.values():
        original = level.loss
        level.loss = lambda p, b, original=original: calls.append(1) or original(p, b)
    metrics = _check(program)
    assert metrics["hypergrad_cos/theta"] == 1.0 and metrics["hypergrad_relerr/theta"] == 0.0
    assert calls == []


def test_cadence_and_the_old_knob() -> None:
    program = _three_levels("finite_difference")
    assert _check(program, every=0) == {}
    assert _check(program, every=2, epoch=0) == {}
    assert "hypergrad_cos/theta" in _check(program, every=2, epoch=1)
    assert _check(program, every=1, fd_gap_every=0) == {}  # old configs that turned it off
    assert "hypergrad_cos/theta" in _check(program, every=0, fd_gap_every=1)
    assert _check(program, every=1, fd_gap_every=-1) != {}  # -1: follow the new knob


def test_hypergradient_gap_is_the_check_against_finite_difference() -> None:
    program = _three_levels("first_order")
    gap = program.hypergradient_gap("theta", {})
    _, relerr = program.hypergradient_agreement("theta", {}, method="finite_difference")
    assert float(gap) == float(relerr) < 1e-6


def test_the_check_does_not_leak_into_the_next_step() -> None:
    """A check between steps must not leave a gradient for `reuse_unroll_grad` to reuse."""
    program = _three_levels("exact", reuse_unroll_grad=True, order="bottom_up")
    twin = _three_levels("exact", reuse_unroll_grad=True, order="bottom_up")
    program.gradient("theta", {"scale": 3.0})  # what a check does, on another batch
    program.step({})
    twin.step({})
    for name in program.levels:
        assert torch.equal(program.levels[name].params["x"], twin.levels[name].params["x"])
