"""DARTS (Liu et al., 2019): bi-level NAS, the baseline every other NAS skill extends.

    w*(a) = argmin_w L_train(w, a)          level `weights`
    a     = argmin_a L_val(w*(a), a)        level `arch`, reads `weights` (one-step unrolled)

`method=first_order` is DARTS 1st order; `finite_difference` is its 2nd order with the
central-difference Hessian-vector product; `exact` differentiates the unrolled step exactly.
Defaults are DARTS' search settings (SGD 0.025 cosine, momentum 0.9, wd 3e-4, clip 5; Adam 3e-4,
betas (0.5, 0.999), wd 1e-3).
Remaining deviations from DARTS' CIFAR-10 search: 4 epochs by default (DARTS: 50; `--epochs`),
and on 8x8 inputs a reduced space (`space=auto`: 4 ops, 2 nodes, 3 cells, 8 channels) — the full
8-cell, 16-channel supernet is `space=full`; the DARTS code's default order is kept (`top_down`).
The learned quantity, alpha, is logged per epoch (genotype, entropy, alpha evolution plots).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from skillearn.knobs import Knob, Skill
from skillearn.mlo import Level
from skillearn.trainables.architecture import ArchitectureState
from skillearn.trainables.setup import Built, Setup, build_supernet, program_for
from skillearn.trainables.weights import count_parameters, run_with


def darts_levels(weights: Any, arch: Any, train_loss: Any, arch_loss: Any,
                 cfg: Mapping[str, Any]) -> list[Level]:
    """DARTS' two levels with its optimizers (momentum SGD + cosine for the weights, Adam for
    the architecture): skills that only change a loss (e.g. `robust`) reuse them."""
    w_opt = torch.optim.SGD(weights.values(), lr=cfg["w_lr"], momentum=0.9,
                            weight_decay=cfg["w_wd"])
    a_opt = torch.optim.Adam(arch.values(), lr=cfg["arch_lr"], betas=(0.5, 0.999),
                             weight_decay=cfg["arch_wd"])
    return [
        Level("weights", weights, w_opt, train_loss, grad_clip=5.0,
              scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(
                  w_opt, T_max=cfg["epochs"], eta_min=cfg["w_lr_min"])),
        Level("arch", arch, a_opt, arch_loss, reads_lower=("weights",)),
    ]


def build(setup: Setup) -> Built:
    cfg = setup.config
    net = build_supernet(setup)
    weights, arch = net.weight_parameters(), net.arch_parameters()

    def train_loss(p, b):
        x, y, _ = b["train"]
        return F.cross_entropy(run_with(net, x, p["weights"], p["arch"]), y)

    def val_loss(p, b):
        x, y, _ = b["val"]
        return F.cross_entropy(run_with(net, x, p["weights"], p["arch"]), y)

    program = program_for(darts_levels(weights, arch, train_loss, val_loss, cfg), cfg)
    return Built(
        program=program,
        predict=net,
        modules=[net],
        architecture=ArchitectureState.of_supernet(net),
        param_count=count_parameters(weights),
    )


SKILL = Skill(
    name="darts",
    summary="DARTS: bi-level differentiable NAS (weights on train, architecture on validation)",
    knobs={
        "w_lr": Knob(0.025, "network SGD learning rate", low=1e-5, high=1.0, log=True, tune=True,
                     search=(0.005, 0.2)),
        "w_lr_min": Knob(0.001, "cosine schedule floor", low=0.0, high=0.1),
        "w_wd": Knob(3e-4, "network weight decay", low=0.0, high=0.01),
        "arch_lr": Knob(3e-4, "architecture Adam learning rate", low=1e-6, high=1.0, log=True,
                        tune=True, search=(1e-4, 1e-2)),
        "arch_wd": Knob(1e-3, "architecture weight decay", low=1e-6, high=0.1, log=True,
                        tune=True, search=(1e-4, 1e-2)),
    },
    build=build,
    levels=("weights", "arch"),
)
