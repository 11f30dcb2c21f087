"""LFM-DR (seed 000, eq. 9): the learned weights move, D_val is the meta set, b's direction."""

from __future__ import annotations

import shutil

import pytest
import torch

from skillearn.data import DataSpec, load_data
from skillearn.reweighting.trends import draw_weight_trends, has_trends, trend_values
from skillearn.trainables import get_skill, resolve_config
from skillearn.trainables.normalized_sgd import NormalizedSGD
from skillearn.trainables.runner import run_skill
from skillearn.trainables.setup import Setup

NOISY_DIGITS = {"dataset": "digits", "noise_rate": 0.4, "epochs": 1, "fd_gap_every": 0,
                "device": "cpu"}
MOVES_AT_LEAST = 0.01  # relative change ||x - x0|| / ||x0|| of b, r and V after one epoch


def _first_epoch(**overrides) -> dict:
    """One epoch with the default knobs; `epochs=1` changes nothing in that epoch (every
    schedule steps at the end of an epoch)."""
    reports: list[dict] = []
    run_skill("lfm_dr", {**NOISY_DIGITS, **overrides}, lambda m, _d: reports.append(dict(m)))
    return reports[0]


def test_default_b_v_r_move_within_one_epoch_and_b_prefers_clean_examples() -> None:
    metrics = _first_epoch()
    for name in ("b_change", "r_change", "V_change"):
        assert metrics[name] > MOVES_AT_LEAST, name
    assert metrics["weight_auc"] > 0.7  # b ranks clean above mislabelled examples
    assert metrics["weight_clean_mean"] > 1.0 > metrics["weight_noisy_mean"]
    for key in ("a_mean", "a_std", "a_weight_auc", "b_mean", "b_std", "r_mean", "r_std"):
        assert metrics[key] == metrics[key], key  # reported, not NaN


def test_code_rates_under_plain_sgd_leave_b_v_r_where_they_start() -> None:
    """The issue's defect, kept reachable as `upper_step=sgd`: the hypergradients are tiny."""
    metrics = _first_epoch(upper_step="sgd", b_lr=1e-2, encoder_lr=1e-5, r_lr=1e-5)
    assert max(metrics["b_change"], metrics["r_change"], metrics["V_change"]) < 1e-3


def test_eq9_as_written_raises_the_weights_of_mislabelled_examples() -> None:
    """b_path=mistakes: b reaches the meta loss only through W1 -> u -> a -> W2; its
    hypergradient lowers b where W1's step helps the meta examples (see the module docstring)."""
    metrics = _first_epoch(b_path="mistakes")
    assert metrics["b_change"] > MOVES_AT_LEAST
    assert metrics["weight_auc"] < 0.5
    assert metrics["weight_noisy_mean"] > metrics["weight_clean_mean"]


def test_d_val_is_the_meta_set() -> None:
    skill = get_skill("lfm_dr")
    cfg = resolve_config(skill, {"dataset": "digits", "noise_rate": 0.4, "meta_per_class": 3})
    assert get_skill("lfm_dr").knobs["meta_per_class"].default == \
        get_skill("mwnet").knobs["meta_per_class"].default == 10
    data = load_data(DataSpec(name="digits", noise_rate=0.4, meta_per_class=3))
    assert len(data.meta) == 30 and not set(data.meta.index.tolist()) & set(
        data.val.index.tolist())
    built = skill.build(Setup(config=cfg, data=data, device=torch.device("cpu"), space=None))
    upper = built.program.levels["upper"].params
    assert upper["r"].shape == (len(data.meta),)  # one r_j per meta example
    rows, meta_rows = torch.arange(16), torch.arange(10)
    batches = {"train": (data.train.x[rows], data.train.y[rows], data.train.index[rows]),
               "meta": tuple(t[meta_rows] for t in (data.meta.x, data.meta.y, data.meta.index))}
    grads, _ = built.program.gradient("upper", batches, method="exact")  # no "val" batch needed
    assert float(grads["r"][meta_rows].abs().sum()) > 0
    assert float(grads["r"][10:].abs().sum()) == 0  # r is indexed by meta example
    assert float(grads["b"][rows].abs().sum()) > 0 and float(grads["b"][16:].abs().sum()) == 0


def test_normalized_sgd_moves_each_group_by_its_lr_and_leaves_zero_gradients_alone() -> None:
    tiny, large = torch.zeros(4, requires_grad=True), torch.zeros(3, requires_grad=True)
    opt = NormalizedSGD([{"params": [tiny], "lr": 0.1}, {"params": [large], "lr": 0.01}], lr=1.0)
    tiny.grad = torch.tensor([1e-9, -1e-9, 0.0, 0.0])
    large.grad = torch.tensor([300.0, -300.0, 300.0])
    opt.step()
    assert tiny.detach().tolist() == pytest.approx([-0.1, 0.1, 0.0, 0.0])
    assert large.detach().tolist() == pytest.approx([-0.01, 0.01, -0.01])


def test_learned_weights_plot(tmp_path) -> None:
    result = {"a_mean": 0.5, "a_std": 0.1, "b_mean": 1.0, "b_std": 0.2, "r_mean": "x",
              "weight_clean_mean": 1.2, "weight_noisy_mean": 0.7}
    values = trend_values(result)
    assert values == {"a_mean": 0.5, "a_std": 0.1, "b_mean": 1.0, "b_std": 0.2,
                      "weight_clean_mean": 1.2, "weight_noisy_mean": 0.7}
    assert has_trends(values) and not has_trends(trend_values({"r_mean": "x"}))
    history = {1: values, 2: {**values, "b_mean": 1.1}}
    assert draw_weight_trends(history, tmp_path / "w.png").stat().st_size > 0


def test_resume_continues_b_v_r_exactly(tmp_path) -> None:
    config = {**NOISY_DIGITS, "epochs": 2, "steps_per_epoch": 2}
    straight: list[dict] = []

    def keep(metrics: dict, directory: str | None) -> None:
        straight.append(dict(metrics))
        shutil.copytree(directory, tmp_path / f"epoch{metrics['epoch']}")

    run_skill("lfm_dr", config, keep)
    resumed: list[dict] = []
    run_skill("lfm_dr", config, lambda m, _d: resumed.append(dict(m)),
              resume_from=str(tmp_path / "epoch1"))
    assert [m["epoch"] for m in resumed] == [2]
    for key in ("train_loss", "b_change", "r_change", "V_change", "weight_auc", "a_mean"):
        assert resumed[0][key] == straight[1][key], key
