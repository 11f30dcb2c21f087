"""Run any NAS skill on any search backbone, and diagnose every NAS search.

A NAS skill's `build` asks `build_supernet` for "a supernet" and declares its levels; it never
learns the backbone. `BackboneRun` does the rest around it:

- the supernet's variant (`search_spaces.darts.variants`): partial channels and edge
  normalisation (pc_darts), per-edge op sets and skip dropout (p_darts);
- per-epoch schedules: the architecture warm-up (the architecture's level is paused), DARTS−'s
  auxiliary-skip coefficient, P-DARTS' skip dropout;
- P-DARTS' stages: at the end of a stage the ops of each edge are pruned by alpha and the skill
  is built again, deeper (the same `Built` object is updated in place, so the runner's reference
  stays valid); the stage and the kept ops live in `Built.state`, and a resumed trial reads them
  from the checkpoint *before* building, so it continues in the right stage with the right ops;
- DARTS+'s early stop (`stopped`), read by the runner after each epoch;
- diagnostics of every NAS trial, as per-epoch metrics: `skip_count` of the derived normal cell,
  `hessian_eig` (dominant eigenvalue of the validation loss's Hessian in alpha, by power
  iteration on exact Hessian-vector products) and `time_<level>_s` (seconds in each level's
  steps in the epoch).
"""

from __future__ import annotations

import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from skillearn.artifacts import EpochReport, rows_table
from skillearn.data import BatchStream
from skillearn.knobs import ConfigError, Skill
from skillearn.mlo.curvature import dominant_hessian_eigenvalue
from skillearn.mlo.timing import LevelTimer
from skillearn.search_spaces.darts import SpaceConfig, SuperNet
from skillearn.search_spaces.darts.genotype import skip_count
from skillearn.search_spaces.darts.variants import BackboneSpace, Variant
from skillearn.trainables.backbone_knobs import p_darts_plan
from skillearn.trainables.checkpoint import CHECKPOINT_FILE
from skillearn.trainables.setup import Built, Setup
from skillearn.trainables.weights import run_with

STATE_PREFIX = "backbone."
PLAIN_SUPERNET = ("darts", "darts_plus")
PRUNED_LOGIT = -1e4  # how a pruned op's alpha is logged: softmax weight 0, still valid JSON


def auto_partial_channels(channels: int) -> int:
    """PC-DARTS' K = 4, or the largest of 2, 1 that still sends >= 2 channels through the
    mixed op (the reduced digits space has 8 channels: K = 4 leaves 2)."""
    for k in (4, 2):
        if channels % k == 0 and channels // k >= 2:
            return k
    return 1


def stage_epochs(total: int, stages: int) -> tuple[int, ...]:
    """Epochs per stage: equal shares, the first stages taking the remainder."""
    return tuple(total // stages + (1 if s < total % stages else 0) for s in range(stages))


def prune_ops(alpha: torch.Tensor, edge_ops: tuple[tuple[str, ...], ...], keep: int,
              all_ops: tuple[str, ...]) -> torch.Tensor:
    """P-DARTS' op-space pruning: a (edges, len(all_ops)) mask of each edge's `keep` ops with
    the largest softmax(alpha), in the space's op order."""
    weights = torch.softmax(alpha.detach().float().cpu(), dim=-1)
    mask = torch.zeros(len(edge_ops), len(all_ops), dtype=torch.bool)
    for e, ops in enumerate(edge_ops):
        top = torch.argsort(-weights[e], stable=True)[:keep]
        for k in top.tolist():
            mask[e, all_ops.index(ops[k])] = True
    return mask


def ops_of(mask: torch.Tensor, all_ops: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(op for op, kept in zip(all_ops, row.tolist(), strict=True) if kept)
                 for row in mask)


def saved_state(resume_from: str | None) -> tuple[int, dict[str, torch.Tensor]]:
    """(epoch, backbone state) of a checkpoint, read before building; (0, {}) when absent or
    unreadable (the runner's `load_checkpoint` then reports the problem)."""
    if not resume_from:
        return 0, {}
    try:
        payload = torch.load(Path(resume_from) / CHECKPOINT_FILE, map_location="cpu",
                             weights_only=True)
        state = {k: v for k, v in payload["state"].items() if k.startswith(STATE_PREFIX)}
        return int(payload["progress"]["epoch"]), state
    except Exception:  # noqa: BLE001 - reported by load_checkpoint with the file's name
        return 0, {}


def supernet_of(built: Built) -> SuperNet | None:
    return next((m for m in built.modules if isinstance(m, SuperNet)), None)


class BackboneRun:
    """Builds a skill on its backbone and drives the backbone's epochs (see module docstring).

    `built` is what the runner uses; `stopped` turns true when DARTS+ ends the search.
    """

    def __init__(self, skill: Skill, setup: Setup, resume_from: str | None = None) -> None:
        self.skill, self.setup = skill, setup
        cfg = setup.config
        self.stopped = False
        if "backbone" not in cfg:  # not a NAS skill: nothing to add
            self.built = skill.build(setup)
            return
        self.backbone: str = cfg["backbone"]
        self.all_ops = tuple(setup.space.ops)
        self.epoch, saved = saved_state(resume_from)
        self.timer = LevelTimer()
        if self.backbone == "p_darts":
            reduced = setup.data.input_shape[-1] <= 8 if cfg["space"] == "auto" else (
                cfg["space"] == "reduced")
            self.cells, self.keep, self.dropout = p_darts_plan(cfg, len(self.all_ops), reduced)
            self.stage_epochs = stage_epochs(cfg["epochs"], len(self.cells))
        else:
            self.cells, self.keep, self.dropout = (setup.space.cells,), (), (0.0,)
            self.stage_epochs = (cfg["epochs"],)
        full = torch.ones(setup.space.num_edges, len(self.all_ops), dtype=torch.bool)
        self.stage = int(saved.get(STATE_PREFIX + "stage", torch.tensor(0)))
        self.kept = {cell: saved.get(f"{STATE_PREFIX}kept_{cell}", full).clone()
                     for cell in ("normal", "reduce")}
        self.built = self._build()
        self._install(self.built)
        self._prepare(self.epoch)

    # ------------------------------------------------------------------------------- building
    def variant(self) -> Variant:
        cfg = self.setup.config
        if self.backbone == "pc_darts":
            k = cfg["partial_channels"] or auto_partial_channels(self.setup.space.channels)
            if self.setup.space.channels % k:
                raise ConfigError(f"partial_channels={k} must divide the supernet's "
                                  f"{self.setup.space.channels} channels")
            return Variant(partial_channels=k, edge_norm=True)
        if self.backbone == "p_darts":
            return Variant(normal_ops=ops_of(self.kept["normal"], self.all_ops),
                           reduce_ops=ops_of(self.kept["reduce"], self.all_ops),
                           max_normal_skips=cfg["p_darts_max_skips"])
        return Variant()

    def _build(self) -> Built:
        space = self.setup.space
        values = {f.name: getattr(space, f.name) for f in fields(space) if f.name != "variant"}
        values["cells"] = self.cells[self.stage]
        # darts and darts_plus keep DARTS' own supernet class; the others need the variant's
        # (DARTS− too: its auxiliary skip is the variant net's `aux_skip`)
        space = (SpaceConfig(**values) if self.backbone in PLAIN_SUPERNET
                 else BackboneSpace(**values, variant=self.variant()))
        stage_setup = replace(self.setup, space=space,
                              config={**self.setup.config,
                                      "epochs": self.stage_epochs[self.stage]})
        return self.skill.build(stage_setup)

    def _install(self, built: Built) -> None:
        """Make `self.built` run `built` (in place), with the backbone's hooks attached."""
        if built is not self.built:
            for f in fields(Built):
                setattr(self.built, f.name, getattr(built, f.name))
        target = self.built
        self.skill_report = target.epoch_report
        target.epoch_report = self._epoch_report
        if self.backbone == "p_darts" and target.architecture is not None:
            self.skill_alphas = target.architecture.alphas
            target.architecture = replace(target.architecture, alphas=self._full_width_alphas,
                                          ops=self.all_ops)
        target.program.timer = self.timer
        self.net = supernet_of(target)
        self.arch_level = None
        if self.net is not None:
            alpha = self.net.alpha_normal
            self.arch_level = next((name for name, level in target.program.levels.items()
                                    if any(p is alpha for p in level.params.values())), None)
        n_edges = self.setup.space.num_edges
        target.state.update({
            STATE_PREFIX + "stage": torch.tensor(self.stage),
            STATE_PREFIX + "kept_normal": self.kept["normal"].clone(),
            STATE_PREFIX + "kept_reduce": self.kept["reduce"].clone(),
            STATE_PREFIX + "rank": torch.full((2, n_edges, len(self.all_ops)), -1),
            STATE_PREFIX + "stable": torch.tensor(0),
        })

    def _full_width_alphas(self) -> dict[str, torch.Tensor]:
        """P-DARTS' alphas over the space's whole op list, pruned ops at `PRUNED_LOGIT`
        (softmax 0), so every epoch logs (edges, ops) matrices of one shape and op order."""
        alphas = dict(self.skill_alphas())
        for cell in ("normal", "reduce"):
            name = f"alpha_{cell}"
            if name in alphas:
                full = torch.full(self.kept[cell].shape, PRUNED_LOGIT)
                full[self.kept[cell]] = alphas[name].detach().float().cpu().reshape(-1)
                alphas[name] = full
        return alphas

    # ---------------------------------------------------------------------------- schedules
    def stage_start(self) -> int:
        return sum(self.stage_epochs[: self.stage])

    def warmup_epochs(self) -> int:
        return round(self.setup.config["arch_warmup"] * self.stage_epochs[self.stage])

    def _prepare(self, epoch: int) -> None:
        """Set the schedules for `epoch` (0-based): warm-up, DARTS− coefficient, skip dropout."""
        cfg, program = self.setup.config, self.built.program
        local = epoch - self.stage_start()
        warming = local < self.warmup_epochs()
        program.paused = {self.arch_level} if warming and self.arch_level else set()
        if self.net is None:
            return
        if self.backbone == "darts_minus":
            self.net.aux_skip = darts_minus_coefficient(cfg["darts_minus_beta"], epoch,
                                                        cfg["epochs"])
        if self.backbone == "p_darts":
            length = self.stage_epochs[self.stage]
            self.net.skip_dropout = self.dropout[self.stage] * (length - local - 1) / length

    # ------------------------------------------------------------------------- every epoch
    def _epoch_report(self) -> EpochReport:
        """The skill's report, the diagnostics, and the backbone's transitions after the epoch
        just trained (`self.epoch`, 0-based)."""
        report = self.skill_report() if self.skill_report else EpochReport()
        metrics: dict[str, Any] = report.metrics
        cfg = self.setup.config
        trained = self.epoch
        self.epoch += 1
        metrics.update({f"time_{name}_s": s for name, s in self.timer.collect().items()})
        metrics.update({f"mem_{name}_mb": mb for name, mb in self.timer.collect_memory().items()})
        architecture = self.built.architecture
        genotype = architecture.genotype() if architecture is not None else None
        if genotype is not None:
            metrics["skip_count"] = skip_count(genotype)
        every = cfg["hessian_every"]
        if self.net is not None and every and self.epoch % every == 0:
            started = time.perf_counter()
            metrics["hessian_eig"] = self.hessian_eigenvalue()
            metrics["hessian_s"] = time.perf_counter() - started  # what the diagnostic costs
        if self.backbone == "darts_minus" and self.net is not None:
            metrics["darts_minus_beta"] = float(self.net.aux_skip)
        if self.backbone == "p_darts":
            metrics["stage"] = self.stage
            report.artifacts.append(rows_table(
                "p_darts_kept_ops", ("stage", "cell", "edge", "ops"),
                ((self.stage, cell, edge, " ".join(ops))
                 for cell in ("normal", "reduce")
                 for edge, ops in enumerate(ops_of(self.kept[cell], self.all_ops)))))
            metrics["p_darts_ops_per_edge"] = int(self.kept["normal"][0].sum())  # numeric
            metrics["p_darts_skip_dropout"] = float(getattr(self.net, "skip_dropout", 0.0))
            end = self.stage_start() + self.stage_epochs[self.stage]
            if self.epoch == end and self.stage + 1 < len(self.cells):
                self.advance_stage()
        if self.backbone == "darts_plus" and genotype is not None and self.net is not None:
            self._darts_plus(genotype, trained)
            metrics["early_stopped"] = int(self.stopped)
        self._prepare(self.epoch)
        return report

    def advance_stage(self) -> None:
        """P-DARTS: prune every edge to the next stage's op count by alpha and build the
        deeper supernet (the benchmarks call it to time later stages)."""
        assert self.net is not None
        keep = self.keep[self.stage]
        for cell in ("normal", "reduce"):
            alpha = getattr(self.net, f"alpha_{cell}")
            current = ops_of(self.kept[cell], self.all_ops)
            self.kept[cell] = prune_ops(alpha, current, keep, self.all_ops)
        self.stage += 1
        self._install(self._build())

    def _darts_plus(self, genotype: Any, trained: int) -> None:
        """DARTS+'s stop: the normal cell has >= max skips, or alpha's ranking on every edge
        has not changed for the set number of epochs (both only once alpha moves)."""
        assert self.net is not None
        cfg, state = self.setup.config, self.built.state
        if trained < self.warmup_epochs():
            return
        rank = torch.stack([torch.argsort(-getattr(self.net, f"alpha_{c}").detach().cpu(),
                                          dim=-1, stable=True) for c in ("normal", "reduce")])
        same = bool(torch.equal(rank, state[STATE_PREFIX + "rank"]))
        state[STATE_PREFIX + "stable"].fill_(int(state[STATE_PREFIX + "stable"]) + 1 if same
                                             else 0)
        state[STATE_PREFIX + "rank"].copy_(rank)
        if (skip_count(genotype) >= cfg["darts_plus_max_skips"]
                or int(state[STATE_PREFIX + "stable"]) >= cfg["darts_plus_stable_epochs"]):
            self.stopped = True

    def hessian_eigenvalue(self) -> float:
        """Dominant eigenvalue of d^2 L_val / d alpha^2 at the supernet's current weights, on
        one fixed validation batch (train-mode BatchNorm, statistics restored; no skip
        dropout)."""
        net = self.net
        assert net is not None
        cfg, data = self.setup.config, self.setup.data
        x, y, _ = next(iter(BatchStream(data.val, min(cfg["batch_size"], len(data.val.y)),
                                        seed=cfg["seed"], device=self.setup.device)))
        names = [n for n in net.arch_parameters() if n.startswith("alpha_")]
        buffers = {k: b.detach().clone() for k, b in net.named_buffers()}
        dropout = getattr(net, "skip_dropout", 0.0)
        was_training = net.training
        net.train()
        if dropout:
            net.skip_dropout = 0.0
        try:
            def loss_at(alphas):
                return F.cross_entropy(run_with(net, x, dict(zip(names, alphas, strict=True))), y)

            return dominant_hessian_eigenvalue(
                loss_at, [net.arch_parameters()[n] for n in names], iters=cfg["hessian_iters"],
                generator=torch.Generator().manual_seed(cfg["seed"]))
        finally:
            with torch.no_grad():
                for k, b in net.named_buffers():
                    b.copy_(buffers[k])
            if dropout:
                net.skip_dropout = dropout
            net.train(was_training)


def darts_minus_coefficient(beta0: float, epoch: int, epochs: int) -> float:
    """DARTS−'s auxiliary-skip coefficient in `epoch` (0-based): beta0 * (1 - epoch / epochs),
    from beta0 in the first epoch towards 0 at the end."""
    return beta0 * (1.0 - epoch / epochs)

