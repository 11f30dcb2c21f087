"""Implicit hypergradients (Neumann, conjugate gradient) against closed forms on quadratic chains.

Every lower level is put at its exact stationary point, where implicit differentiation is exact:

Level 1:  f1 = 1/2 w1'A1 w1 - w1'B1 theta                 w1* = A1^{-1} B1 theta
Level k:  fk = 1/2 wk'Ak wk - wk'Bk w_{k-1} - wk'Ck theta   wk* = Ak^{-1} (Bk w*_{k-1} + Ck theta)
Top:      F  = 1/2 ||w_d - c||^2 + 1/2 lam ||theta||^2

so J_1 = A1^{-1} B1, J_k = Ak^{-1} (Bk J_{k-1} + Ck) and dF/dtheta = lam theta + J_d'(w*_d - c):
a 2-, 3- and 4-level program for d = 1, 2, 3.
"""

from __future__ import annotations

import pytest
import torch

from skillearn.mlo import Level, MultilevelProgram

DTYPE = torch.float64
N, LAM = 5, 0.3


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _solved_chain(depth: int, seed: int = 0, **level_kwargs):
    """Levels w1..w_depth (at their stationary points) under theta, and dF/dtheta there."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=DTYPE)

    theta = randn(N).requires_grad_(True)
    c = randn(N)
    mats = []
    for _ in range(depth):
        m = randn(N, N)
        mats.append({"A": m @ m.T / N + torch.eye(N, dtype=DTYPE), "B": randn(N, N),
                     "C": randn(N, N)})
    weights, jac, upstream = [], None, None
    with torch.no_grad():
        for k, m in enumerate(mats):
            if k == 0:
                rhs, jac_rhs = m["B"] @ theta, m["B"]
            else:
                rhs, jac_rhs = m["B"] @ upstream + m["C"] @ theta, m["B"] @ jac + m["C"]
            upstream = torch.linalg.solve(m["A"], rhs)
            jac = torch.linalg.solve(m["A"], jac_rhs)
            weights.append(upstream.clone().requires_grad_(True))
        closed_form = LAM * theta + jac.T @ (upstream - c)

    levels = []
    for k, m in enumerate(mats):
        name = f"w{k + 1}"

        def loss(p, _b, k=k, m=m, name=name):
            w = p[name]["x"]
            upstream = p["theta"]["x"] if k == 0 else p[f"w{k}"]["x"]
            value = 0.5 * w @ m["A"] @ w - w @ m["B"] @ upstream
            return value if k == 0 else value - w @ m["C"] @ p["theta"]["x"]

        levels.append(Level(name, {"x": weights[k]},
                            torch.optim.SGD([weights[k]], lr=0.1 + 0.05 * k), loss,
                            reads_lower=(f"w{k}",) if k else (), **level_kwargs))
    levels.append(Level(
        "theta", {"x": theta}, torch.optim.SGD([theta], lr=0.01),
        lambda p, _b: 0.5 * (p[f"w{depth}"]["x"] - c).pow(2).sum()
        + 0.5 * LAM * p["theta"]["x"].pow(2).sum(),
        reads_lower=(f"w{depth}",)))
    return levels, closed_form, mats


def _hypergradient(levels, method: str, **options) -> torch.Tensor:
    program = MultilevelProgram(levels, method=method, method_options={method: options})
    return program.gradient(levels[-1].name, {})[0]["x"]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_conjugate_gradient_is_exact_at_the_stationary_point(depth: int) -> None:
    levels, closed_form, _ = _solved_chain(depth)
    grad = _hypergradient(levels, "conjugate_gradient", iterations=2 * N, tolerance=1e-12)
    assert _rel_err(grad, closed_form) < 1e-9


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_neumann_converges_to_the_closed_form_with_iterations(depth: int) -> None:
    levels, closed_form, _ = _solved_chain(depth)
    errors = [_rel_err(_hypergradient(levels, "neumann", iterations=k), closed_form)
              for k in (2, 10, 50, 300)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] > 1e-2  # a few terms are far from H^{-1}: the knob matters
    assert errors[-1] < 1e-8


@pytest.mark.parametrize("method", ["conjugate_gradient", "neumann"])
def test_damping_inverts_the_shifted_hessian(method: str) -> None:
    """With damping d the response is (A + d I)^{-1} B: the closed form with A shifted."""
    levels, _, mats = _solved_chain(1)
    theta, w1 = levels[-1].params["x"].detach(), levels[0].params["x"].detach()
    c_minus_w = torch.autograd.functional.jacobian(
        lambda x: levels[-1].loss({"w1": {"x": x}, "theta": {"x": theta}}, {}), w1)
    shifted = mats[0]["A"] + 0.5 * torch.eye(N, dtype=DTYPE)
    closed_form = LAM * theta + torch.linalg.solve(shifted, mats[0]["B"]).T @ c_minus_w
    grad = _hypergradient(levels, method, iterations=300, damping=0.5)
    assert _rel_err(grad, closed_form) < 1e-9
    undamped = _hypergradient(levels, method, iterations=300)
    assert _rel_err(undamped, closed_form) > 1e-2


def test_neumann_alpha_sets_the_series_step() -> None:
    levels, closed_form, mats = _solved_chain(1)
    largest = float(torch.linalg.eigvalsh(mats[0]["A"]).max())
    default = _rel_err(_hypergradient(levels, "neumann", iterations=30), closed_form)
    tuned = _rel_err(_hypergradient(levels, "neumann", iterations=30, alpha=1.0 / largest),
                     closed_form)
    assert tuned < default / 10  # the level's lr (0.1) is a smaller step than 1/lambda_max
    diverged = _hypergradient(levels, "neumann", iterations=30, alpha=3.0 / largest)
    assert _rel_err(diverged, closed_form) > 1.0  # alpha > 2/lambda_max: the series diverges


def test_neumann_without_iterations_is_the_one_step_direction() -> None:
    levels, _, _ = _solved_chain(1)
    # at a stationary point the unrolled step does not move w, so DARTS' exact one-step
    # hypergradient is the Neumann series' first term with alpha = the level's lr
    neumann = _hypergradient(levels, "neumann", iterations=0)
    assert _rel_err(neumann, _hypergradient(levels, "exact")) < 1e-12


def test_levels_choose_their_own_method() -> None:
    """w1 implicit (CG), w2 unrolled one step (exact): dw2'/dtheta = xi2 (B2 J1 + C2)."""
    levels, _, mats = _solved_chain(2)
    levels[0].method = "conjugate_gradient"
    w1, w2, theta = (level.params["x"] for level in levels)
    m1, m2 = mats
    with torch.no_grad():
        w2.copy_(torch.randn(N, dtype=DTYPE, generator=torch.Generator().manual_seed(5)))
        xi2 = levels[1].xi
        w2_new = w2 - xi2 * (m2["A"] @ w2 - m2["B"] @ w1 - m2["C"] @ theta)
        jac = xi2 * (m2["B"] @ torch.linalg.solve(m1["A"], m1["B"]) + m2["C"])
    w2_leaf = w2_new.clone().requires_grad_(True)
    top = levels[-1].loss({"w2": {"x": w2_leaf}, "theta": {"x": theta.detach()}}, {})
    closed_form = LAM * theta.detach() + jac.T @ torch.autograd.grad(top, w2_leaf)[0]
    program = MultilevelProgram(levels, method="exact",
                                method_options={"conjugate_gradient": {"tolerance": 1e-12}})
    assert program.method_of("w1") == "conjugate_gradient"
    assert _rel_err(program.gradient("theta", {})[0]["x"], closed_form) < 1e-9
    everywhere_exact = program.gradient("theta", {}, method="exact")[0]["x"]
    assert _rel_err(everywhere_exact, closed_form) > 1e-3  # w1's choice changed the answer


def test_a_maximising_level_is_differentiated_at_its_maximum() -> None:
    gen = torch.Generator().manual_seed(2)
    m = torch.randn(N, N, generator=gen, dtype=DTYPE)
    A, B = m @ m.T / N + torch.eye(N, dtype=DTYPE), torch.randn(N, N, generator=gen, dtype=DTYPE)
    u = torch.randn(N, generator=gen, dtype=DTYPE).requires_grad_(True)
    c = torch.randn(N, generator=gen, dtype=DTYPE)
    with torch.no_grad():
        delta = torch.linalg.solve(A, B @ u).requires_grad_(True)  # argmax of the concave g
        closed_form = LAM * u + torch.linalg.solve(A, B).T @ (delta - c)
    lower = Level("delta", {"x": delta}, torch.optim.SGD([delta], lr=0.2),
                  lambda p, _: -0.5 * p["delta"]["x"] @ A @ p["delta"]["x"]
                  + p["delta"]["x"] @ B @ p["u"]["x"], maximize=True)
    upper = Level("u", {"x": u}, torch.optim.SGD([u], lr=0.05),
                  lambda p, _: 0.5 * (p["delta"]["x"] - c).pow(2).sum()
                  + 0.5 * LAM * p["u"]["x"].pow(2).sum(), reads_lower=("delta",))
    for method in ("conjugate_gradient", "neumann"):
        grad = _hypergradient([lower, upper], method, iterations=400)
        assert _rel_err(grad, closed_form) < 1e-8, method


def test_conjugate_gradient_falls_back_to_a_step_on_negative_curvature() -> None:
    """A lower loss curving down (H = -I, not a minimum): CG cannot solve, so it returns the
    one-step direction step * v, the same as Neumann with no iterations."""
    gen = torch.Generator().manual_seed(3)
    B = torch.randn(N, N, generator=gen, dtype=DTYPE)
    w, u = (torch.randn(N, generator=gen, dtype=DTYPE).requires_grad_(True) for _ in range(2))
    lower = Level("w", {"x": w}, torch.optim.SGD([w], lr=0.1),
                  lambda p, _: -0.5 * p["w"]["x"].pow(2).sum() - p["w"]["x"] @ B @ p["u"]["x"])
    upper = Level("u", {"x": u}, torch.optim.SGD([u], lr=0.1),
                  lambda p, _: p["w"]["x"].pow(2).sum(), reads_lower=("w",))
    cg = _hypergradient([lower, upper], "conjugate_gradient")
    assert torch.isfinite(cg).all()
    assert _rel_err(cg, _hypergradient([lower, upper], "neumann", iterations=0)) < 1e-12


def test_implicit_levels_are_not_unrolled_and_parameters_stay_put() -> None:
    levels, _, _ = _solved_chain(3)
    calls = []
    original = levels[0].loss
    levels[0].loss = lambda p, b: calls.append(1) or original(p, b)
    before = [level.params["x"].detach().clone() for level in levels]
    _hypergradient(levels, "conjugate_gradient", iterations=3)
    assert len(calls) == 1  # one graph of grad_w f for the solve and the mixed product
    for level, value in zip(levels, before, strict=True):
        assert torch.equal(level.params["x"], value), level.name


def test_a_nonlinear_lower_level_against_a_dense_solve() -> None:
    """Off quadratics: softplus regression with an upper-level per-feature scale u. The dense
    closed form dL/du = d_u L - M'(H + d I)^{-1} d_w L (H = grad2_ww f, M = grad2_wu f, both by
    autograd.functional at the current point) is what CG and Neumann both approach."""
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(20, 6, generator=gen, dtype=DTYPE), torch.randn(20, generator=gen,
                                                                         dtype=DTYPE)
    x_val, y_val = torch.randn(10, 6, generator=gen, dtype=DTYPE), torch.randn(
        10, generator=gen, dtype=DTYPE)
    w = (0.3 * torch.randn(6, generator=gen, dtype=DTYPE)).requires_grad_(True)
    u = (0.3 * torch.randn(6, generator=gen, dtype=DTYPE)).requires_grad_(True)

    def lower_f(w_x, u_x):
        pred = torch.nn.functional.softplus(x @ (w_x * torch.exp(u_x)))
        return (pred - y).pow(2).mean() + 0.05 * w_x.pow(2).sum()

    def upper_f(w_x):
        return (torch.nn.functional.softplus(x_val @ w_x) - y_val).pow(2).mean()

    damping = 0.1
    hessian = torch.autograd.functional.hessian(lambda a: lower_f(a, u.detach()), w.detach())
    mixed = torch.func.jacrev(torch.func.grad(lower_f, argnums=0), argnums=1)(
        w.detach(), u.detach())  # grad2_wu f, (n_w, n_u)
    v = torch.func.grad(upper_f)(w.detach())
    closed_form = -mixed.T @ torch.linalg.solve(hessian + damping * torch.eye(6, dtype=DTYPE), v)

    def levels():
        return [Level("w", {"x": w}, torch.optim.SGD([w], lr=0.1),
                      lambda p, _: lower_f(p["w"]["x"], p["u"]["x"])),
                Level("u", {"x": u}, torch.optim.SGD([u], lr=0.1),
                      lambda p, _: upper_f(p["w"]["x"]), reads_lower=("w",))]

    cg = _hypergradient(levels(), "conjugate_gradient", iterations=50, tolerance=1e-12,
                        damping=damping)
    neumann = _hypergradient(levels(), "neumann", iterations=2000, alpha=0.5, damping=damping)
    assert _rel_err(cg, closed_form) < 1e-8
    assert _rel_err(neumann, closed_form) < 1e-6
