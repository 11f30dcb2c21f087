"""The reweighting protocol of the papers: a small clean validation split, the meta set out of the
training part, seeded training augmentation, MW-Net's variants and inputs, full-budget mwnet_nas."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from skillearn.artifacts import Curve, find_artifact
from skillearn.data import data_spec
from skillearn.knobs import ConfigError
from skillearn.mlo import Level, MultilevelProgram
from skillearn.platform.cli import main
from skillearn.reweighting.mwnet import MetaWeightNet, input_width, weight_inputs
from skillearn.trainables.mwnet import mwnet_train_loss, theta_optimizer
from skillearn.trainables.registry import get_skill, resolve_config
from skillearn.trainables.runner import run_skill


@pytest.mark.parametrize(("skill", "expected"), [("darts", 0.5), ("lfm", 0.5), ("mwnet", 0.1),
                                                 ("mwnet_nas", 0.1), ("lfm_dr", 0.1), ("ce", 0.1)])
def test_val_fraction_defaults_by_kind_and_is_honoured(skill: str, expected: float) -> None:
    config = resolve_config(get_skill(skill))
    assert config["val_fraction"] == expected
    assert data_spec(config).val_fraction == expected
    assert data_spec(resolve_config(get_skill(skill), {"val_fraction": 0.3})).val_fraction == 0.3


@pytest.mark.parametrize("value", [0.0, 1.0, -0.2])
def test_val_fraction_out_of_range_is_refused(value: float) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        resolve_config(get_skill("mwnet"), {"val_fraction": value})


def test_bad_val_fraction_fails_up_front(tmp_path: Path, monkeypatch, capsys) -> None:
    import ray

    monkeypatch.chdir(tmp_path)
    code = main(["sweep", "mwnet", "--set", "val_fraction=1.0", "--storage", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("skillearn: error: ") and "val_fraction" in err[0]
    assert not ray.is_initialized()


# ------------------------------------------------------------------------ MW-Net variants
def _imbalance_variant_program():
    """MW-Net's class-imbalance variant on a linear classifier, in float64, for the engine."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 4, generator=gen, dtype=torch.float64), torch.arange(12) % 3
    xm, ym = torch.randn(6, 4, generator=gen, dtype=torch.float64), torch.arange(6) % 3
    torch.manual_seed(0)
    net = nn.Linear(4, 3).double()
    vnet = MetaWeightNet(1, (5,)).double()
    w, theta = dict(net.named_parameters()), dict(vnet.named_parameters())
    lr = 0.3

    def forward(params, xb):
        return functional_call(net, params, (xb,)), None

    def inputs_of(losses, features, labels):
        return weight_inputs(losses, features, detach=False)

    train_loss = mwnet_train_loss(forward, vnet, w, normalize=True, inputs_of=inputs_of,
                                  detach_input=False)

    def meta_loss(p, b):
        xb, yb, _ = b["meta"]
        return F.cross_entropy(functional_call(net, p["w"], (xb,)), yb)

    program = MultilevelProgram([
        Level("w", w, torch.optim.SGD(w.values(), lr=lr), train_loss),
        Level("theta", theta, torch.optim.SGD(theta.values(), lr=1e-5), meta_loss,
              reads_lower=("w",)),
    ], method="exact", order="top_down")
    return program, {"train": (x, y, None), "meta": (xm, ym, None)}, (net, vnet, x, y, xm, ym, lr)


def test_imbalance_variant_differentiates_through_the_weight_net_input() -> None:
    """The engine's meta-gradient equals the class-imbalance code's: V reads the loss with its
    graph (`vnet(cost_v)`), weights normalised by their sum, virtual SGD step, backward."""
    program, batches, (net, vnet, x, y, xm, ym, lr) = _imbalance_variant_program()
    params = list(net.parameters())
    cost = F.cross_entropy(net(x), y, reduction="none")
    weights = vnet(cost[:, None])
    grads = torch.autograd.grad((cost * weights / weights.sum()).sum(), params, create_graph=True)
    stepped = [p - lr * g for p, g in zip(params, grads, strict=True)]
    meta = F.cross_entropy(xm @ stepped[0].T + stepped[1], ym)
    hand = torch.autograd.grad(meta, list(vnet.parameters()))
    exact, _ = program.gradient("theta", batches, method="exact")
    for got, want in zip(exact.values(), hand, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # and it is not the noise variant's (detached) meta-gradient
    detached = vnet(cost.detach()[:, None])
    grads = torch.autograd.grad((cost * detached / detached.sum()).sum(), params,
                                create_graph=True)
    stepped = [p - lr * g for p, g in zip(params, grads, strict=True)]
    meta = F.cross_entropy(xm @ stepped[0].T + stepped[1], ym)
    other = torch.autograd.grad(meta, list(vnet.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(exact.values(), other, strict=True))


def test_theta_optimizer_follows_the_variant() -> None:
    theta = {"p": torch.zeros(3, requires_grad=True)}
    noise = theta_optimizer(theta, resolve_config(get_skill("mwnet")))
    assert isinstance(noise, torch.optim.Adam) and noise.defaults["lr"] == 1e-3
    config = resolve_config(get_skill("mwnet"), {"mwnet_variant": "imbalance"})
    sgd = theta_optimizer(theta, config)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["lr"] == 1e-5 and sgd.defaults["nesterov"]
    assert sgd.defaults["weight_decay"] == config["w_wd"]


@pytest.mark.parametrize("skill", ["mwnet", "lfm_dr"])
def test_classifier_momentum_knob_is_the_optimizer_and_unrolls(skill: str) -> None:
    from skillearn.trainables.classifiers import classifier_optimizer

    w = {"p": torch.zeros(3, requires_grad=True)}
    plain = classifier_optimizer(w, resolve_config(get_skill(skill)))[0]
    nesterov = classifier_optimizer(w, resolve_config(get_skill(skill),
                                                      {"momentum": "nesterov"}))[0]
    assert not plain.defaults["nesterov"] and nesterov.defaults["nesterov"]
    reports: list[dict] = []
    run_skill(skill, {**CORRUPTED, "momentum": "nesterov", "method": "exact"},
              lambda m, _d: reports.append(dict(m)))
    assert math.isfinite(reports[-1]["train_loss"])


def test_weight_inputs_columns() -> None:
    losses = torch.tensor([0.5, 2.0], requires_grad=True)
    features = torch.ones(2, 3)
    labels = torch.tensor([2, 0])
    both = weight_inputs(losses, features, labels, num_classes=4)
    assert both.shape == (2, 1 + 3 + 4) and not both.requires_grad
    assert both[:, 4:].tolist() == [[0, 0, 1, 0], [1, 0, 0, 0]]
    only = weight_inputs(losses, features, labels, num_classes=4, use_loss=False)
    assert torch.equal(only, both[:, 1:])
    assert weight_inputs(losses, detach=False).requires_grad
    assert input_width("feature+label", 3, 4) == 7 and input_width("loss", 3, 4) == 1


CORRUPTED = {"dataset": "digits", "imbalance": 10, "noise_rate": 0.4, "epochs": 1,
             "steps_per_epoch": 2, "fd_gap_every": 0, "device": "cpu"}


@pytest.mark.parametrize(("skill", "overrides"), [
    ("mwnet", {"mwnet_variant": "imbalance"}),
    ("mwnet", {"mwnet_variant": "imbalance", "method": "finite_difference"}),
    ("mwnet_nas", {"mwnet_input": "feature", "mwnet_feature_layer": "layer2"}),
    ("mwnet_nas", {"mwnet_input": "feature+label", "mwnet_layers": 2, "mwnet_hidden_2": 10}),
])
def test_mwnet_variants_and_inputs_run(skill: str, overrides: dict) -> None:
    reports: list[dict] = []
    run_skill(skill, {**CORRUPTED, **overrides}, lambda m, _d: reports.append(dict(m)))
    (metrics,) = reports
    assert 0.0 <= metrics["weight_auc"] <= 1.0
    assert math.isfinite(metrics["train_loss"])
    assert find_artifact(metrics, Curve, "weight_function").x


# ------------------------------------------------------------------------ mwnet_nas budget
def _tuner(skill: str, tmp_path: Path):
    from skillearn.platform.sweep import build_tuner
    from skillearn.platform.validate import SweepSpec

    spec = SweepSpec(skill=skill, overrides={}, config=resolve_config(get_skill(skill)),
                     samples=2, storage=str(tmp_path / "runs"), name="s",
                     tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="e")
    return build_tuner(spec, concurrency=1)


def test_mwnet_nas_trials_are_not_stopped_early(tmp_path: Path) -> None:
    from ray.tune.schedulers import ASHAScheduler

    def scheduler(skill: str):
        return _tuner(skill, tmp_path)._local_tuner._tune_config.scheduler

    assert get_skill("mwnet_nas").early_stopping is False
    assert scheduler("mwnet_nas") is None  # TPE is told full-budget results only
    assert isinstance(scheduler("mwnet"), ASHAScheduler)
