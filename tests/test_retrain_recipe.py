"""Retraining recipes: DARTS' evaluation recipe piece by piece (cutout, auxiliary head, drop-path)
and its selection by input size, down to `skillearn retrain --recipe darts` end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient

from skillearn.data import Split
from skillearn.platform.cli import main
from skillearn.search_spaces.darts import DiscreteNetwork, Genotype
from skillearn.search_spaces.darts.genotype import DARTS_V2
from skillearn.search_spaces.darts.network import DiscreteCell, drop_path
from skillearn.trainables import runner
from skillearn.trainables.registry import get_skill, resolve_config
from skillearn.trainables.retraining import (
    RECIPES,
    RetrainPlan,
    augment,
    choose_recipe,
    drop_path_rate,
    model_parameters,
    plan_retrain,
    recipe_loss,
    train_network,
)

GENOTYPE = Genotype(
    normal=(("sep_conv_3x3", 0), ("skip_connect", 1)), normal_concat=(2,),
    reduce=(("max_pool_3x3", 0), ("sep_conv_3x3", 1)), reduce_concat=(2,),
)


# --------------------------------------------------------------------------- selection


def test_darts_recipe_is_dartss_evaluation_setting_at_32_px() -> None:
    darts = RECIPES["darts"]
    assert (darts.batch_size, darts.lr, darts.momentum, darts.weight_decay) == (96, 0.025, 0.9,
                                                                               3e-4)
    assert (darts.epochs, darts.cells, darts.channels, darts.grad_clip) == (600, 20, 36, 5.0)
    assert (darts.auxiliary_weight, darts.drop_path, darts.schedule) == (0.4, 0.2, "cosine")
    assert darts.pad(32) == 4 and darts.cutout_length(32) == 16 and darts.flip


def test_the_recipe_knob_offers_exactly_the_recipes() -> None:
    from skillearn.trainables.common import COMMON_KNOBS

    assert COMMON_KNOBS["retrain_recipe"].choices == ("auto", *RECIPES)


def test_auto_picks_darts_for_cifar_sized_inputs_and_fast_below() -> None:
    recipe, why = choose_recipe("auto", (3, 32, 32))
    assert recipe.name == "darts" and "32 px" in why and "CIFAR-sized" in why
    recipe, why = choose_recipe("auto", (1, 8, 8))
    assert recipe.name == "fast" and "8 px" in why
    assert choose_recipe("darts", (1, 8, 8))[0].name == "darts"
    assert choose_recipe("fast", (3, 32, 32))[0].name == "fast"


def test_explicit_epochs_channels_and_cells_override_the_recipe() -> None:
    cifar = SimpleNamespace(input_shape=(3, 32, 32), num_classes=10)
    digits = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10)
    config = resolve_config(get_skill("darts"), {})
    plan = plan_retrain(config, cifar)
    assert (plan.recipe.name, plan.epochs, plan.cells, plan.channels) == ("darts", 600, 20, 36)
    plan = plan_retrain({**config, "retrain_channels": 8, "retrain_cells": 5}, cifar, epochs=3)
    assert (plan.epochs, plan.cells, plan.channels) == (3, 5, 8)
    plan = plan_retrain(config, digits)  # fast: the reduced preset's network, 30 epochs
    assert (plan.recipe.name, plan.epochs, plan.cells, plan.channels) == ("fast", 30, 4, 16)
    assert "recipe fast (auto: 8 px" in plan.describe()


# --------------------------------------------------------------------------- cutout


def test_darts_augmentation_cuts_a_hole_into_every_image_and_fast_does_not() -> None:
    x = torch.ones(64, 3, 32, 32)
    centre = (slice(None), slice(None), slice(4, 28), slice(4, 28))  # never reached by a 4 px crop
    holes = (augment(x, RECIPES["darts"], torch.Generator().manual_seed(0))[centre] == 0)
    per_image = holes.all(dim=1).flatten(1).sum(1)  # zeroed pixels, all channels at once
    assert (per_image > 0).all() and (per_image <= 16 * 16).all()
    assert (per_image == 16 * 16).any()  # a hole inside the centre is exactly 16 x 16
    shifted = augment(x, RECIPES["fast"], torch.Generator().manual_seed(0))
    assert (shifted[centre] == 1).all()


def test_augmentation_is_seeded() -> None:
    x = torch.randn(8, 3, 32, 32)
    a = augment(x, RECIPES["darts"], torch.Generator().manual_seed(3))
    b = augment(x, RECIPES["darts"], torch.Generator().manual_seed(3))
    c = augment(x, RECIPES["darts"], torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- auxiliary head


@pytest.mark.parametrize("px", [32, 8])
def test_auxiliary_head_gives_class_logits_in_training_only(px: int) -> None:
    net = DiscreteNetwork(GENOTYPE, channels=4, cells=3, num_classes=7, in_channels=3,
                          auxiliary=True)
    x = torch.randn(5, 3, px, px)
    logits, aux = net.train().forward_with_auxiliary(x)
    assert logits.shape == (5, 7) and aux is not None and aux.shape == (5, 7)
    assert net.eval().forward_with_auxiliary(x)[1] is None
    plain = DiscreteNetwork(GENOTYPE, channels=4, cells=3, num_classes=7, in_channels=3)
    assert plain.train().forward_with_auxiliary(x)[1] is None
    assert plain.auxiliary_head is None and net.auxiliary_head is not None


def test_darts_v2_at_20_cells_x_36_channels_has_dartss_parameter_count() -> None:
    # DARTS' train.py logs "param size = 3.349342MB" for this network (auxiliary head excluded)
    net = DiscreteNetwork(DARTS_V2, channels=36, cells=20, num_classes=10, in_channels=3,
                          auxiliary=True)
    assert model_parameters(net) == 3_349_342
    assert sum(p.numel() for p in net.parameters()) > 3_349_342  # the head exists, uncounted


def test_recipe_loss_adds_04_of_the_auxiliary_loss_in_training_only() -> None:
    torch.manual_seed(0)
    net = DiscreteNetwork(GENOTYPE, channels=4, cells=3, num_classes=10, in_channels=3,
                          auxiliary=True)
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    darts = RECIPES["darts"]
    net.train()
    logits, aux = net.forward_with_auxiliary(x)
    expected = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
    loss = recipe_loss(net, x, y, darts)
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, F.cross_entropy(logits, y))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in net.auxiliary_head.parameters())
    net.eval()
    torch.testing.assert_close(recipe_loss(net, x, y, darts), F.cross_entropy(net(x), y))


# --------------------------------------------------------------------------- drop-path


def test_drop_path_zeroes_whole_samples_at_the_rate_and_rescales_the_rest() -> None:
    torch.manual_seed(0)
    out = drop_path(torch.ones(20000, 2, 3, 3), 0.2)
    dropped = (out == 0).flatten(1).all(1)
    kept = (out == 1 / 0.8).flatten(1).all(1)
    assert torch.equal(dropped | kept, torch.ones_like(dropped))  # whole samples, nothing mixed
    assert dropped.float().mean().item() == pytest.approx(0.2, abs=0.01)


def test_a_cell_drops_its_op_paths_in_training_but_never_identity_and_not_in_eval() -> None:
    torch.manual_seed(0)
    two_convs = Genotype(normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1)), normal_concat=(2,),
                         reduce=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1)), reduce_concat=(2,))
    cell = DiscreteCell(two_convs, 4, 4, 4, reduction=False, reduction_prev=False)
    s0, s1 = torch.randn(4000, 4, 4, 4), torch.randn(4000, 4, 4, 4)
    with torch.no_grad():
        node = cell.train()(s0, s1, 0.5)
        both_dropped = (node == 0).flatten(1).all(1).float().mean().item()
        assert both_dropped == pytest.approx(0.25, abs=0.03)  # each path dropped with p = 0.5
        assert torch.equal(cell.eval()(s0, s1, 0.5), cell(s0, s1, 0.0))  # identity in eval
        with_skip = DiscreteCell(GENOTYPE, 4, 4, 4, reduction=False, reduction_prev=False)
        node = with_skip.train()(s0, s1, 0.9)
        assert not (node == 0).flatten(1).all(1).any()  # the skip path is never dropped


def test_training_ramps_drop_path_linearly_and_anneals_lr_per_epoch() -> None:
    generator = torch.Generator().manual_seed(0)
    n = 24
    pool = Split(x=torch.randn(n, 3, 8, 8, generator=generator),
                 y=torch.randint(0, 3, (n,), generator=generator),
                 clean_y=torch.zeros(n, dtype=torch.long), index=torch.arange(n))
    recipe = dataclasses.replace(RECIPES["darts"], batch_size=n)  # one step per epoch
    plan = RetrainPlan(recipe, "test", epochs=4, channels=4, cells=3)
    net = DiscreteNetwork(GENOTYPE, channels=4, cells=3, num_classes=3, in_channels=3,
                          auxiliary=True)
    records: list[dict[str, float]] = []
    train_network(net, pool, torch.device("cpu"), plan, seed=0, on_epoch=records.append)
    assert [r["drop_path_prob"] for r in records] == pytest.approx([0.0, 0.05, 0.1, 0.15])
    assert [r["drop_path_prob"] for r in records] == pytest.approx(
        [drop_path_rate(0.2, e, 4) for e in range(4)])
    assert [r["lr"] for r in records] == pytest.approx(
        [0.025 * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(4)])
    assert all(np.isfinite(r["train_loss"]) for r in records)
    assert not net.training


# --------------------------------------------------------------------------- end to end


def test_a_trials_retrain_epochs_follow_the_recipe_knob(monkeypatch) -> None:
    plans: list[RetrainPlan] = []
    real = runner.retrain_genotype

    def spy(genotype, data, device, plan, seed, on_epoch=None):
        plans.append(plan)
        return real(genotype, data, device, plan, seed, on_epoch)

    monkeypatch.setattr(runner, "retrain_genotype", spy)
    reported: list[dict] = []
    config = {"dataset": "synthetic", "nodes": 1, "cells": 1, "channels": 4, "batch_size": 16,
              "steps_per_epoch": 2, "epochs": 1, "fd_gap_every": 0, "retrain_epochs": 1,
              "retrain_recipe": "darts", "retrain_channels": 4, "retrain_cells": 3}
    runner.run_skill("darts", config, lambda metrics, _: reported.append(metrics))
    (plan,) = plans
    assert (plan.recipe.name, plan.epochs, plan.channels, plan.cells) == ("darts", 1, 4, 3)
    assert 0.0 <= reported[-1]["retrain_test_acc"] <= 1.0


def _tiny_imagefolder(root: Path, classes: int = 3, per_class: int = 10) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            image[..., c] += 180  # each class one dominant colour
            Image.fromarray(image).save(root / f"class{c}" / f"{i}.png")


def test_retrain_command_runs_the_darts_recipe_on_32_px_images(tmp_path: Path, capsys) -> None:
    _tiny_imagefolder(tmp_path / "images")
    genotype = tmp_path / "genotype.json"
    genotype.write_text(GENOTYPE.to_json())
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code = main(["retrain", "--genotype", str(genotype), "--dataset", "imagefolder",
                 "--data-root", str(tmp_path / "images"), "--recipe", "darts", "--epochs", "1",
                 "--channels", "4", "--cells", "3", "--seeds", "0", "--tracking-uri", uri])
    assert code == 0
    out = capsys.readouterr().out
    assert "recipe darts (chosen, 32 px inputs): 1 epochs, 3 cells x 4 channels, batch 96" in out
    assert "auxiliary head 0.4" in out and "drop-path 0 -> 0.2" in out
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("skillearn").experiment_id])
    assert run.data.params["retrain_plan_recipe"] == "darts"
    assert run.data.params["retrain_plan_cells"] == "3"
    assert 0.0 <= run.data.metrics["retrain_test_acc_mean"] <= 1.0
