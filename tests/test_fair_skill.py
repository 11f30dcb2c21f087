"""The `fair` skill (LBG/DALBG): both MMD kernels against direct computations, the grouping's
hypergradient against brute-force autograd through the unrolled T -> experts chain, the
protected attribute never reaching the skill, and C learning (lazily) by descending the
validation loss."""

from __future__ import annotations

import math

import pytest
import torch

from skillearn.artifacts import Table, find_artifact
from skillearn.data import BatchStream, data_spec, load_data
from skillearn.search_spaces.darts import Genotype
from skillearn.trainables import get_skill, resolve_config
from skillearn.trainables.fair import soft_mmd
from skillearn.trainables.runner import run_skill, seed_everything
from skillearn.trainables.setup import Built, Setup, resolve_space

TINY = {"dataset": "digits_groups", "nodes": 1, "cells": 1, "channels": 4, "batch_size": 12,
        "encoder_dim": 16, "fd_gap_every": 0, "method": "exact"}


def build_fair(overrides: dict, without_sensitive: bool = False) -> tuple[Built, object]:
    skill = get_skill("fair")
    cfg = resolve_config(skill, {**TINY, **overrides})
    seed_everything(cfg["seed"])
    data = load_data(data_spec(cfg))
    if without_sensitive:
        data = data.without_sensitive()
    space, _ = resolve_space(cfg, data)
    return skill.build(Setup(config=cfg, data=data, device=torch.device("cpu"),
                             space=space)), data


def batches_of(data, seed: int = 0, size: int = 12) -> dict:
    return {"train": next(iter(BatchStream(data.train, size, seed=seed))),
            "val": next(iter(BatchStream(data.val, size, seed=seed + 1)))}


# --- MMD -----------------------------------------------------------------------------------


def test_linear_mmd_is_the_squared_distance_of_weighted_mean_embeddings() -> None:
    phi = torch.randn(7, 3, dtype=torch.float64)
    w = torch.rand(7, dtype=torch.float64)
    mean_in = (w[:, None] * phi).sum(0) / w.sum()
    mean_out = ((1 - w)[:, None] * phi).sum(0) / (1 - w).sum()
    assert soft_mmd(phi, w, "linear") == pytest.approx(float((mean_in - mean_out).pow(2).sum()))
    hard = torch.tensor([1.0, 1, 1, 0, 0, 0, 0], dtype=torch.float64)  # eq. 2.6 in the limit
    direct = (phi[:3].mean(0) - phi[3:].mean(0)).pow(2).sum()
    assert soft_mmd(phi, hard, "linear") == pytest.approx(float(direct))


def test_gaussian_mmd_matches_a_direct_double_sum() -> None:
    phi = torch.randn(6, 4, dtype=torch.float64)
    w = torch.rand(6, dtype=torch.float64)
    a, b = w / w.sum(), (1 - w) / (1 - w).sum()
    distances = [[float((phi[i] - phi[j]).pow(2).sum()) for j in range(6)] for i in range(6)]
    base = sum(map(sum, distances)) / 36

    def k(i: int, j: int) -> float:
        return sum(math.exp(-distances[i][j] / (base * s)) for s in (0.25, 0.5, 1, 2, 4))

    direct = sum((a[i] - b[i]) * (a[j] - b[j]) * k(i, j) for i in range(6) for j in range(6))
    assert soft_mmd(phi, w, "gaussian") == pytest.approx(float(direct), rel=1e-9)
    assert soft_mmd(phi, torch.full((6,), 0.5, dtype=torch.float64), "gaussian") == 0.0


# --- the hypergradient of C and A ----------------------------------------------------------


def brute_force_upper_gradient(built: Built, batches: dict) -> dict[str, torch.Tensor]:
    """d L_val / d(C, A) by autograd through T' = T - lr (g_T + wd T) and
    S' = S - lr (g_S(T') + wd S): the first SGD step (no momentum yet), built by hand."""
    levels = built.program.levels
    upper = dict(levels["group"].params)
    gam, experts = levels["gam"], levels["experts"]

    def sgd_step(level, params, loss):
        keys = list(params)
        grads = torch.autograd.grad(loss, [params[k] for k in keys], create_graph=True,
                                    allow_unused=True)
        group = level.optimizer.param_groups[0]
        return {k: params[k] - group["lr"] * ((0 if g is None else g)
                                              + group["weight_decay"] * params[k])
                for k, g in zip(keys, grads, strict=True)}

    t = dict(gam.params)
    t_next = sgd_step(gam, t, gam.loss({"gam": t, "experts": experts.params, "group": upper},
                                       batches))
    s = dict(experts.params)
    s_next = sgd_step(experts, s, experts.loss({"gam": t_next, "experts": s, "group": upper},
                                               batches))
    loss = levels["group"].loss({"gam": t_next, "experts": s_next, "group": upper}, batches)
    keys = list(upper)
    grads = torch.autograd.grad(loss, [upper[k] for k in keys], allow_unused=True)
    return {k: torch.zeros_like(upper[k]) if g is None else g
            for k, g in zip(keys, grads, strict=True)}


@pytest.mark.parametrize("mmd", ["linear", "gaussian"])
def test_grouping_hypergradient_matches_brute_force_through_the_unrolled_chain(mmd) -> None:
    built, data = build_fair({"mmd": mmd, "lam": 0.5, "c_lr": 0.1})
    batches = batches_of(data)
    exact, _ = built.program.gradient("group", batches, method="exact")
    brute = brute_force_upper_gradient(built, batches)
    assert float(exact["C"].abs().sum()) > 0  # C reaches the validation loss
    rows = exact["C"].abs().sum(1) > 0
    assert int(rows.sum()) <= 12  # only the train batch's entries have a gradient
    for key in exact:
        assert torch.allclose(exact[key], brute[key], rtol=1e-3, atol=1e-7), key


def test_a_small_step_against_c_s_hypergradient_lowers_the_unrolled_validation_loss() -> None:
    """The mechanism the thesis claims (eq. 2.13): C moves to lower the validation loss of the
    experts trained on its grouping. A step of 1e-3 keeps every group assignment (no argmax
    flips), so the loss must fall by about 1e-3 * ||g||, and rise by as much the other way."""
    built, data = build_fair({"lam": 0.1})
    batches = batches_of(data, seed=4)
    c = built.program.levels["group"].params["C"]
    exact, _ = built.program.gradient("group", batches, method="exact")
    direction = exact["C"] / exact["C"].norm()
    start = c.detach().clone()
    losses = []
    for eps in (1e-3, 0.0, -1e-3):
        with torch.no_grad():
            c.copy_(start - eps * direction)
        losses.append(float(brute_force_val_loss(built, batches).detach()))
    descended, unchanged, ascended = losses
    assert descended < unchanged < ascended
    slope = (ascended - descended) / 2e-3
    assert slope == pytest.approx(float(exact["C"].norm()), rel=0.1)


def brute_force_val_loss(built: Built, batches: dict) -> torch.Tensor:
    levels = built.program.levels
    upper, gam, experts = dict(levels["group"].params), levels["gam"], levels["experts"]

    def step(level, params, loss):
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        lr, wd = (level.optimizer.param_groups[0][k] for k in ("lr", "weight_decay"))
        return {k: (p - lr * ((0 if g is None else g) + wd * p)).detach()
                for (k, p), g in zip(params.items(), grads, strict=True)}

    t = step(gam, gam.params, gam.loss({"gam": gam.params, "experts": experts.params,
                                        "group": upper}, batches))
    s = step(experts, experts.params, experts.loss({"gam": t, "experts": experts.params,
                                                    "group": upper}, batches))
    return levels["group"].loss({"gam": t, "experts": s, "group": upper}, batches)


# --- the protected attribute never reaches the skill -----------------------------------------


def _state(built: Built) -> list[torch.Tensor]:
    return [p.detach().clone() for level in built.program.levels.values()
            for p in level.params.values()]


def test_the_skill_runs_identically_with_the_attribute_column_removed() -> None:
    runs = []
    for without in (False, True):
        built, data = build_fair({}, without_sensitive=without)
        stream = iter(BatchStream(data.train, 12, seed=0))
        val = iter(BatchStream(data.val, 12, seed=1))
        for _ in range(3):
            built.program.step({"train": next(stream), "val": next(val)})
        x = data.test.x[:50]
        runs.append((_state(built), built.predict(x).detach(), data))
    (state_a, pred_a, data_a), (state_b, pred_b, data_b) = runs
    assert data_a.has_sensitive and not data_b.has_sensitive
    assert all(torch.equal(a, b) for a, b in zip(state_a, state_b, strict=True))
    assert torch.equal(pred_a, pred_b)


# --- the learned grouping ------------------------------------------------------------------


def test_c_moves_only_where_its_examples_were_batched_and_groups_change() -> None:
    built, data = build_fair({"c_lr": 0.05})
    c = built.program.levels["group"].params["C"]
    start = c.detach().clone()
    stream = iter(BatchStream(data.train, 12, seed=0))
    val = iter(BatchStream(data.val, 12, seed=1))
    seen = set()
    for _ in range(6):
        batch = next(stream)
        seen.update(batch[2].tolist())
        built.program.step({"train": batch, "val": next(val)})
    position = {int(i): row for row, i in enumerate(data.train.index.tolist())}
    rows = torch.tensor(sorted(position[i] for i in seen))
    moved = (c.detach() - start).abs().sum(1) > 0
    assert bool(moved[rows].all()) and int(moved.sum()) == len(rows)
    flipped = (c.detach().argmax(1) != start.argmax(1))[rows]
    assert bool(flipped.any())  # the learned grouping departs from its random start


def test_a_run_reports_the_grouping_and_fairness() -> None:
    metrics = run_skill("fair", {**TINY, "epochs": 1, "steps_per_epoch": 2}, lambda m, c: None)
    sizes = [int(metrics[f"group_size_{k}"]) for k in range(2)]
    train_size = len(load_data(data_spec(resolve_config(get_skill("fair"), TINY))).train)
    assert len(sizes) == 2 and sum(sizes) == train_size
    table = find_artifact(metrics, Table, "group_vs_sensitive")
    assert sum(sum(row[1:]) for row in table.rows) == sum(sizes)
    assert {"test_dp_diff", "test_eo_diff", "val_worst_group_acc", "c_confidence",
            "gam_confidence", "mmd_group_0", "mmd_group_1"} <= set(metrics)
    genotypes = find_artifact(metrics, Table, "expert_genotypes")
    assert [Genotype.from_json(g).normal is not None for _, g in genotypes.rows] == [True, True]
