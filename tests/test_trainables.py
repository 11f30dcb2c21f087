"""Skills in a plain Python loop: LFM's weighting, metrics, checkpoints and resume, retraining."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from skillearn.artifacts import ArchitectureWeights, GenotypeArtifact, Table, find_artifact
from skillearn.data import DataSpec, load_data
from skillearn.data.augment import random_shift
from skillearn.search_spaces.darts import Genotype
from skillearn.trainables import ConfigError, get_skill, resolve_config
from skillearn.trainables.checkpoint import CHECKPOINT_FILE, CheckpointError
from skillearn.trainables.lfm import example_weights
from skillearn.trainables.retraining import RECIPES, RetrainPlan, retrain_genotype
from skillearn.trainables.runner import run_skill

TINY = {"dataset": "synthetic", "nodes": 1, "cells": 1, "channels": 4, "batch_size": 16,
        "steps_per_epoch": 2, "epochs": 1}
CORE_METRICS = {"train_loss", "val_acc", "test_acc", "worst_class_acc", "arch_entropy",
                "params", "ms_per_step", "peak_mem_mb", "search_time_s"}


class Collector:
    """A reporter that keeps every epoch's metrics and a copy of every checkpoint."""

    def __init__(self, keep: Path | None = None) -> None:
        self.metrics: list[dict] = []
        self.keep = keep

    def __call__(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.metrics.append(dict(metrics))
        assert checkpoint_dir is not None and (Path(checkpoint_dir) / CHECKPOINT_FILE).is_file()
        if self.keep is not None:
            target = self.keep / f"epoch{metrics['epoch']}"
            shutil.copytree(checkpoint_dir, target)


def test_example_weights_match_a_hand_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    ft, fv = torch.randn(3, 4, generator=gen), torch.randn(5, 4, generator=gen)
    yt, yv = torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1, 2, 2])
    u, r = torch.rand(5, generator=gen), torch.rand(5, generator=gen) + 0.5
    a = example_weights(ft, fv, yt, yv, u, r)
    for i in range(3):
        dots = [float(ft[i] @ fv[j]) for j in range(5)]
        norm = sum(math.exp(d) for d in dots)
        s = sum(float(r[j]) * math.exp(dots[j]) / norm * float(yt[i] == yv[j]) * float(u[j])
                for j in range(5))
        assert a[i].item() == pytest.approx(1 / (1 + math.exp(-s)), rel=1e-5)


@pytest.mark.parametrize("skill", ["darts", "lfm"])
def test_one_epoch_reports_the_core_metrics(skill: str) -> None:
    reporter = Collector()
    run_skill(skill, TINY, reporter)
    (metrics,) = reporter.metrics
    assert CORE_METRICS <= set(metrics)
    assert 0.0 <= metrics["val_acc"] <= 1.0 and metrics["params"] > 0
    genotype = Genotype.from_dict(find_artifact(metrics, GenotypeArtifact).genotype)
    assert len(genotype.normal) == 2  # one node, two inputs
    alphas = find_artifact(metrics, ArchitectureWeights)
    assert len(alphas.alphas["alpha_normal"]) == 2  # edges of a 1-node cell
    per_class = find_artifact(metrics, Table, "per_class_acc")
    assert [row[0] for row in per_class.rows] == list(range(len(per_class.rows)))
    present = [row[1] for row in per_class.rows if not math.isnan(row[1])]
    assert min(present) == pytest.approx(metrics["worst_class_acc"], abs=1e-4)
    texts = {k for k, v in metrics.items() if not isinstance(v, int | float)}
    assert texts <= {"artifacts", "encoder"}  # lfm names the encoder `auto` resolved to
    # the default hypergradient check: every upper level, finite differences against exact
    upper = {"darts": {"arch"}, "lfm": {"w2", "arch"}}[skill]
    assert {k.split("/")[1] for k in metrics if k.startswith("hypergrad_")} == upper
    for level in upper:
        assert -1.0 <= metrics[f"hypergrad_cos/{level}"] <= 1.0
        assert 0.0 <= metrics[f"hypergrad_relerr/{level}"] < 2.0


def test_lfm_upper_level_learns_encoder_and_r() -> None:
    reporter = Collector()
    run_skill("lfm", {**TINY, "r_lr": 0.1}, reporter)
    assert reporter.metrics[0]["r_std"] > 0  # r moved, and not uniformly: per-example hypergrads


@pytest.mark.parametrize("skill", ["darts", "lfm"])
def test_resume_continues_exactly_where_it_stopped(skill: str, tmp_path: Path) -> None:
    config = {**TINY, "epochs": 2, "fd_gap_every": 0}
    straight = Collector(keep=tmp_path)
    run_skill(skill, config, straight)
    resumed = Collector()
    run_skill(skill, config, resumed, resume_from=str(tmp_path / "epoch1"))
    assert [m["epoch"] for m in resumed.metrics] == [2]
    for key in ("train_loss", "val_acc", "artifacts"):
        assert resumed.metrics[0][key] == straight.metrics[1][key], key


def test_corrupt_checkpoint_is_named(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=str(tmp_path / CHECKPOINT_FILE)):
        run_skill("darts", TINY, Collector(), resume_from=str(tmp_path))


def test_bad_configs_are_refused_with_the_reason() -> None:
    darts = get_skill("darts")
    with pytest.raises(ConfigError, match="unknown setting 'w_learning_rate'"):
        resolve_config(darts, {"w_learning_rate": 0.1})
    with pytest.raises(ConfigError, match="below its minimum"):
        resolve_config(darts, {"noise_rate": -0.1})
    with pytest.raises(ConfigError, match="not one of"):
        resolve_config(darts, {"method": "newton"})
    with pytest.raises(ConfigError, match="does not support method 'first_order'"):
        resolve_config(get_skill("lfm"), {"method": "first_order"})
    with pytest.raises(ConfigError, match="unknown skill 'dart'; available: .*darts.*lfm"):
        get_skill("dart")


def test_random_shift_moves_pixels_within_the_pad() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    shifted = random_shift(x, torch.Generator().manual_seed(3), pad=1)
    assert shifted.shape == x.shape
    nonzero = shifted[shifted != 0]
    assert set(nonzero.tolist()) <= set(x.flatten().tolist())


def test_retraining_learns_the_synthetic_task() -> None:
    data = load_data(DataSpec(name="synthetic"))
    genotype = Genotype(normal=(("sep_conv_3x3", 0), ("skip_connect", 1)), normal_concat=(2,),
                        reduce=(("max_pool_3x3", 0), ("skip_connect", 1)), reduce_concat=(2,))
    plan = RetrainPlan(RECIPES["fast"], "test", epochs=25, channels=8, cells=2)
    metrics = retrain_genotype(genotype, data, torch.device("cpu"), plan, seed=0)
    assert metrics["retrain_test_acc"] > 0.5  # 10 classes: chance is 0.1
    assert metrics["retrain_params"] > 0


def test_bf16_autocast_runs_the_search_steps() -> None:
    reporter = Collector()
    run_skill("darts", {**TINY, "amp": "bf16", "method": "exact"}, reporter)
    (metrics,) = reporter.metrics
    assert math.isfinite(metrics["train_loss"]) and 0.0 <= metrics["val_acc"] <= 1.0


def test_fused_cells_knob_picks_the_cell_layout() -> None:
    from skillearn.search_spaces.darts.supernet import FusedSearchCell, SearchCell
    from skillearn.trainables.setup import Setup, build_supernet, resolve_space, use_fused_cells

    assert use_fused_cells("auto", (1, 8, 8)) and use_fused_cells("auto", (3, 16, 16))
    assert not use_fused_cells("auto", (3, 32, 32))
    assert use_fused_cells("on", (3, 32, 32)) and not use_fused_cells("off", (1, 8, 8))
    data = load_data(DataSpec(name="synthetic"))
    for setting, cell_type in (("auto", FusedSearchCell), ("off", SearchCell)):
        cfg = resolve_config(get_skill("darts"), {**TINY, "fused_cells": setting})
        space, _ = resolve_space(cfg, data)
        net = build_supernet(Setup(config=cfg, data=data, device=torch.device("cpu"),
                                   space=space))
        assert all(isinstance(cell, cell_type) for cell in net.cells)
        assert net.channels_last
    with pytest.raises(ConfigError, match="fused_cells"):
        resolve_config(get_skill("darts"), {"fused_cells": "sometimes"})


def test_call_with_swaps_only_what_differs_and_keeps_tied_weights_tied() -> None:
    from torch import nn
    from torch.func import functional_call

    from skillearn.trainables.weights import call_with

    torch.manual_seed(0)
    x = torch.randn(2, 3)
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    other = {k: t.detach() * 2 for k, t in net.named_parameters()}
    assert torch.equal(call_with(net, other, (x,)), functional_call(net, other, (x,)))
    assert torch.equal(call_with(net, dict(net.named_parameters()), (x,)), net(x))
    tied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tied[1].weight = tied[0].weight  # one parameter, two names: both must be replaced
    zeros = {"0.weight": torch.zeros(3, 3)}
    assert torch.equal(call_with(tied, zeros, (x,)), functional_call(tied, zeros, (x,)))
    assert not torch.equal(call_with(tied, zeros, (x,)), tied(x))


def test_call_with_swaps_parameters_and_buffers_and_restores_them_even_on_error() -> None:
    from torch import nn
    from torch.func import functional_call

    from skillearn.trainables.weights import call_with

    torch.manual_seed(0)
    x = torch.randn(4, 3)
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).eval()
    own = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    swapped = {"0.weight": own["0.weight"].detach() * 2, "1.running_mean": torch.ones(3)}
    expected = functional_call(net, swapped, (x,))
    assert torch.equal(call_with(net, swapped, (x,)), expected)
    assert not torch.equal(net(x), expected)
    assert all(t is own[k] for k, t in [*net.named_parameters(), *net.named_buffers()])
    with pytest.raises(RuntimeError):  # a wrong shape fails inside the forward
        call_with(net, {"0.weight": torch.zeros(2, 2)}, (x,))
    assert all(t is own[k] for k, t in [*net.named_parameters(), *net.named_buffers()])
    # a name the module does not register is left to functional_call (which ignores it here)
    assert torch.equal(call_with(net, {"nope": torch.zeros(1)}, (x,)), net(x))
