"""Seed 001's skills learn what the paper says they learn, on tiny cases (seconds each):
LPT's soft test and its creator's hypergradient (exact = brute-force autograd through the
unrolled chain), the creator weighting the testee's mistakes; IL's proximal term, its K*M
stages chained in order and A's hypergradient reaching the first stage. Knobs are refused
before Ray."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from skillearn.data import BatchStream, data_spec, load_data
from skillearn.platform import cli, sweep
from skillearn.trainables import get_skill, resolve_config
from skillearn.trainables.il import proximity, stage_names, task_classes, task_loss
from skillearn.trainables.lpt import soft_test_difficulty
from skillearn.trainables.runner import seed_everything
from skillearn.trainables.setup import Built, Setup, resolve_space
from skillearn.trainables.weights import run_with

TINY_NET = {"nodes": 1, "cells": 1, "channels": 4}
TINY = {"dataset": "synthetic", **TINY_NET, "batch_size": 16, "epochs": 1, "fd_gap_every": 0}


def build(skill_name: str, overrides: dict) -> tuple[Built, object]:
    skill = get_skill(skill_name)
    cfg = resolve_config(skill, overrides)
    seed_everything(cfg["seed"])
    data = load_data(data_spec(cfg))
    space, _ = resolve_space(cfg, data)
    return skill.build(Setup(config=cfg, data=data, device=torch.device("cpu"), space=space)), data


def batches(data, size: int = 16, seed: int = 0) -> dict:
    train = iter(BatchStream(data.train, size, seed=seed))
    val = iter(BatchStream(data.val, size, seed=seed + 1))
    return {"train": next(train), "val": next(val)}


# --- LPT -----------------------------------------------------------------------------------

def test_soft_test_difficulty_is_the_f_weighted_mean_loss() -> None:
    f = torch.tensor([0.5, 0.25, 1.0, 0.0])
    losses = torch.tensor([2.0, 4.0, 1.0, 100.0])
    # by hand: (1 + 1 + 1 + 0) / (0.5 + 0.25 + 1 + 0) = 3 / 1.75
    assert float(soft_test_difficulty(f, losses)) == pytest.approx(3 / 1.75)
    assert float(soft_test_difficulty(2 * f, losses)) == pytest.approx(3 / 1.75)  # size-free


def test_creator_hypergradient_exact_matches_brute_force_autograd_through_the_unroll() -> None:
    """C's gradient by the engine (`exact`) against autograd through W' and (E', X') written
    out by hand: W' = W - xi grad L_train, (E', X') = (E, X) - xi grad(L_train + gamma L_test),
    objective = difficulty(W', E', C) - lambda L_val(E', X'); the engine descends -objective."""
    built, data = build("lpt", {**TINY, "w_wd": 0.0, "lam": 0.7, "gamma": 1.3,
                                "method": "exact"})
    program, b = built.program, batches(data)
    levels = program.levels
    engine, _ = program.gradient("creator", b)

    def unrolled(level, params):
        view = {n: lv.params for n, lv in levels.items()} | params
        loss = level.loss(view, b)
        grads = torch.autograd.grad(loss, list(level.params.values()), create_graph=True)
        xi = level.optimizer.param_groups[0]["lr"]
        return {k: v - xi * g for (k, v), g in zip(level.params.items(), grads, strict=True)}

    c = {k: v.detach().clone().requires_grad_(True) for k, v in levels["creator"].params.items()}
    w_prime = unrolled(levels["weights"], {})
    tester_prime = unrolled(levels["tester"], {"creator": c})
    view = {n: lv.params for n, lv in levels.items()} | {
        "creator": c, "weights": w_prime, "tester": tester_prime}
    objective = levels["creator"].loss(view, b)
    brute = torch.autograd.grad(objective, list(c.values()))
    for (key, ours), theirs in zip(engine.items(), brute, strict=True):
        assert theirs.abs().sum() > 0, key  # the hypergradient is not trivially zero
        torch.testing.assert_close(ours, -theirs, rtol=1e-4, atol=1e-6)  # ascent: -grad

    fd, _ = program.gradient("creator", b, method="finite_difference")
    gap = sum((fd[k] - engine[k]).norm() ** 2 for k in fd) ** 0.5
    assert gap / sum(v.norm() ** 2 for v in engine.values()) ** 0.5 < 0.05


def test_the_creator_learns_to_weigh_the_testees_mistakes() -> None:
    """The seed's claim at small scale: C ascends the difficulty, so its test becomes harder
    than the unweighted mean loss and f ranks the examples the testee gets wrong above those it
    gets right. Digits, tiny net, 30 first-order steps, creator_lr 20x the seed's so that C
    learns in that time; three seeds, because the testee moves under C too. Measured on 2 cores
    (seeds 0, 1, 2): difficulty - mean loss 0.108, 0.187, 0.114; f_wrong_auc 0.73, 0.61, 0.82
    (at 10x and 60 steps: 0.025, 0.18, 0.17 and 0.53, 0.64, 0.80)."""
    gaps, aucs = [], []
    for seed in (0, 1, 2):
        built, data = build("lpt", {"dataset": "digits", **TINY_NET, "creator_lr": 6e-3,
                                    "method": "first_order", "seed": seed})
        before = built.epoch_report().metrics
        assert before["f_std"] == 0.0  # C starts neutral: every f = 1/2
        train = iter(BatchStream(data.train, 64, seed=0))
        val = iter(BatchStream(data.val, 64, seed=1))
        for _ in range(30):
            built.program.step({"train": next(train), "val": next(val)})
        after = built.epoch_report().metrics
        with torch.no_grad():
            mean_loss = float(F.cross_entropy(built.predict(data.val.x[:512]),
                                              data.val.y[:512]))
        gaps.append(after["difficulty"] - mean_loss)
        aucs.append(after["f_wrong_auc"])
        assert after["f_std"] > 0.01
    assert min(gaps) > 0.03 and sum(gaps) / 3 > 0.06
    assert sum(aucs) / 3 > 0.6


def test_the_creator_level_ascends_and_the_ablations_change_the_levels() -> None:
    built, _ = build("lpt", TINY)
    levels = built.program.levels
    assert levels["creator"].maximize and not levels["arch"].maximize
    assert built.program.sequence == ["arch", "creator", "tester", "weights"]  # Algorithm 2
    report = built.epoch_report()
    assert {a.kind for a in report.artifacts} == {"table", "image"}
    assert report.artifacts[1].png().startswith(b"\x89PNG")

    default, data = build("lpt", {**TINY, "lam": 2.0})
    b = batches(data)
    view = {n: lv.params for n, lv in default.program.levels.items()}
    with torch.no_grad():
        full = default.program.levels["creator"].loss(view, b)
        hard = default.program.levels["arch"].loss(view, b)
    assert float(full) < float(hard)  # difficulty - lambda * (a positive validation loss)
    only, _ = build("lpt", {**TINY, "lam": 2.0, "ablation": "difficulty_only"})
    view = {n: lv.params for n, lv in only.program.levels.items()}
    with torch.no_grad():
        assert float(only.program.levels["creator"].loss(view, b)) == pytest.approx(
            float(only.program.levels["arch"].loss(view, b)))


# --- IL ------------------------------------------------------------------------------------

def test_proximity_term_and_its_gradient_skip_the_head() -> None:
    w = {"cell.w": torch.tensor([1.0, 2.0], requires_grad=True),
         "classifier.weight": torch.tensor([5.0], requires_grad=True)}
    prev = {"cell.w": torch.tensor([0.0, 4.0]), "classifier.weight": torch.tensor([-5.0])}
    value = proximity(w, prev)
    assert float(value.detach()) == pytest.approx(1.0 + 4.0)  # the head's distance does not count
    grads = torch.autograd.grad(3.0 * value, list(w.values()), allow_unused=True)
    torch.testing.assert_close(grads[0], 2 * 3.0 * torch.tensor([1.0, -2.0]))
    assert grads[1] is None


def test_task_split_and_task_loss_use_only_the_learners_classes() -> None:
    tasks = task_classes(10, 2)
    assert [t.tolist() for t in tasks] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    logits = torch.randn(4, 10)
    y = torch.tensor([0, 7, 4, 9])
    expected = F.cross_entropy(logits[[1, 3]][:, 5:], torch.tensor([2, 4]))
    torch.testing.assert_close(task_loss(logits, y, tasks[1]), expected)


def test_il_stages_are_chained_in_turn_order_and_a_reaches_the_first() -> None:
    """K*M = 6 lower levels (K = 3, M = 2): each reads the one before, A reads round M, and A's
    exact hypergradient changes when only the first stage's weights change."""
    built, data = build("il", {**TINY, "learners": 3, "rounds": 2, "method": "exact"})
    program = built.program
    names = stage_names(3, 2, "interleave")
    assert names == ["r1_l1", "r1_l2", "r1_l3", "r2_l1", "r2_l2", "r2_l3"]
    assert list(program.levels) == [*names, "arch"]
    for before, after in zip(names, names[1:], strict=False):
        assert program.levels[after].reads_lower == (before,)
    assert program.levels["arch"].reads_lower == ("r2_l1", "r2_l2", "r2_l3")
    assert program._closure("arch") == names
    b = batches(data, 32)
    g0, _ = program.gradient("arch", b)
    with torch.no_grad():
        for tensor in program.levels["r1_l1"].params.values():
            tensor.add_(0.05 * torch.randn_like(tensor))
    g1, _ = program.gradient("arch", b)
    assert any(not torch.allclose(g0[k], g1[k]) for k in g0)
    first, _ = program.gradient("arch", b, method="first_order")
    assert any(not torch.allclose(first[k], g1[k]) for k in g1)  # the chain adds a term


def test_il_architecture_hypergradient_exact_matches_brute_force_through_the_chain() -> None:
    """A's gradient by the engine (`exact`) against autograd through the K*M = 4 unrolled
    stages written out by hand, each W' = W - xi grad(L_k(W, A) + lambda ||W - W_prev'||^2)."""
    built, data = build("il", {**TINY, "w_wd": 0.0, "prox": 3.0, "method": "exact"})
    program, b = built.program, batches(data, 32)
    levels = program.levels
    engine, _ = program.gradient("arch", b)

    arch = {k: v.detach().clone().requires_grad_(True) for k, v in levels["arch"].params.items()}
    view = {n: lv.params for n, lv in levels.items()} | {"arch": arch}
    for name in stage_names(2, 2, "interleave"):
        level = levels[name]
        loss = level.loss(view, b)
        grads = torch.autograd.grad(loss, list(level.params.values()), create_graph=True,
                                    allow_unused=True)  # e.g. a head row of another task
        xi = level.optimizer.param_groups[0]["lr"]
        view[name] = {k: v if g is None else v - xi * g
                      for (k, v), g in zip(level.params.items(), grads, strict=True)}
    brute = torch.autograd.grad(levels["arch"].loss(view, b), list(arch.values()),
                                allow_unused=True)  # a one-cell net has no reduction cell
    used = [(key, ours, theirs) for (key, ours), theirs in zip(engine.items(), brute,
                                                               strict=True) if theirs is not None]
    assert used
    for key, ours, theirs in used:
        assert theirs.abs().sum() > 0, key
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)


def test_trials_report_the_learned_quantities_each_epoch() -> None:
    from skillearn.trainables.runner import run_skill

    lpt: list[dict] = []
    run_skill("lpt", {**TINY, "steps_per_epoch": 2}, lambda m, _d: lpt.append(dict(m)))
    for key in ("f_mean", "f_std", "f_entropy", "difficulty", "tester_val_loss", "arch_entropy"):
        assert key in lpt[-1], key
    kinds = {(a["kind"], a["name"]) for a in lpt[-1]["artifacts"]}
    assert {("table", "lpt_top_tests"), ("image", "lpt_top_tests")} <= kinds
    il: list[dict] = []
    run_skill("il", {**TINY, "steps_per_epoch": 2}, lambda m, _d: il.append(dict(m)))
    for key in ("prox_dist_r1_l2", "prox_dist_r2_l1", "prox_dist_r2_l2", "val_acc_l1",
                "val_acc_l2"):
        assert key in il[-1], key


def test_il_proximal_pull_keeps_stages_close_and_reports_each_learner() -> None:
    def distances(prox: float) -> dict:
        built, data = build("il", {**TINY, "prox": prox, "method": "first_order"})
        stream = iter(BatchStream(data.train, 32, seed=0))
        val = iter(BatchStream(data.val, 32, seed=1))
        for _ in range(8):
            built.program.step({"train": next(stream), "val": next(val)})
        return built.epoch_report().metrics

    free, pulled = distances(0.0), distances(10.0)
    for name in ("r1_l2", "r2_l1", "r2_l2"):
        assert pulled[f"prox_dist_{name}"] < 0.7 * free[f"prox_dist_{name}"], name
    assert {"val_acc_l1", "val_acc_l2"} <= set(pulled)


def test_il_baseline_modes() -> None:
    joint, _ = build("il", {**TINY, "mode": "joint"})
    assert list(joint.program.levels) == ["r1_l1", "r1_l2", "arch"]
    assert all(not lv.reads_lower for n, lv in joint.program.levels.items() if n != "arch")
    multi, data = build("il", {**TINY, "mode": "multitask"})
    assert list(multi.program.levels) == ["shared", "arch"]
    logits = multi.predict(data.val.x[:8])
    assert logits.shape == (8, data.num_classes)
    params = multi.program.levels["shared"].params
    torch.testing.assert_close(logits, run_with(multi.modules[0], data.val.x[:8], params))


# --- knobs refused before Ray --------------------------------------------------------------

REFUSED = [
    (["sweep", "lpt", "--set", "lam=-1.0"], "below its minimum"),
    (["sweep", "lpt", "--set", "gamma=abc"], "expects a number"),
    (["sweep", "lpt", "--set", "ablation=none_at_all"], "is not one of"),
    (["sweep", "lpt", "--set", "order=weights,arch"], "order"),
    (["sweep", "lpt", "--set", "encoder=resnet50", "--set", "encoder_weights=/no/such.pt"],
     "no such file"),
    (["sweep", "lpt", "--set", "encoder_dim=48"], "is not one of"),
    (["sweep", "il", "--set", "mode=alone"], "is not one of"),
    (["sweep", "il", "--set", "learners=1"], "below its minimum"),
    (["sweep", "il", "--set", "rounds=2.5"], "must be an integer"),
    (["sweep", "il", "--set", "prox=-3.0"], "below its minimum"),
]


@pytest.mark.parametrize(("argv", "needle"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_new_knobs_refused_in_one_line_before_ray(argv, needle, tmp_path, monkeypatch,
                                                  capsys) -> None:
    import ray

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep, "run_sweep", lambda spec: pytest.fail("the sweep would run"))
    code = cli.main([*argv, "--storage", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("skillearn: error: "), err
    assert needle in lines[0]
    assert not ray.is_initialized()
