"""What DSRNA (skill `robust`) claims, on a small digits case: the architecture step, given the
robustness term, lowers the Jacobian size more than the plain DARTS step (gamma = 0) does; the
hypergradient of R w.r.t. alpha -- directly and through the one-step-unrolled weights -- is
nonzero and matches finite differences; knobs are checked before any trial; a trial logs the
robustness metrics. No Ray; CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from skillearn.data import BatchStream, load_data
from skillearn.knobs import ConfigError
from skillearn.robustness import PixelSpace, jacobian_norm
from skillearn.trainables import get_skill, resolve_config
from skillearn.trainables.robust import robustness, robustness_term
from skillearn.trainables.runner import data_spec, run_skill, seed_everything
from skillearn.trainables.setup import Setup, resolve_space
from skillearn.trainables.weights import run_with

CPU = torch.device("cpu")
TINY = {"dataset": "digits", "nodes": 1, "cells": 1, "channels": 4, "epochs": 1,
        "fused_cells": "off", "channels_last": "off"}


def build(overrides: dict):
    cfg = resolve_config(get_skill("robust"), {**TINY, **overrides})
    seed_everything(cfg["seed"])
    data = load_data(data_spec(cfg))
    space, _ = resolve_space(cfg, data)
    built = get_skill("robust").build(Setup(config=cfg, data=data, device=CPU, space=space))
    return built, data, cfg


def test_knobs_are_checked_before_a_trial():
    skill = get_skill("robust")
    for bad in ({"regularizer": "lipschitz"}, {"bound": "crown-ibp"}, {"gamma": -1.0},
                {"jacobian_norm": "l3"}, {"n_proj": 0}, {"cert_eps": 2.0}, {"gamma": "a lot"}):
        with pytest.raises(ConfigError):
            resolve_config(skill, bad)
    assert resolve_config(skill, {})["gamma"] == 0.01


def arch_step_jacobian(gamma: float) -> tuple[float, float]:
    """Exact mean Jacobian size on a fixed validation batch after one architecture step with
    this gamma (first order, from the same start), and how far alpha moved."""
    built, data, _ = build({"gamma": gamma, "regularizer": "jacobian", "n_proj": 8,
                            "arch_lr": 0.05, "method": "first_order", "robust_batch": 0})
    net = built.predict
    net.train()
    batch = {"train": next(iter(BatchStream(data.train, 64, seed=0))),
             "val": next(iter(BatchStream(data.val, 64, seed=1)))}
    torch.manual_seed(0)
    arch = built.program.levels["arch"]
    before = torch.cat([p.detach().flatten().clone() for p in arch.params.values()])
    arch.optimizer.zero_grad()
    params = {"weights": dict(built.program.levels["weights"].params), "arch": arch.params}
    arch.loss(params, batch).backward()
    arch.optimizer.step()
    moved = (torch.cat([p.detach().flatten() for p in arch.params.values()]) - before).norm()
    gen = torch.Generator().manual_seed(5)  # the objective's own estimate, many projections
    size = jacobian_norm(net, batch["val"][0], n_proj=64, create_graph=False, generator=gen)
    return float(size.mean()), float(moved)


def test_robustness_term_steers_alpha_towards_a_smaller_jacobian():
    plain, moved_plain = arch_step_jacobian(0.0)
    robust, moved_robust = arch_step_jacobian(1.0)
    assert moved_plain > 0 and moved_robust > 0
    assert robust < plain, (robust, plain)


@pytest.mark.parametrize("regularizer", ["jacobian", "certified"])
def test_hypergradient_of_r_through_unrolled_weights_matches_finite_differences(regularizer):
    """R(w'(alpha), alpha) with w' = w - lr * grad_w L_train(w, alpha): autograd vs a central
    difference along a random alpha direction (float64, fixed projections)."""
    built, data, cfg = build({"regularizer": regularizer, "bound": "ibp"})
    net = built.predict.double().eval()  # eval: BN with running statistics, per-example Jacobian
    space = PixelSpace.from_record(data.record, 1)
    space = PixelSpace(space.scale.double(), space.lo.double(), space.hi.double())
    x_tr, y_tr = data.train.x[:16].double(), data.train.y[:16]
    x_val, y_val = data.val.x[:8].double(), data.val.y[:8]
    weights = {k: v.detach() for k, v in net.weight_parameters().items()}
    alpha0 = {k: v.detach() for k, v in net.arch_parameters().items()}
    gen = torch.Generator().manual_seed(3)
    direction = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in alpha0.items()}

    def r_of(alpha: dict) -> torch.Tensor:
        w = {k: v.requires_grad_(True) if not v.requires_grad else v for k, v in
             {k: v.clone() for k, v in weights.items()}.items()}
        loss = F.cross_entropy(run_with(net, x_tr, w, alpha), y_tr)
        grads = torch.autograd.grad(loss, list(w.values()), create_graph=True, allow_unused=True)
        unrolled = {k: v if g is None else v - 0.025 * g
                    for (k, v), g in zip(w.items(), grads, strict=True)}
        torch.manual_seed(7)  # the same Jacobian projections at every alpha
        parts = robustness_term(net, {**unrolled, **alpha}, x_val, y_val, cfg, space, 0.01)
        return robustness(parts)

    alpha = {k: v.clone().requires_grad_(True) for k, v in alpha0.items()}
    grads = torch.autograd.grad(r_of(alpha), list(alpha.values()), allow_unused=True)
    analytic = sum((g * direction[k]).sum() for k, g in zip(alpha, grads, strict=True)
                   if g is not None)  # one normal cell: alpha_reduce is not read
    h = 1e-5
    plus = r_of({k: v + h * direction[k] for k, v in alpha0.items()})
    minus = r_of({k: v - h * direction[k] for k, v in alpha0.items()})
    numeric = (plus - minus) / (2 * h)
    assert abs(float(analytic)) > 1e-6
    assert float(analytic) == pytest.approx(float(numeric.detach()), rel=1e-4, abs=1e-8)


def test_a_trial_logs_the_robustness_metrics():
    reports = []
    metrics = run_skill("robust", {**TINY, "steps_per_epoch": 3, "robust_eval_size": 16,
                                   "regularizer": "combined", "pgd_steps": 5},
                        lambda m, _: reports.append(m))
    assert len(reports) == 1
    for key in ("jacobian_norm", "margin_bound", "cert_eps", "clean_acc_eval", "fgsm_acc",
                "pgd_acc", "cert_radius_mean", "attack_eps"):
        assert key in metrics, key
    assert metrics["pgd_acc"] <= metrics["clean_acc_eval"]
    assert metrics["cert_radius_mean"] >= 0 and metrics["attack_eps"] == 0.1
    assert metrics["cert_eps"] == pytest.approx(0.03)
