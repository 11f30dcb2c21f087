"""LFM for NAS learns its weighting: r is stepped by a lazy Adam (absent entries stay put), r, V
and the a's move within one digits epoch, and the code's order, init, clips and ablations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from skillearn.artifacts import artifacts_payload
from skillearn.data import BatchStream, data_spec, load_data
from skillearn.mlo.order import update_order
from skillearn.reweighting.trends import draw_weight_trends, trend_values
from skillearn.trainables import ConfigError, get_skill, resolve_config
from skillearn.trainables.group_adam import GroupAdam
from skillearn.trainables.lfm import cosine_to_floor, example_weights
from skillearn.trainables.runner import run_skill, seed_everything
from skillearn.trainables.setup import Built, Setup, resolve_space
from skillearn.trainables.weight_reports import weight_trends

TINY_NET = {"nodes": 1, "cells": 1, "channels": 4}
TINY = {"dataset": "synthetic", **TINY_NET, "batch_size": 16, "steps_per_epoch": 2, "epochs": 1,
        "fd_gap_every": 0}


def build_lfm(overrides: dict) -> tuple[Built, object, dict]:
    skill = get_skill("lfm")
    cfg = resolve_config(skill, overrides)
    seed_everything(cfg["seed"])
    data = load_data(data_spec(cfg))
    space, _ = resolve_space(cfg, data)
    built = skill.build(Setup(config=cfg, data=data, device=torch.device("cpu"), space=space))
    return built, data, cfg


def upper(built: Built) -> dict[str, torch.Tensor]:
    return built.program.levels["arch"].params


def encoder_vector(built: Built) -> torch.Tensor:
    return torch.cat([v.detach().flatten() for k, v in upper(built).items() if k.startswith("V.")])


# --- the lazy Adam -------------------------------------------------------------------------

def test_lazy_group_leaves_zero_gradient_entries_and_their_moments_alone() -> None:
    r = torch.ones(6, requires_grad=True)
    opt = GroupAdam([{"params": [r], "lazy": True}], lr=0.01, betas=(0.5, 0.999),
                    weight_decay=1e-4)
    for k in range(5):
        grad = torch.zeros(6)
        grad[k % 3] = 1.0  # entries 3..5 are never in a "batch"
        r.grad = grad
        opt.step()
    assert torch.equal(r[3:].detach(), torch.ones(3))
    assert torch.equal(opt.state[r]["exp_avg"][3:], torch.zeros(3))
    assert opt.state[r]["step"].tolist() == [2, 2, 1, 0, 0, 0]  # each entry counts its own
    assert (r[:3] < 1).all()


def test_dense_group_is_torch_adam_and_clips_are_per_group() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, generator=gen).requires_grad_(True)
    ref = a.detach().clone().requires_grad_(True)
    ours = GroupAdam([{"params": [a]}], lr=0.01, betas=(0.5, 0.999), weight_decay=1e-4)
    adam = torch.optim.Adam([ref], lr=0.01, betas=(0.5, 0.999), weight_decay=1e-4)
    for _ in range(10):
        grad = torch.randn(5, generator=gen)
        a.grad, ref.grad = grad.clone(), grad.clone()
        ours.step()
        adam.step()
    torch.testing.assert_close(a, ref, rtol=0, atol=1e-5)

    big, small = torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    clipped = GroupAdam([{"params": [big]}, {"params": [small]}], lr=1.0, clip=5.0)
    big.grad, small.grad = torch.full((4,), 1e3), torch.full((4,), 1e-3)
    clipped.step()
    assert big.grad.norm() == pytest.approx(5.0)  # clipped on its own ...
    assert small.grad.norm() == pytest.approx(2e-3)  # ... without shrinking the other group


# --- r, V and the a's learn -----------------------------------------------------------------

def test_r_entries_absent_from_the_validation_batches_do_not_change() -> None:
    built, data, cfg = build_lfm(TINY)
    r0 = upper(built)["r"].detach().clone()
    train = iter(BatchStream(data.train, 16, seed=1))
    val = data.val
    seen = torch.zeros(len(val), dtype=torch.bool)
    for step in range(4):  # k = 4 steps, each with validation rows 0..7 or 8..15 only
        rows = torch.arange(8) + 8 * (step % 2)
        seen[rows] = True
        built.program.step({"train": next(train),
                            "val": (val.x[rows], val.y[rows], val.index[rows])})
    r = upper(built)["r"].detach()
    assert torch.equal(r[~seen], r0[~seen])
    assert (r[seen] != r0[seen]).float().mean() > 0.5


def test_default_settings_move_r_v_and_the_a_weights_within_one_digits_epoch() -> None:
    """Thresholds are ~1/3 of what this measured on 2 cores (r 0.96 %, V 55 %, a_std 0.033 ->
    0.12, a_mean 0.61 -> 0.71). Before the fix r decayed uniformly towards 0 (r_std ~0) and,
    with the small encoder's tiny features, x was uniform and every a_i within ±0.01."""
    built, data, cfg = build_lfm({"dataset": "digits", **TINY_NET, "epochs": 1})
    r0, v0 = upper(built)["r"].detach().clone(), encoder_vector(built)
    before = built.epoch_report().metrics
    stream = iter(BatchStream(data.train, cfg["batch_size"], seed=0))
    val = iter(BatchStream(data.val, cfg["batch_size"], seed=1))
    for _ in range(len(data.train) // cfg["batch_size"]):
        built.program.step({"train": next(stream), "val": next(val)})
    after = built.epoch_report().metrics
    r = upper(built)["r"].detach()
    assert float((r - r0).norm() / r0.norm()) > 0.003
    assert float((r - r0).std()) > 0.003  # per-example, not one uniform shift
    assert float((encoder_vector(built) - v0).norm() / v0.norm()) > 0.15
    assert abs(after["a_mean"] - before["a_mean"]) / before["a_mean"] > 0.05
    assert after["a_std"] > 0.05 and after["r_std"] > 0.003


def test_mislabelled_examples_get_smaller_mistake_weights() -> None:
    """The paper's premise: a mislabelled example looks like validation examples of another
    class, so z zeroes its similarity mass and a_i stays near 0.5 (digits, 40 % noise)."""
    built, _, _ = build_lfm({"dataset": "digits", **TINY_NET, "noise_rate": 0.4})
    metrics = built.epoch_report().metrics
    assert metrics["a_weight_auc"] > 0.75  # measured 0.92
    assert metrics["a_weight_clean_mean"] > metrics["a_weight_noisy_mean"]


def test_epoch_metrics_include_r_a_and_the_clean_vs_noisy_auc() -> None:
    reports: list[dict] = []
    run_skill("lfm", {**TINY, "noise_rate": 0.4}, lambda m, _d: reports.append(dict(m)))
    (metrics,) = reports
    for key in ("r_mean", "r_std", "a_mean", "a_std", "a_weight_auc", "a_weight_clean_mean",
                "a_weight_noisy_mean"):
        assert math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["a_weight_auc"] <= 1.0 and 0.0 < metrics["a_mean"] < 1.0


def test_per_position_r_is_dense_over_the_validation_batch() -> None:
    built, data, _ = build_lfm({**TINY, "r_mode": "per_position"})
    r = upper(built)["r"]
    assert r.shape == (16,)  # the code's nn.Linear(batch_size, 1)
    r0 = r.detach().clone()
    train, val = iter(BatchStream(data.train, 16, seed=1)), iter(BatchStream(data.val, 16, seed=2))
    built.program.step({"train": next(train), "val": next(val)})
    # every position gets a gradient (zero only when no train example shares its label)
    assert (r.detach() != r0).float().mean() > 0.5


# --- the code's order, init, schedules; the paper's ablations ------------------------------

def test_order_takes_level_names_and_defaults_to_the_code() -> None:
    built, _, _ = build_lfm(TINY)
    assert built.program.sequence == ["arch", "w1", "w2"]
    assert update_order("bottom_up", ["w1", "w2", "arch"]) == ["w1", "w2", "arch"]
    assert update_order("w2, arch ,w1", ["w1", "w2", "arch"]) == ["w2", "arch", "w1"]
    lfm = get_skill("lfm")
    assert resolve_config(lfm, {"order": "w1,w2,arch"})["order"] == "w1,w2,arch"
    with pytest.raises(ConfigError, match="every level name once.*levels: w1,w2,arch"):
        resolve_config(lfm, {"order": "arch,w1"})
    with pytest.raises(ConfigError, match="takes only bottom_up or top_down"):
        resolve_config(get_skill("ce"), {"order": "a,b"})


def test_w2_starts_independent_of_w1_unless_asked_to_copy() -> None:
    for init, same in (("independent", False), ("copy", True)):
        built, _, _ = build_lfm({**TINY, "w2_init": init})
        w1, w2 = built.program.levels["w1"].params, built.program.levels["w2"].params
        assert w1.keys() == w2.keys()
        assert all(torch.equal(w1[k], w2[k]) for k in w1) is same, init


def test_upper_level_uses_the_codes_decay_and_cosine_schedule() -> None:
    built, _, cfg = build_lfm({**TINY, "epochs": 4})
    groups = built.program.levels["arch"].optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [1e-5, 1e-4, 0.0]
    assert [g["lazy"] for g in groups] == [False, False, True]
    factor = cosine_to_floor(1e-2, 2.5e-4, 4)
    assert factor(0) == 1.0 and factor(4) == pytest.approx(0.025)
    assert cosine_to_floor(1e-4, 2.5e-4, 4)(4) == 1.0  # never raised above its start


def test_ablations_and_similarities_match_hand_computations() -> None:
    gen = torch.Generator().manual_seed(0)
    ft, fv = torch.randn(3, 4, generator=gen), torch.randn(5, 4, generator=gen)
    yt, yv = torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1, 2, 2])
    u, r = torch.rand(5, generator=gen), torch.rand(5, generator=gen) + 0.5
    z = (yt[:, None] == yv[None, :]).float()

    def expected(scores, zz=z, uu=u):
        return torch.sigmoid((torch.softmax(scores, 1) * zz * uu) @ r)

    cos = torch.nn.functional.cosine_similarity(ft[:, None], fv[None], dim=2)
    torch.testing.assert_close(example_weights(ft, fv, yt, yv, u, r, similarity="cosine"),
                               expected(cos))
    torch.testing.assert_close(example_weights(ft, fv, yt, yv, u, r, similarity="neg_l2"),
                               expected(-torch.cdist(ft, fv)))
    dot = ft @ fv.T
    torch.testing.assert_close(example_weights(ft, fv, yt, yv, u, r, ablate="u"),
                               expected(dot, uu=torch.ones(5)))
    torch.testing.assert_close(example_weights(ft, fv, yt, yv, u, r, ablate="z"),
                               expected(dot, zz=torch.ones(3, 5)))
    torch.testing.assert_close(example_weights(ft, fv, yt, yv, u, r, ablate="x"),
                               expected(torch.zeros(3, 5)))  # uniform x = 1/5


def test_ablation_knobs_run_end_to_end() -> None:
    reports: list[dict] = []
    run_skill("lfm", {**TINY, "ablate": "x", "similarity": "neg_l2", "r_mode": "per_position",
                      "upper_clip": "joint", "upper_schedule": "constant"},
              lambda m, _d: reports.append(dict(m)))
    assert math.isfinite(reports[0]["a_std"])


def test_learned_weights_plot_is_drawn_from_epoch_metrics(tmp_path: Path) -> None:
    history = {e: trend_values({"r_mean": 1.0 + e / 10, "r_std": 0.01 * e, "a_mean": 0.55,
                                "a_std": 0.01, "a_weight_clean_mean": 0.56,
                                "a_weight_noisy_mean": 0.5, "genotype": json.dumps([])})
               for e in (1, 2, 3)}
    assert set(history[1]) == {"r_mean", "r_std", "a_mean", "a_std", "a_weight_clean_mean",
                               "a_weight_noisy_mean"}
    assert draw_weight_trends(history, tmp_path / "w.png").stat().st_size > 0


def test_learned_weights_png_is_staged_with_every_epoch_so_far(tmp_path: Path) -> None:
    from skillearn.platform.renderers import ArtifactStager

    queued: list[tuple[str, dict]] = []
    folders = iter(range(100))

    def stage() -> Path:
        folder = tmp_path / f"stage{next(folders)}"
        folder.mkdir()
        return folder

    stager = ArtifactStager(stage, lambda key, op: queued.append((key, op)))
    for epoch in (1, 2):  # what lfm's epoch report declares (no store is contacted here)
        metrics = {"r_mean": 1.0, "r_std": 0.01 * epoch, "val_acc": 0.5}
        stager.on_result("t1", epoch, {**metrics,
                                       "artifacts": artifacts_payload(weight_trends(metrics))})
    stager.on_result("t2", 1, {"val_acc": 0.5,  # nothing learned: nothing declared
                               "artifacts": artifacts_payload(weight_trends({"val_acc": 0.5}))})
    assert [key for key, _ in queued] == ["t1", "t1"]
    assert (Path(queued[-1][1]["dir"]) / "learned_weights.png").stat().st_size > 0
    assert sorted(stager.history("t1", "weight_trends", "learned_weights")) == [1, 2]
