"""DSRNA (Hosseini, Yang & Xie, CVPR 2021; thesis ch. 1): DARTS with a robustness term.

    w*(a) = argmin_w L_train(w, a)                              level `weights`
    a     = argmin_a L_val(w*(a), a) - gamma R(w*(a), a)       level `arch` (one-step unrolled)

R (`regularizer`): `jacobian` = -E_x[Jacobian size] (l2: Hoffman et al.'s squared Frobenius
norm; linf: sum_k |J_k|_1, see skillearn.robustness.jacobian), `certified` = the mean lower
bound of the true-class margin over the l_inf ball of radius `cert_eps` (IBP or CROWN-style
linear relaxation through every DARTS op, eval-mode BN), `combined` = their sum. The inner
level is the training loss only, as in the thesis. Per epoch (cadence `robust_every`) it logs
clean, FGSM and PGD accuracy and the mean certified radius on `robust_eval_size` test
examples, and the regulariser's value.

Backbone: `darts` or `darts_plus` (DARTS' own mixed ops); the thesis searches on PC-DARTS for
speed, but the certified bounds have no rules for partial channels yet, so `--backbone pc_darts`
is refused before Ray starts. Other deviations are in the README.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from skillearn.artifacts import EpochReport
from skillearn.knobs import ConfigError, Knob, Skill
from skillearn.robustness import (
    BOUND_METHODS,
    JACOBIAN_NORMS,
    PixelSpace,
    accuracy,
    certified_radius,
    fgsm,
    jacobian_norm,
    margin_lower_bound,
    pgd,
)
from skillearn.search_spaces.darts import SuperNet
from skillearn.trainables.architecture import ArchitectureState
from skillearn.trainables.darts import SKILL as DARTS
from skillearn.trainables.darts import darts_levels
from skillearn.trainables.setup import Built, Setup, build_supernet, program_for
from skillearn.trainables.weights import count_parameters, run_with

REGULARIZERS = ("jacobian", "certified", "combined")


def attack_budget(cfg: Mapping[str, Any], input_shape: tuple[int, ...]) -> float:
    """`attack_eps`, or its per-dataset default: the thesis' 8/255 for colour images and 0.3
    for MNIST-size grey ones; 8x8 digits get 0.1 (0.3 of an 8x8 glyph flips any classifier)."""
    if cfg["attack_eps"] > 0:
        return float(cfg["attack_eps"])
    if input_shape[0] == 3:
        return 8 / 255
    return 0.1 if input_shape[-1] <= 8 else 0.3


def robustness_term(net: SuperNet, tensors: Mapping[str, torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor, cfg: Mapping[str, Any], space: PixelSpace,
                    cert_eps: float) -> dict[str, torch.Tensor]:
    """The regulariser's parts on (x, y) with `tensors` (unrolled weights, alphas) in `net`:
    `jacobian` (mean Jacobian size, to be made small) and/or `margin_bound` (mean certified
    margin lower bound, to be made large). R = margin_bound - jacobian over those present."""
    parts: dict[str, torch.Tensor] = {}
    if cfg["regularizer"] in ("jacobian", "combined"):
        parts["jacobian"] = jacobian_norm(lambda z: run_with(net, z, tensors), x,
                                          cfg["jacobian_norm"], cfg["n_proj"]).mean()
    if cfg["regularizer"] in ("certified", "combined"):
        parts["margin_bound"] = margin_lower_bound(
            net, x, y, cert_eps * space.scale, cfg["bound"], tensors, (space.lo, space.hi)
        ).mean()
    return parts


def robustness(parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """R: larger is more robust (thesis: R_Jac = -Jacobian size, R_CB = the lower bound)."""
    return parts.get("margin_bound", 0.0) - parts.get("jacobian", 0.0)


# the backbones whose supernet the bounds read exactly (DARTS' own mixed ops); PC-DARTS' partial
# channels, DARTS-'s auxiliary skip and P-DARTS' pruned op sets have no bound rules yet
BOUNDED_BACKBONES = ("darts", "darts_plus")


def build(setup: Setup) -> Built:
    cfg = setup.config
    if cfg.get("backbone", "darts") not in BOUNDED_BACKBONES:
        raise ConfigError(f"robust runs on backbone {' or '.join(BOUNDED_BACKBONES)} (its "
                          f"certified bounds have no rules for {cfg['backbone']}'s cells yet)")
    net = build_supernet(setup)
    weights, arch = net.weight_parameters(), net.arch_parameters()
    space = PixelSpace.from_record(setup.data.record, setup.data.input_shape[0], setup.device)
    state = {"cert_eps": torch.tensor(float(cfg["cert_eps"]))}
    epochs_seen = [0]

    def train_loss(p, b):
        x, y, _ = b["train"]
        return F.cross_entropy(run_with(net, x, p["weights"], p["arch"]), y)

    def arch_loss(p, b):
        x, y, _ = b["val"]
        loss = F.cross_entropy(run_with(net, x, p["weights"], p["arch"]), y)
        if cfg["gamma"] == 0:
            return loss
        n = cfg["robust_batch"] or x.shape[0]
        parts = robustness_term(net, {**p["weights"], **p["arch"]}, x[:n], y[:n], cfg, space,
                                float(state["cert_eps"]))
        return loss - cfg["gamma"] * robustness(parts)

    levels = darts_levels(weights, arch, train_loss, arch_loss, cfg)
    eval_x = setup.data.test.x[: cfg["robust_eval_size"]].to(setup.device)
    eval_y = setup.data.test.y[: cfg["robust_eval_size"]].to(setup.device)
    budget = attack_budget(cfg, setup.data.input_shape)
    n_cert = min(cfg["cert_eval_size"], cfg["robust_eval_size"])

    def epoch_report() -> EpochReport:
        """The regulariser's value (every epoch; it also steers the adaptive cert_eps) and,
        every `robust_every` epochs, attack accuracies and the certified radius."""
        epochs_seen[0] += 1
        eps = float(state["cert_eps"])
        cfg_all = {**cfg, "regularizer": "combined"}
        parts = robustness_term(net, {}, eval_x, eval_y, cfg_all, space, eps)
        metrics: dict[str, Any] = {"jacobian_norm": float(parts["jacobian"].detach()),
                                   "margin_bound": float(parts["margin_bound"].detach()),
                                   "cert_eps": eps}
        if cfg["cert_eps_step"] > 0:  # thesis: move eps by the sign of the bound gap
            step = cfg["cert_eps_step"] if parts["margin_bound"] > 0 else -cfg["cert_eps_step"]
            state["cert_eps"].fill_(min(1.0, max(cfg["cert_eps_step"], eps + step)))
        if cfg["robust_every"] and epochs_seen[0] % cfg["robust_every"] == 0:
            gen = torch.Generator(device=setup.device).manual_seed(cfg["seed"])
            metrics.update({
                "clean_acc_eval": accuracy(net, eval_x, eval_y),
                "fgsm_acc": accuracy(net, fgsm(net, eval_x, eval_y, budget, space), eval_y),
                "pgd_acc": accuracy(net, pgd(net, eval_x, eval_y, budget, space,
                                             steps=cfg["pgd_steps"], generator=gen), eval_y),
                "attack_eps": budget,
                "cert_radius_mean": float(certified_radius(  # always the tighter bound
                    net, eval_x[:n_cert], eval_y[:n_cert], "crown", max_eps=1.0, min_eps=1e-9,
                    steps=8, valid_range=(space.lo, space.hi), scale=space.scale).mean()),
            })
        return EpochReport(metrics=metrics)

    return Built(
        program=program_for(levels, cfg),
        predict=net,
        modules=[net],
        state=state,
        architecture=ArchitectureState.of_supernet(net),
        param_count=count_parameters(weights),
        epoch_report=epoch_report,
    )


SKILL = Skill(
    name="robust",
    summary="DSRNA: DARTS whose architecture also maximises a robustness term (Jacobian "
            "size, certified margin bound, or both)",
    knobs={
        **DARTS.knobs,
        "gamma": Knob(0.01, "weight of the robustness term in the architecture objective "
                      "(thesis: 0.01)", low=0.0, high=100.0, tune=True, search=(0.0, 1.0)),
        "regularizer": Knob("jacobian", "robustness term R: jacobian (Jacobian norm), certified "
                            "(certified margin lower bound) or combined (their sum)",
                            choices=REGULARIZERS),
        "jacobian_norm": Knob("l2", "Jacobian size: l2 = squared Frobenius norm (Hoffman et "
                              "al.), linf = sum of row l1 norms (dual of l_inf attacks)",
                              choices=JACOBIAN_NORMS),
        "n_proj": Knob(1, "random projections per Jacobian estimate", low=1, high=64),
        "bound": Knob("ibp", "certified bound of the search-time term: ibp (intervals, cheap) or "
                      "crown (linear relaxation, the thesis' CNN-Cert family, tighter; costs "
                      "input-size forward passes per example)",
                      choices=BOUND_METHODS),
        "cert_eps": Knob(0.03, "l_inf radius (pixels in [0, 1]) of the certified margin bound "
                         "at the start (thesis: 0.03)", low=0.0, high=1.0),
        "cert_eps_step": Knob(0.005, "per-epoch change of cert_eps: up while the mean bound "
                              "is positive, down otherwise (0: fixed radius)", low=0.0, high=0.5),
        "robust_batch": Knob(16, "validation examples the robustness term sees per step "
                             "(0: the whole batch)", low=0, high=8192),
        "robust_eval_size": Knob(64, "test examples attacked and certified per evaluation",
                                 low=1, high=100_000),
        "cert_eval_size": Knob(16, "of those, examples whose certified radius is found (CROWN, "
                               "log-bisection on [1e-9, 1]: 9 bounds each)", low=1,
                               high=100_000),
        "robust_every": Knob(1, "attack and certify every this many epochs (0: never)",
                             low=0, high=10_000),
        "attack_eps": Knob(0.0, "l_inf budget of FGSM/PGD in [0, 1] pixels (0: 8/255 colour, "
                           "0.3 grey >8 px, 0.1 on 8x8 digits)", low=0.0, high=1.0),
        "pgd_steps": Knob(20, "PGD iterations (step eps/4, one random start)", low=1,
                          high=10_000),
    },
    build=build,
    levels=("weights", "arch"),
)
