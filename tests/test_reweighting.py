"""Reweighting skills: losses, MW-Net's meta-gradient, weight metrics, the NAS space, end to end."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from skillearn.artifacts import Curve, WeightHistogram, find_artifact
from skillearn.mlo import Level, MultilevelProgram
from skillearn.platform.search_space import define_by_run
from skillearn.reweighting import (
    MetaWeightNet,
    class_balanced_loss,
    class_balanced_weights,
    focal_loss,
    shot_accuracies,
    shot_groups,
    weight_auc,
    weight_means,
    weighted_cross_entropy,
)
from skillearn.reweighting.mwnet import MWNET_INPUTS
from skillearn.reweighting.plots import draw_weight_function, draw_weight_histogram
from skillearn.trainables import get_skill
from skillearn.trainables.classifiers import make_classifier
from skillearn.trainables.mwnet import mwnet_train_loss
from skillearn.trainables.runner import run_skill

# ------------------------------------------------------------------------------- losses
LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]])
LABELS = torch.tensor([0, 2, 1])


def _true_class_probability(i: int) -> float:
    row = [math.exp(v) for v in LOGITS[i].tolist()]
    return row[int(LABELS[i])] / sum(row)


def test_weighted_cross_entropy_is_the_weighted_batch_mean() -> None:
    weights = torch.tensor([0.2, 1.0, 0.5])
    expected = sum(-float(weights[i]) * math.log(_true_class_probability(i))
                   for i in range(3)) / 3
    assert weighted_cross_entropy(LOGITS, LABELS, weights).item() == pytest.approx(expected)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss_matches_its_formula(gamma: float) -> None:
    expected = sum(-((1 - p) ** gamma) * math.log(p)
                   for p in map(_true_class_probability, range(3))) / 3
    assert focal_loss(LOGITS, LABELS, gamma).item() == pytest.approx(expected, rel=1e-6)


def test_class_balanced_weights_use_the_effective_number() -> None:
    counts, beta = [100, 10, 1], 0.9
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    expected = [r * 3 / sum(raw) for r in raw]
    weights = class_balanced_weights(counts, beta)
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    assert class_balanced_weights(counts, 0.0).tolist() == pytest.approx([1.0, 1.0, 1.0])
    loss = class_balanced_loss(LOGITS, LABELS, weights)
    hand = sum(-expected[int(LABELS[i])] * math.log(_true_class_probability(i))
               for i in range(3)) / 3
    assert loss.item() == pytest.approx(hand, rel=1e-6)


# ------------------------------------------------------------------------ meta-gradient
def _tiny_mwnet_program(method: str):
    """MW-Net on a linear classifier, in float64, as levels for the engine."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 4, generator=gen, dtype=torch.float64), torch.arange(12) % 3
    xm, ym = torch.randn(6, 4, generator=gen, dtype=torch.float64), torch.arange(6) % 3
    torch.manual_seed(0)
    net = nn.Linear(4, 3).double()
    vnet = MetaWeightNet(1, (5,)).double()
    w, theta = dict(net.named_parameters()), dict(vnet.named_parameters())
    lr, wd = 0.3, 5e-4

    def forward(params, xb):
        return functional_call(net, params, (xb,)), None

    train_loss = mwnet_train_loss(forward, vnet, w, normalize=False)

    def meta_loss(p, b):
        xb, yb, _ = b["meta"]
        return F.cross_entropy(functional_call(net, p["w"], (xb,)), yb)

    program = MultilevelProgram([
        Level("w", w, torch.optim.SGD(w.values(), lr=lr, momentum=0.9, weight_decay=wd),
              train_loss),
        Level("theta", theta, torch.optim.Adam(theta.values(), lr=1e-3), meta_loss,
              reads_lower=("w",)),
    ], method=method, order="top_down")
    batches = {"train": (x, y, None), "meta": (xm, ym, None)}
    return program, batches, (net, vnet, x, y, xm, ym, lr, wd)


def _hand_meta_gradient(net, vnet, x, y, xm, ym, lr, wd) -> list[torch.Tensor]:
    """MW-Net's original computation: a virtual SGD step with create_graph, then backward."""
    params = list(net.parameters())
    cost = F.cross_entropy(net(x), y, reduction="none")
    weights = vnet(cost.detach()[:, None])
    grads = torch.autograd.grad((weights * cost).mean(), params, create_graph=True)
    stepped = [p - lr * (g + wd * p) for p, g in zip(params, grads, strict=True)]
    meta = F.cross_entropy(xm @ stepped[0].T + stepped[1], ym)
    return list(torch.autograd.grad(meta, list(vnet.parameters())))


def test_mwnet_meta_gradient_exact_and_finite_difference_match_double_backward() -> None:
    """The skill's own level loss, through the engine, against MW-Net's hand-written step."""
    program, batches, setup = _tiny_mwnet_program("exact")
    hand = _hand_meta_gradient(*setup)
    exact, _ = program.gradient("theta", batches, method="exact")
    for got, want in zip(exact.values(), hand, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert sum(float(g.abs().sum()) for g in hand) > 0
    fd, _ = program.gradient("theta", batches, method="finite_difference")
    for got, want in zip(fd.values(), hand, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6)
    first, _ = program.gradient("theta", batches, method="first_order")
    assert all(float(g.abs().max()) == 0 for g in first.values())  # why first_order is refused


# ------------------------------------------------------------------------------ metrics
def test_weight_auc_ranks_clean_above_noisy() -> None:
    noisy = torch.tensor([False, False, True, True, False])
    assert weight_auc(torch.tensor([0.9, 0.8, 0.1, 0.2, 0.7]), noisy) == 1.0
    assert weight_auc(torch.tensor([0.1, 0.2, 0.9, 0.8, 0.3]), noisy) == 0.0
    assert weight_auc(torch.tensor([0.9, 0.1, 0.5, 0.2, 0.7]), noisy) == pytest.approx(4 / 6)
    assert math.isnan(weight_auc(torch.rand(4), torch.zeros(4, dtype=torch.bool)))
    clean_mean, noisy_mean = weight_means(torch.tensor([1.0, 0.5, 0.0]),
                                          torch.tensor([False, False, True]))
    assert (clean_mean, noisy_mean) == (0.75, 0.0)


def test_shot_groups_use_absolute_thresholds_on_large_data() -> None:
    groups = shot_groups([500, 300, 150, 100, 50, 20, 19, 5])
    assert groups == {"many": [0, 1, 2], "medium": [3, 4, 5], "few": [6, 7]}


def test_shot_groups_fall_back_to_terciles_on_small_data() -> None:
    counts = [70, 54, 42, 33, 26, 20, 15, 12, 9, 7]  # digits at imbalance 10
    assert shot_groups(counts) == {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}
    assert shot_groups([50] * 4) == {"many": [], "medium": [0, 1, 2, 3], "few": []}
    acc = shot_accuracies([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, float("nan")], counts)
    assert acc["many_shot_acc"] == pytest.approx(0.9)
    assert acc["medium_shot_acc"] == pytest.approx(0.55)
    assert acc["few_shot_acc"] == pytest.approx(0.25)  # NaN (class absent from test) ignored


def test_plots_are_written(tmp_path) -> None:
    curves = [([0.0, 1.0, 2.0], [0.6, 0.5, 0.3]), ([0.0, 1.0, 2.0], [0.7, 0.4, 0.1])]
    assert draw_weight_function(curves, tmp_path / "curve.png").stat().st_size > 0
    hist = draw_weight_histogram([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], tmp_path / "hist.png")
    assert hist.stat().st_size > 0


def test_mwnet_nas_space_suggests_only_active_knobs() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = define_by_run(get_skill("mwnet_nas"), fixed={"dataset": "digits"})
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    seen_layers, seen_inputs = set(), set()
    for _ in range(25):
        trial = study.ask()
        assert space(trial) == {"dataset": "digits"}
        params = trial.params
        layers = params["mwnet_layers"]
        seen_layers.add(layers)
        seen_inputs.add(params["mwnet_input"])
        expected = {"mwnet_layers", "mwnet_input"} | {f"mwnet_hidden_{k}"
                                                     for k in range(1, layers + 1)}
        if "feature" in params["mwnet_input"]:
            expected.add("mwnet_feature_layer")
        assert set(params) == expected  # nothing inactive, no optimiser knobs
        study.tell(trial, float(layers))
    assert seen_layers == {1, 2, 3} and seen_inputs == set(MWNET_INPUTS)


# ------------------------------------------------------------------------ end to end
CORRUPTED = {"dataset": "digits", "imbalance": 10, "noise_rate": 0.4, "epochs": 1,
             "steps_per_epoch": 2, "fd_gap_every": 0, "device": "cpu"}
SHOT_KEYS = {"many_shot_acc", "medium_shot_acc", "few_shot_acc"}
WEIGHT_KEYS = {"weight_auc", "weight_clean_mean", "weight_noisy_mean"}


def _one_epoch(skill: str, **overrides) -> dict:
    reports: list[dict] = []
    run_skill(skill, {**CORRUPTED, **overrides}, lambda m, _d: reports.append(dict(m)))
    (metrics,) = reports
    assert 0.0 <= metrics["val_acc"] <= 1.0 and SHOT_KEYS <= set(metrics)
    return metrics


@pytest.mark.parametrize("skill, overrides", [
    ("mwnet", {}),
    ("mwnet", {"method": "finite_difference", "meta_per_class": 5}),
    ("mwnet_nas", {"mwnet_layers": 2, "mwnet_hidden_2": 10, "mwnet_input": "loss+feature",
                   "mwnet_feature_layer": "layer2"}),
    ("lfm_dr", {"batch_size": 32}),
])
def test_learned_weight_skills_report_weight_metrics(skill: str, overrides: dict) -> None:
    metrics = _one_epoch(skill, **overrides)
    assert WEIGHT_KEYS <= set(metrics)
    assert 0.0 <= metrics["weight_auc"] <= 1.0
    histogram = find_artifact(metrics, WeightHistogram)
    weights, noisy = histogram.weights, histogram.is_noisy
    assert len(weights) == len(noisy) > 0 and 0 < sum(noisy) < len(noisy)
    curve = find_artifact(metrics, Curve, "weight_function")
    assert curve.x and len(curve.x) == len(curve.y)
    if skill == "lfm_dr":
        assert 0.0 <= metrics["a_weight_auc"] <= 1.0


@pytest.mark.parametrize("skill", ["ce", "focal", "class_balanced"])
def test_baselines_run_as_one_level_programs(skill: str) -> None:
    metrics = _one_epoch(skill)
    assert metrics["params"] > 0


def test_classifier_exposes_intermediate_features() -> None:
    for shape in ((1, 8, 8), (3, 32, 32)):
        net = make_classifier("auto", shape, 10)
        logits, feature = net(torch.randn(2, *shape), feature_layer="layer2")
        assert logits.shape == (2, 10) and feature.shape == (2, net.feature_dims["layer2"])


def test_mwnet_input_at_current_weights_follows_the_weights() -> None:
    """V's input at the current w is computed once per weight version (the finite-difference
    pair shares it): after real steps move w, the loss must read the new current losses."""
    program, batches, (net, vnet, *_) = _tiny_mwnet_program("finite_difference")
    w, theta = program.levels["w"].params, program.levels["theta"].params
    loss = program.levels["w"].loss
    shifted = {k: t.detach() + 0.1 for k, t in w.items()}
    loss({"w": shifted, "theta": theta}, batches)  # fills the cache at the first weights
    for _ in range(2):
        program.step(batches)
    fresh = mwnet_train_loss(lambda params, xb: (functional_call(net, params, (xb,)), None),
                             vnet, w, normalize=False)
    cached = loss({"w": shifted, "theta": theta}, batches)
    torch.testing.assert_close(cached, fresh({"w": shifted, "theta": theta}, batches),
                               rtol=0, atol=0)
    loss({"w": w, "theta": theta}, batches)  # at the current w: leaves its losses behind
    reused = loss({"w": shifted, "theta": theta}, batches)
    torch.testing.assert_close(reused, cached, rtol=0, atol=0)
