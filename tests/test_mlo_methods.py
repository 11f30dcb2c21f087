"""One registry of hypergradient methods: the engine, validation, the CLI and the skills read it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import torch

from skillearn.errors import SkillearnError
from skillearn.knobs import ConfigError
from skillearn.mlo import (
    HYPERGRADIENT_METHODS,
    METHODS,
    SECOND_ORDER_METHODS,
    Level,
    MethodName,
    MultilevelProgram,
)
from skillearn.platform.cli import build_parser
from skillearn.platform.validate import SweepRequest, validate_sweep
from skillearn.trainables.common import COMMON_KNOBS
from skillearn.trainables.registry import get_skill, resolve_config
from skillearn.trainables.setup import program_for

ROOT = Path(__file__).resolve().parents[1]
DTYPE = torch.float64


def _two_level_chain():
    """w1 <- w2 <- theta, quadratic: f1 = 1/2 |w1|^2 - w1'B theta, f2 = 1/2 |w2|^2 - w2'C w1',
    F = 1/2 |w2' - c|^2. Returns the levels and the closed-form dF/dtheta."""
    gen = torch.Generator().manual_seed(0)
    B, C = (torch.randn(4, 4, generator=gen, dtype=DTYPE) for _ in range(2))
    c = torch.randn(4, generator=gen, dtype=DTYPE)
    w1, w2, theta = (torch.randn(4, generator=gen, dtype=DTYPE).requires_grad_(True)
                     for _ in range(3))
    xi1, xi2 = 0.1, 0.2
    levels = [
        Level("w1", {"x": w1}, torch.optim.SGD([w1], lr=xi1),
              lambda p, _: 0.5 * p["w1"]["x"].pow(2).sum() - p["w1"]["x"] @ B @ p["theta"]["x"]),
        Level("w2", {"x": w2}, torch.optim.SGD([w2], lr=xi2),
              lambda p, _: 0.5 * p["w2"]["x"].pow(2).sum() - p["w2"]["x"] @ C @ p["w1"]["x"],
              reads_lower=("w1",)),
        Level("theta", {"x": theta}, torch.optim.SGD([theta], lr=0.01),
              lambda p, _: 0.5 * (p["w2"]["x"] - c).pow(2).sum(), reads_lower=("w2",)),
    ]
    with torch.no_grad():
        w1_new = w1 - xi1 * (w1 - B @ theta)
        w2_new = w2 - xi2 * (w2 - C @ w1_new)
        closed_form = (xi2 * C @ (xi1 * B)).T @ (w2_new - c)
    return levels, closed_form


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def forward_difference(loss_at, w, inputs, v, radius):
    """A new method in one function: (grad_u f(w + eps v, u) - grad_u f(w, u)) / eps."""
    eps = radius / float(torch.linalg.vector_norm(torch.cat([x.flatten() for x in v])))

    def grad_u(w_values):
        with torch.enable_grad():
            grads = torch.autograd.grad(loss_at(w_values), inputs, allow_unused=True)
        return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]

    moved = grad_u([a + eps * b for a, b in zip(w, v, strict=True)])
    here = grad_u([a.detach() for a in w])
    return [(m - h) / eps for m, h in zip(moved, here, strict=True)]


@pytest.fixture
def registered(monkeypatch) -> str:
    """forward_difference registered with its one entry, for this test only."""
    monkeypatch.setitem(HYPERGRADIENT_METHODS, "forward_difference", forward_difference)
    return "forward_difference"


def _validate(skill: str, overrides: dict, tmp_path: Path):
    return validate_sweep(SweepRequest(skill, overrides, samples=1,
                                       storage=str(tmp_path / "runs"),
                                       tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))


def test_the_literal_names_exactly_the_built_in_methods() -> None:
    assert tuple(HYPERGRADIENT_METHODS) == get_args(MethodName) == tuple(METHODS)
    assert tuple(SECOND_ORDER_METHODS) == ("finite_difference", "exact", "neumann",
                                           "conjugate_gradient")


def test_knob_skills_and_cli_help_read_the_registry(registered: str) -> None:
    assert registered in COMMON_KNOBS["method"].choices
    assert registered in get_skill("darts").methods  # every method
    assert registered in get_skill("mwnet").methods  # second-order methods
    assert "first_order" not in get_skill("mwnet").methods
    sweep = next(a for a in build_parser()._actions if a.dest == "command").choices["sweep"]
    method = next(a for a in sweep._actions if a.dest == "method")
    shown = sweep.format_help()  # `--method {first_order,...}`: the flag's choices
    assert all(name in method.choices and name in shown
               for name in (*get_args(MethodName), registered))


def test_a_sweep_accepts_a_method_registered_in_one_place(registered: str,
                                                          tmp_path: Path) -> None:
    for skill in ("darts", "mwnet", "lfm_dr"):
        spec = _validate(skill, {"method": registered}, tmp_path)
        assert spec.config["method"] == registered


def test_a_sweep_refuses_an_unregistered_method(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="forward_difference.* is not one of"):
        _validate("darts", {"method": "forward_difference"}, tmp_path)
    with pytest.raises(ConfigError, match="does not support method 'first_order'"):
        _validate("lfm_dr", {"method": "first_order"}, tmp_path)


def test_the_engine_runs_a_registered_method(registered: str, monkeypatch) -> None:
    calls = []
    monkeypatch.setitem(HYPERGRADIENT_METHODS, registered,
                        lambda *args: calls.append(1) or forward_difference(*args))
    levels, closed_form = _two_level_chain()
    grads, _ = MultilevelProgram(levels, method=registered).gradient("theta", {})
    assert len(calls) == 2  # one product per unrolled level
    assert _rel_err(grads["x"], closed_form) < 1e-6  # exact on quadratics: grad_w f is linear


def test_unknown_method_is_refused_with_the_registered_names() -> None:
    levels, _ = _two_level_chain()
    program = MultilevelProgram(levels)
    with pytest.raises(ValueError, match="unknown hypergradient method 'newton'.*'exact'"):
        program.gradient("theta", {}, method="newton")


def test_reading_method_names_does_not_import_torch() -> None:
    code = ("import sys, skillearn.mlo, skillearn.platform.cli; "
            "print(list(skillearn.mlo.METHODS), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.split() == ["['first_order',", "'finite_difference',", "'exact',", "'neumann',",
                           "'conjugate_gradient']", "False"]


def test_implicit_settings_and_per_level_methods_reach_the_engine(tmp_path: Path) -> None:
    spec = _validate("lfm_dr", {"method": "neumann", "neumann_iterations": 3,
                                "level_methods": "w1=conjugate_gradient, w2=exact",
                                "cg_tolerance": 1e-4}, tmp_path)
    config = spec.config
    levels, _ = _two_level_chain()
    program = program_for(levels, {**resolve_config(get_skill("lfm_dr"), config),
                                   "level_methods": "w1=conjugate_gradient"})
    assert program.method_of("w1") == "conjugate_gradient"
    assert program.method_of("w2") == "neumann"
    assert program.method_options["neumann"] == {"iterations": 3, "alpha": 0.0, "damping": 0.0}
    assert program.method_options["conjugate_gradient"] == {"iterations": 10, "tolerance": 1e-4,
                                                            "damping": 0.0}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"neumann_iterations": -1}, "neumann_iterations=-1 is below its minimum"),
    ({"cg_iterations": 0}, "cg_iterations=0 is below its minimum"),
    ({"cg_tolerance": 2.0}, "cg_tolerance=2.0 is above its maximum"),
    ({"implicit_damping": -0.1}, "implicit_damping=-0.1 is below its minimum"),
    ({"neumann_alpha": "big"}, "neumann_alpha must be a number"),
    ({"level_methods": "w1"}, "level_methods entry 'w1' is not level=method"),
    ({"level_methods": "w9=exact"}, "'w9' is not a lower level of skill 'lfm_dr'"),
    ({"level_methods": "upper=exact"}, "'upper' is not a lower level"),
    ({"level_methods": "w1=first_order"}, "does not support method 'first_order' for 'w1'"),
    ({"level_methods": "w1=exact,w1=neumann"}, "names level 'w1' twice"),
])
def test_bad_implicit_settings_are_refused_in_one_line(overrides: dict, message: str,
                                                       tmp_path: Path) -> None:
    with pytest.raises(SkillearnError, match=message) as raised:  # the CLI's one-line errors
        _validate("lfm_dr", overrides, tmp_path)
    assert "\n" not in str(raised.value)
