"""Search backbones (PC-DARTS, P-DARTS, DARTS−, DARTS+) and the diagnostics of every NAS trial."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from skillearn.artifacts import ArchitectureWeights, GenotypeArtifact, Table, find_artifact
from skillearn.mlo.curvature import dominant_hessian_eigenvalue
from skillearn.search_spaces.darts import SpaceConfig
from skillearn.search_spaces.darts.genotype import derive_from_strengths, skip_count
from skillearn.search_spaces.darts.space import REDUCED_OPS
from skillearn.search_spaces.darts.variants import (
    PartialMixedEdge,
    Variant,
    VariantSuperNet,
    channel_shuffle,
)
from skillearn.trainables import ConfigError, get_skill, resolve_config
from skillearn.trainables.backbones import darts_minus_coefficient, prune_ops, stage_epochs
from skillearn.trainables.runner import run_skill
from skillearn.trainables.weights import run_with
from tests.test_mlo_timing import RESETTABLE
from tests.test_trainables import TINY, Collector

SPACE = SpaceConfig(ops=REDUCED_OPS, nodes=2, cells=3, channels=8, in_channels=1)


def test_channel_shuffle_interleaves_the_groups() -> None:
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert channel_shuffle(x, 1) is x
    stacked = torch.randn(2, 3, 8, 4, 4)  # (N, edges, C, H, W): the fused cell's layout
    for e in range(3):
        assert torch.equal(channel_shuffle(stacked, 4, dim=2)[:, e],
                           channel_shuffle(stacked[:, e], 4))


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channel_edge_mixes_a_quarter_and_passes_the_rest(stride: int) -> None:
    edge = PartialMixedEdge(8, stride, REDUCED_OPS, k=4).eval()
    convs = [m for m in edge.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.in_channels == 2 for c in convs)  # the ops see C/K channels
    x = torch.randn(3, 8, 6, 6)
    out = edge(x, torch.zeros(len(REDUCED_OPS)))  # ops weighted 0: only the bypass is left
    assert out.shape == (3, 8, 6 // stride, 6 // stride)
    rest = x[:, 2:] if stride == 1 else F.max_pool2d(x[:, 2:], 2, 2)
    unshuffled = torch.cat([torch.zeros_like(x[:, :2, ::stride, ::stride]), rest], 1)
    assert torch.equal(out, channel_shuffle(unshuffled, 4))


def _pair(variant: Variant) -> tuple[VariantSuperNet, VariantSuperNet]:
    torch.manual_seed(0)
    fused = VariantSuperNet(SPACE, fused=True, variant=variant)
    edgewise = VariantSuperNet(SPACE, fused=False, variant=variant)
    edgewise.load_state_dict(fused.edgewise_state_dict())
    return fused, edgewise


@pytest.mark.parametrize("nhwc", [False, True])
def test_pc_darts_fused_and_edge_by_edge_cells_compute_the_same_function(nhwc: bool) -> None:
    fused, edgewise = _pair(Variant(partial_channels=4, edge_norm=True))
    with torch.no_grad():
        fused.beta_normal.copy_(torch.randn(5))
    edgewise.load_state_dict(fused.edgewise_state_dict())
    if nhwc:  # the channel slices of an NHWC state are strided views
        fused.use_channels_last()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(fused(x), edgewise(x), rtol=1e-4, atol=1e-5)


def test_beta_enters_the_forward_and_the_genotype() -> None:
    net = VariantSuperNet(SPACE, fused=True, variant=Variant(partial_channels=4, edge_norm=True))
    assert {"beta_normal", "beta_reduce"} <= set(net.arch_parameters())
    assert not {"beta_normal", "beta_reduce"} & set(net.weight_parameters())
    x = torch.randn(4, 1, 8, 8)
    net(x).sum().backward()
    assert net.beta_normal.grad is not None and net.beta_normal.grad.abs().sum() > 0
    changed = {"beta_normal": net.beta_normal.detach() + torch.tensor([5.0, 0, 0, 0, 0])}
    assert not torch.allclose(run_with(net, x, changed), net(x))

    # node 1 reads states 0, 1, 2 (rows 2, 3, 4); alpha favours row 2 strongly...
    with torch.no_grad():
        net.alpha_normal.zero_()
        net.alpha_normal[:, 2] = torch.tensor([1.0, 1.0, 4.0, 2.0, 1.0])
        net.beta_normal.zero_()
    assert [j for _, j in net.genotype().normal[2:]] == [0, 1]
    with torch.no_grad():  # ...but beta weights row 2 to almost nothing: edge strength drops it
        net.beta_normal.copy_(torch.tensor([0.0, 0.0, -10.0, 0.0, 0.0]))
    assert sorted(j for _, j in net.genotype().normal[2:]) == [1, 2]


def test_p_darts_pruning_keeps_the_top_ops_by_alpha() -> None:
    ops = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")
    alpha = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0], [5.0, 0.0, 0.0, 1.0, 2.0]])
    mask = prune_ops(alpha, (ops, ops), 3, ops)
    assert mask.tolist() == [[False, True, True, True, False], [True, False, False, True, True]]
    # a second pruning reads alpha's columns in the edge's current op order
    current = (("max_pool_3x3", "skip_connect", "sep_conv_3x3"),) * 2
    mask = prune_ops(torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]]), current, 2, ops)
    kept = [[op for op, k in zip(ops, row, strict=True) if k] for row in mask.tolist()]
    assert kept == [["skip_connect", "sep_conv_3x3"], ["max_pool_3x3", "sep_conv_3x3"]]


def test_p_darts_skip_limit_strikes_the_weakest_skips() -> None:
    ops = (("skip_connect", "sep_conv_3x3"),) * 9  # 3 nodes: 2 + 3 + 4 edges
    strengths = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.95, 0.05], [0.2, 0.1],
                              [0.6, 0.4], [0.55, 0.1], [0.1, 0.5], [0.2, 0.3]])
    free = derive_from_strengths(strengths, strengths, ops, ops, 3)
    assert skip_count(free) == 6
    capped = derive_from_strengths(strengths, strengths, ops, ops, 3, max_normal_skips=2)
    assert skip_count(capped) == 2
    # the two strongest skips survive (rows 3 and 0: strengths 0.95 and 0.9)
    kept = [(k // 2, j) for k, (op, j) in enumerate(capped.normal) if op == "skip_connect"]
    assert kept == [(0, 0), (1, 1)]
    assert sum(op == "skip_connect" for op, _ in capped.reduce) == 6  # the cap is the normal's


def _kept_ops(metrics: dict, cell: str) -> list[list[str]]:
    """Each edge's kept ops in `cell`, from the epoch's declared `p_darts_kept_ops` table."""
    table = find_artifact(metrics, Table, "p_darts_kept_ops")
    return [ops.split() for _, kind, _, ops in table.rows if kind == cell]


def _alphas(metrics: dict) -> dict:
    return find_artifact(metrics, ArchitectureWeights).alphas


P_DARTS = {**TINY, "nodes": 2, "cells": 0, "epochs": 3, "backbone": "p_darts", "ops":
           ",".join(REDUCED_OPS), "p_darts_cells": "1,2,3", "p_darts_keep": "3,2",
           "p_darts_skip_dropout": "0.0", "fd_gap_every": 0, "hessian_every": 0,
           "arch_warmup": 0.0}


def test_p_darts_resumes_in_the_right_stage_with_the_right_ops(tmp_path: Path) -> None:
    straight = Collector(keep=tmp_path)
    run_skill("darts", P_DARTS, straight)
    assert [m["stage"] for m in straight.metrics] == [0, 1, 2]
    kept = [_kept_ops(m, "normal") for m in straight.metrics]
    assert [len(kept[s][0]) for s in range(3)] == [4, 3, 2]
    assert [m["p_darts_ops_per_edge"] for m in straight.metrics] == [4, 3, 2]
    assert all(set(kept[2][e]) <= set(kept[1][e]) for e in range(5))
    last = _alphas(straight.metrics[2])["alpha_normal"]  # logged over all 4 ops...
    assert [sum(a > -1e3 for a in row) for row in last] == [2] * 5  # ...2 of them kept
    for epoch in (1, 2):  # killed after stage 0 and after stage 1
        resumed = Collector()
        run_skill("darts", P_DARTS, resumed, resume_from=str(tmp_path / f"epoch{epoch}"))
        assert [m["stage"] for m in resumed.metrics] == [m["stage"] for m in
                                                         straight.metrics[epoch:]]
        first, same_epoch = resumed.metrics[0], straight.metrics[epoch]
        assert first["train_loss"] == same_epoch["train_loss"], epoch
        for cell in ("normal", "reduce"):
            assert _kept_ops(first, cell) == _kept_ops(same_epoch, cell), (epoch, cell)
        assert _alphas(first) == _alphas(same_epoch), epoch
        assert (find_artifact(first, GenotypeArtifact).genotype
                == find_artifact(same_epoch, GenotypeArtifact).genotype), epoch


def test_darts_minus_coefficient_decays_linearly_to_zero() -> None:
    assert [darts_minus_coefficient(1.0, e, 4) for e in range(4)] == [1.0, 0.75, 0.5, 0.25]
    reporter = Collector()
    run_skill("darts", {**TINY, "epochs": 3, "backbone": "darts_minus", "hessian_every": 0},
              reporter)
    assert [m["darts_minus_beta"] for m in reporter.metrics] == pytest.approx([1, 2 / 3, 1 / 3])
    plain = Collector()
    run_skill("darts", {**TINY, "epochs": 3, "hessian_every": 0}, plain)
    assert reporter.metrics[0]["train_loss"] != plain.metrics[0]["train_loss"]  # skip in use
    net = VariantSuperNet(SPACE)
    net.aux_skip = 0.25
    w, _ = net.cell_weights(reduction=False)
    extra = w - torch.softmax(net.alpha_normal, -1)
    skip = REDUCED_OPS.index("skip_connect")
    torch.testing.assert_close(extra[:, skip], torch.full((5,), 0.25))
    assert extra[:, [k for k in range(4) if k != skip]].abs().max() < 1e-7


def test_darts_plus_stops_once_the_alpha_ranking_is_stable() -> None:
    reporter = Collector()
    run_skill("darts", {**TINY, "epochs": 4, "backbone": "darts_plus", "arch_lr": 1e-6,
                        "darts_plus_stable_epochs": 1, "darts_plus_max_skips": 16,
                        "hessian_every": 0}, reporter)
    assert [m["early_stopped"] for m in reporter.metrics] == [0, 1]


def test_arch_warmup_pauses_the_architecture_and_levels_are_timed() -> None:
    reporter = Collector()
    run_skill("darts", {**TINY, "epochs": 2, "arch_warmup": 0.5, "hessian_every": 0}, reporter)
    first, second = reporter.metrics
    assert "time_arch_s" not in first and first["time_weights_s"] > 0
    assert second["time_arch_s"] > 0 and "skip_count" in second


def test_power_iteration_matches_the_explicit_hessian() -> None:
    torch.manual_seed(0)
    space = SpaceConfig(ops=("max_pool_3x3", "skip_connect", "sep_conv_3x3"), nodes=1, cells=2,
                        channels=4, in_channels=1)
    net = VariantSuperNet(space, fused=False, variant=Variant(partial_channels=2,
                                                              edge_norm=True)).eval()
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 10, (8,))
    shapes = [net.alpha_normal.shape, net.alpha_reduce.shape]

    def loss_at(alphas):
        return F.cross_entropy(run_with(net, x, {"alpha_normal": alphas[0],
                                                 "alpha_reduce": alphas[1]}), y)

    flat = torch.cat([net.alpha_normal.detach().flatten(), net.alpha_reduce.detach().flatten()])
    n = shapes[0].numel()

    def flat_loss(v):
        return loss_at([v[:n].view(shapes[0]), v[n:].view(shapes[1])])

    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(flat_loss, flat))
    dominant = eigenvalues[eigenvalues.abs().argmax()]
    estimate = dominant_hessian_eigenvalue(
        loss_at, [net.alpha_normal, net.alpha_reduce], iters=100,
        generator=torch.Generator().manual_seed(0))
    assert estimate == pytest.approx(float(dominant), rel=1e-3)


def test_every_backbone_composes_with_lfm() -> None:
    reporter = Collector()
    run_skill("lfm", {**TINY, "backbone": "pc_darts", "batch_size": 16}, reporter)
    (metrics,) = reporter.metrics
    assert find_artifact(metrics, ArchitectureWeights) is not None and "hessian_eig" in metrics
    assert {"time_w1_s", "time_w2_s"} <= set(metrics) and metrics["skip_count"] >= 0
    if RESETTABLE:  # peak memory per level (the CPU counter is reset through Linux's /proc)
        assert all(metrics[f"mem_{level}_mb"] > 0 for level in ("w1", "w2", "arch"))


def test_backbone_settings_are_checked_and_presets_filled() -> None:
    darts = get_skill("darts")
    pc = resolve_config(darts, {"backbone": "pc_darts"})
    assert (pc["batch_size"], pc["w_lr"], pc["arch_lr"], pc["arch_warmup"]) == (256, 0.1, 6e-4,
                                                                                0.3)
    assert resolve_config(darts, {"backbone": "pc_darts", "batch_size": 32})["batch_size"] == 32
    assert stage_epochs(4, 3) == (2, 1, 1)
    bad = [
        ({"partial_channels": 4}, "needs backbone=pc_darts"),
        ({"backbone": "pc_darts", "partial_channels": 8, "channels": 12}, "must divide"),
        ({"backbone": "p_darts", "p_darts_keep": "5,6"}, "must decrease"),
        ({"backbone": "p_darts", "epochs": 2}, "at least that"),
        ({"backbone": "p_darts", "p_darts_cells": "5,x"}, "comma-separated integers"),
        ({"backbone": "p_darts", "fused_cells": "on"}, "fused cells"),
        ({"backbone": "darts_minus", "ops": "max_pool_3x3,sep_conv_3x3"}, "skip_connect"),
        ({"backbone": "pdarts"}, "not one of"),
    ]
    for overrides, message in bad:
        with pytest.raises(ConfigError, match=message):
            resolve_config(darts, overrides)
    with pytest.raises(ConfigError, match="unknown setting 'backbone'"):
        resolve_config(get_skill("mwnet"), {"backbone": "pc_darts"})


CLI_REFUSED = [
    (["sweep", "darts", "--backbone", "pdarts"], "invalid choice: 'pdarts'"),
    (["sweep", "mwnet", "--backbone", "pc_darts"], "unknown setting 'backbone'"),
    (["sweep", "lfm", "--backbone", "p_darts", "--epochs", "2"], "at least that"),
    (["sweep", "darts", "--set", "partial_channels=3"], "partial_channels=3 is not one of"),
    (["sweep", "darts", "--set", "hessian_every=1.5"], "must be an integer"),
]


@pytest.mark.parametrize(("argv", "needle"), CLI_REFUSED, ids=[" ".join(a) for a, _ in CLI_REFUSED])
def test_backbone_flags_are_refused_in_one_line_before_ray(argv, needle, tmp_path, monkeypatch,
                                                           capsys) -> None:
    from skillearn.platform import cli, sweep

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep, "run_sweep", lambda spec: pytest.fail("the sweep would run"))
    code = cli.main([*argv, "--storage", str(tmp_path / "runs")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines


def test_backbone_table_runs_each_backbone_and_summarises(tmp_path: Path, capsys) -> None:
    from benchmarks import backbone_table

    payload = backbone_table.main([
        "--skills", "darts", "--backbones", "pc_darts", "--seeds", "0,1",
        "--epochs", "1", "--retrain-epochs", "0", "--dataset", "synthetic", "--threads", "1",
        "--set", "steps_per_epoch=2", "--set", "nodes=1", "--set", "channels=4",
        "--set", "cells=1", "--set", "batch_size=16", "--set", "hessian_every=0",
        "--json", str(tmp_path / "t.json")])
    assert [(r["backbone"], r["seed"]) for r in payload["rows"]] == [("pc_darts", 0),
                                                                     ("pc_darts", 1)]
    assert all(r["skip_count"] is not None and r["search_time_s"] > 0 for r in payload["rows"])
    assert re.search(r"\| darts +\| pc_darts +\| 2 +\| [0-9.]+ ± ", capsys.readouterr().out)


def test_the_dry_run_builds_the_backbone_before_ray(tmp_path, monkeypatch, capsys) -> None:
    """Settings only the data can refute (the digits space has 4 ops) fail in the dry run."""
    from skillearn.platform import cli, sweep

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep, "run_sweep", lambda spec: pytest.fail("the sweep would run"))
    code = cli.main(["sweep", "darts", "--backbone", "p_darts", "--set", "p_darts_keep=5,3",
                     "--storage", str(tmp_path / "runs")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "must decrease from the 4 ops" in lines[0], lines
