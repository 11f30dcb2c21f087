"""The unrolled step is the real optimizer step, and the hypergradient goes through it exactly.

Oracles: torch.optim itself. The unrolled weights must equal what `optimizer.step()` produces;
the hypergradient must equal brute-force autograd through torch's own step run with
`differentiable=True` (its documented mode for differentiating through an update) from the same
state. Every supported optimizer is checked: SGD (plain, momentum with dampening, Nesterov,
weight decay, several param groups) and Adam/AdamW, each on its first step (no state yet) and
after a few steps.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from skillearn.errors import SkillearnError
from skillearn.mlo import Level, MultilevelProgram, UnrollError
from skillearn.mlo.unroll import virtual_step

DTYPE = torch.float64
Factory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]

OPTIMIZERS: dict[str, Factory] = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_momentum_dampening_wd": lambda p: torch.optim.SGD(
        p, lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01),
    "sgd_nesterov_wd": lambda p: torch.optim.SGD(
        p, lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.01),
    "sgd_groups": lambda p: torch.optim.SGD([
        {"params": [p[0]], "lr": 0.1, "momentum": 0.9, "nesterov": True},
        {"params": [p[1]], "lr": 0.05, "momentum": 0.5, "dampening": 0.2, "weight_decay": 0.1},
    ]),
    "adam_l2": lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.95), weight_decay=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "adam_groups": lambda p: torch.optim.Adam([
        {"params": [p[0]], "lr": 0.02},
        {"params": [p[1]], "lr": 0.005, "betas": (0.5, 0.999), "weight_decay": 1e-3},
    ]),
}


class Problem:
    """Lower level w = (a, b) on a non-quadratic loss of (w, u); upper level u reads w'.

    f(a, b, u) = sum softplus(A a + P u) + 1/2 (1 + (q.u)^2) |b|^2 + b.(R u)   (lower)
    F(a', b', u) = 1/2 |a' - ca|^2 + 1/2 |b' - cb|^2 + 0.05 |u|^2              (upper)
    Adam's step is not linear in g, so a mistake in its derivative shows.
    """

    def __init__(self, factory: Factory, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=DTYPE)

        self.A, self.P, self.R = randn(3, 3), randn(3, 3), randn(4, 3)
        self.q, self.ca, self.cb = randn(3), randn(3), randn(2, 2)
        self.a, self.b = randn(3).requires_grad_(True), randn(2, 2).requires_grad_(True)
        self.u = randn(3).requires_grad_(True)
        self.optimizer = factory([self.a, self.b])
        self.oracle_state: dict[int, dict] = {}
        self.lower = Level("w", {"a": self.a, "b": self.b}, self.optimizer,
                           lambda p, _: self.f(p["w"]["a"], p["w"]["b"], p["u"]["x"]))
        self.upper = Level("u", {"x": self.u}, torch.optim.SGD([self.u], lr=0.01),
                           lambda p, _: self.F(p["w"]["a"], p["w"]["b"], p["u"]["x"]),
                           reads_lower=("w",))

    def f(self, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return (F.softplus(self.A @ a + self.P @ u).sum()
                + 0.5 * (1 + (self.q @ u) ** 2) * b.pow(2).sum() + b.flatten() @ (self.R @ u))

    def F(self, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return (0.5 * (a - self.ca).pow(2).sum() + 0.5 * (b - self.cb).pow(2).sum()
                + 0.05 * u.pow(2).sum())

    def lower_grads(self) -> dict[str, torch.Tensor]:
        ga, gb = torch.autograd.grad(self.f(self.a, self.b, self.u), [self.a, self.b])
        return {"a": ga, "b": gb}

    def real_lower_step(self) -> None:
        grads = self.lower_grads()
        self.a.grad, self.b.grad = grads["a"], grads["b"]
        self.optimizer.step()
        self.optimizer.zero_grad()

    def brute_force_hypergradient(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """dF(w'(u), u)/du with w' from torch's own step, differentiable=True, same state; and w'.

        Two of torch's choices are undone so that the oracle differentiates the real step:
        its differentiable path keeps Adam's step count in float32 (made float64 here, the
        state created as torch's `_init_group` would), and it
        detaches a new momentum buffer (`grad.detach().clone()` in sgd.py), so a first step is
        given a zero buffer and no dampening instead, which is the same update, b = d.
        """
        u = self.u.detach().clone().requires_grad_(True)
        leaves = [self.a.detach().clone().requires_grad_(True),
                  self.b.detach().clone().requires_grad_(True)]
        grads = torch.autograd.grad(self.f(*leaves, u), leaves, create_graph=True)
        moved = [leaf.clone() for leaf in leaves]  # non-leaf copies the step updates in place
        for tensor, grad in zip(moved, grads, strict=True):
            tensor.grad = grad
        originals = [self.a, self.b]
        index = {id(p): i for i, p in enumerate(originals)}
        plumbing = ("params", "differentiable", "foreach", "fused")
        groups = []
        for group in self.optimizer.param_groups:
            groups.append({k: v for k, v in group.items() if k not in plumbing})
            groups[-1]["params"] = [moved[index[id(p)]] for p in group["params"]]
            for p in group["params"]:
                state = {k: v.clone() if torch.is_tensor(v) else v
                         for k, v in self.optimizer.state.get(p, {}).items()}
                if isinstance(self.optimizer, torch.optim.Adam) and not state:  # torch's init
                    state = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                             "exp_avg_sq": torch.zeros_like(p)}
                if "step" in state:
                    state["step"] = state["step"].to(DTYPE)
                if group.get("momentum") and state.get("momentum_buffer") is None:
                    state["momentum_buffer"] = torch.zeros_like(p)
                    groups[-1]["dampening"] = 0.0
                self.oracle_state[id(p)] = state
        oracle = type(self.optimizer)(groups, differentiable=True, foreach=False)
        for original, tensor in zip(originals, moved, strict=True):
            oracle.state[tensor] = self.oracle_state[id(original)]
        oracle.step()
        return torch.autograd.grad(self.F(*moved, u), u)[0], [t.detach() for t in moved]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("warmup", [0, 3])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_unrolled_weights_are_the_real_step(name: str, warmup: int) -> None:
    problem = Problem(OPTIMIZERS[name])
    for _ in range(warmup):
        problem.real_lower_step()
    grads = problem.lower_grads()
    predicted = virtual_step(problem.lower, grads)
    problem.a.grad, problem.b.grad = grads["a"], grads["b"]
    problem.optimizer.step()
    for key, param in (("a", problem.a), ("b", problem.b)):
        assert torch.allclose(predicted[key], param.detach(), rtol=1e-12, atol=1e-14), key


@pytest.mark.parametrize("warmup", [0, 3])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_hypergradient_is_autograd_through_the_real_step(name: str, warmup: int) -> None:
    problem = Problem(OPTIMIZERS[name])
    for _ in range(warmup):
        problem.real_lower_step()
    expected, oracle_weights = problem.brute_force_hypergradient()
    program = MultilevelProgram([problem.lower, problem.upper], method="exact")
    exact, _ = program.gradient("u", {})
    assert _rel_err(exact["x"], expected) < 1e-9
    difference, _ = program.gradient("u", {}, method="finite_difference")
    assert _rel_err(difference["x"], expected) < 1e-3
    if not (warmup == 0 and "adam" in name):  # Adam's first step is ~lr sign(g): flat in g
        direct = torch.autograd.grad(problem.F(problem.a, problem.b, problem.u), problem.u)[0]
        assert _rel_err(direct, expected) > 1e-2  # the unrolled part matters here
    problem.real_lower_step()  # the oracle differentiated the real step
    for oracle, param in zip(oracle_weights, (problem.a, problem.b), strict=True):
        assert torch.allclose(oracle, param.detach(), rtol=1e-12, atol=1e-14)


def test_unsupported_optimizers_are_refused_when_the_program_is_built() -> None:
    problem = Problem(lambda p: torch.optim.RMSprop(p, lr=0.01))
    with pytest.raises(UnrollError) as caught:
        MultilevelProgram([problem.lower, problem.upper])
    message = str(caught.value)
    assert isinstance(caught.value, SkillearnError) and "\n" not in message
    assert "level 'w'" in message and "RMSprop" in message and "SGD, Adam, AdamW" in message
    # a level nothing reads is never unrolled: any optimizer will do
    problem = Problem(OPTIMIZERS["sgd"])
    problem.upper.optimizer = torch.optim.RMSprop([problem.u], lr=0.01)
    MultilevelProgram([problem.lower, problem.upper]).step({})


@pytest.mark.parametrize(("factory", "match"), [
    (lambda p: torch.optim.Adam(p, amsgrad=True), "amsgrad=True"),
    (lambda p: torch.optim.SGD(p, lr=0.1, maximize=True), r"declare Level\(maximize=True\)"),
    (lambda p: torch.optim.SGD(p[:1], lr=0.1), "parameter.* b are not in its optimizer"),
])
def test_steps_the_unroll_cannot_mirror_are_refused(factory: Factory, match: str) -> None:
    problem = Problem(factory)
    with pytest.raises(UnrollError, match=match):
        MultilevelProgram([problem.lower, problem.upper])
