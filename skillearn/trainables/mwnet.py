"""Meta-Weight-Net (Shu et al., 2019): learn an explicit loss -> weight mapping on clean data.

    w*(theta) = argmin_w mean_i V(l_i(w); theta) * l_i(w)     level `w`, train batch
    theta     = argmin_theta CE(w*(theta), meta batch)        level `theta`, reads `w`

V sees the *detached* loss (`cost.data` in the original), so theta reaches the meta loss only
through w's one-step-unrolled update: `first_order` would leave theta untouched and is not
offered; `exact` is the original double backward, `finite_difference` the DARTS approximation.
Order `top_down` = MW-Net: the meta step first, then the real step with the new theta. The
unrolled step size is the classifier's current learning rate (MW-Net's `meta_lr`).
Defaults are MW-Net's: SGD 0.1, momentum 0.9 (plain; `momentum=nesterov` for Nesterov),
wd 5e-4, /10 at 80% and 90% of the epochs, batch 100; theta Adam 1e-3, wd 1e-4; VNet 1-100-1.
The meta set is clean and class balanced, carved from the training part (`meta_per_class`), as
MW-Net's code takes it from the training images; validation is a separate small clean split.
`mwnet_variant=imbalance` follows MW-Net's class-imbalance code instead: theta under SGD 1e-5
(Nesterov momentum 0.9, the classifier's weight decay) and V's input not detached.
Remaining deviation: in the imbalance variant V's input also keeps its gradient in the real
step of w (the code computes the real step's weights under no_grad), because the engine
evaluates one loss for the virtual and the real step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from skillearn.artifacts import EpochReport
from skillearn.knobs import Knob, Skill
from skillearn.mlo import SECOND_ORDER_METHODS, Level, LossFn
from skillearn.reweighting.metrics import reweighting_metrics
from skillearn.reweighting.mwnet import MetaWeightNet, input_width, weight_curve, weight_inputs
from skillearn.trainables.classifiers import (
    CLASSIFIER_KNOBS,
    classifier_optimizer,
    logits_and_features,
    make_classifier,
    split_losses,
)
from skillearn.trainables.evaluation import class_accuracies
from skillearn.trainables.setup import Built, Setup, program_for
from skillearn.trainables.weight_reports import weight_function, weight_histogram
from skillearn.trainables.weights import count_parameters, run_with

META_PER_CLASS = 10


Forward = Callable[[Mapping[str, torch.Tensor], torch.Tensor],
                   tuple[torch.Tensor, torch.Tensor | None]]
# MW-Net's columns from (per-example losses, features or None, labels)
InputsOf = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]


def mwnet_train_loss(
    forward: Forward,
    vnet: MetaWeightNet,
    current: Mapping[str, torch.Tensor],
    normalize: bool,
    inputs_of: InputsOf | None = None,
    detach_input: bool = True,
) -> LossFn:
    """Level `w`'s loss: mean_i V(l_i, f_i) l_i, with V's inputs taken at the *current* w.

    The engine also evaluates this loss at copies of w (exact) and at w +- eps v
    (finite_difference). MW-Net's noise code reads `cost.data` of the current classifier, so V's
    input must not move with those perturbations — otherwise finite differences would also
    differentiate through V's input and approximate a different meta-gradient.
    `detach_input=False` (MW-Net's class-imbalance code) reads V's input at the evaluated w
    with its gradient, in the virtual step and in its derivatives alike.
    `normalize` divides by the batch's sum of weights instead of the batch size.
    V's input at the current w is computed once per batch and weight version: the evaluation at
    the current w (the unroll) leaves its losses for the perturbed ones (finite-difference pair,
    exact) to read, and only without it is a no-grad forward run, once (in train mode the
    outputs do not depend on BatchNorm's running statistics; those see fewer duplicate
    forwards).
    """
    inputs_of = inputs_of or (lambda losses, features, y: weight_inputs(losses, features))
    at_current: dict[str, Any] = {}

    def key_of(x: torch.Tensor, y: torch.Tensor) -> tuple:
        return (x._version, y._version, tuple(t._version for t in current.values()))

    def seen_at_current(x: torch.Tensor, y: torch.Tensor):
        key = key_of(x, y)
        if at_current.get("x") is not x or at_current.get("y") is not y or (
                at_current.get("key") != key):
            with torch.no_grad():
                now_logits, now_features = forward(current, x)
                now_losses = F.cross_entropy(now_logits, y, reduction="none")
            at_current.update(x=x, y=y, key=key, value=(now_losses, now_features))
        return at_current["value"]

    def loss(p, b):
        x, y, _ = b["train"]
        logits, features = forward(p["w"], x)
        losses = F.cross_entropy(logits, y, reduction="none")
        seen_losses, seen_features = losses, features
        if detach_input and p["w"] is current:  # the unroll: what the perturbed passes read
            at_current.update(x=x, y=y, key=key_of(x, y), value=(
                losses.detach(), None if features is None else features.detach()))
        elif detach_input:
            seen_losses, seen_features = seen_at_current(x, y)
        weights = run_with(vnet, inputs_of(seen_losses, seen_features, y), p["theta"])
        if normalize:
            weights = weights / weights.sum().clamp_min(1e-12) * len(weights)
        return (weights * losses).mean()

    return loss


def theta_optimizer(theta: Mapping[str, torch.Tensor], cfg: Mapping[str, Any]) -> Any:
    """MW-Net's optimizer of theta: Adam 1e-3, wd 1e-4 (noise code), or SGD 1e-5 with
    Nesterov momentum 0.9 and the classifier's weight decay (class-imbalance code)."""
    if cfg["mwnet_variant"] == "imbalance":
        return torch.optim.SGD(theta.values(), lr=cfg["meta_sgd_lr"], momentum=0.9,
                               nesterov=True, weight_decay=cfg["w_wd"])
    return torch.optim.Adam(theta.values(), lr=cfg["meta_lr"], weight_decay=cfg["meta_wd"])


def build_mwnet(
    setup: Setup, hidden: Sequence[int], feature_layer: str | None = None,
    vnet_input: str = "loss",
) -> Built:
    """The MW-Net program for any VNet shape and input (`MWNET_INPUTS`); `feature_layer` is the
    classifier stage a feature input reads (seed 003). Shared by `mwnet` and `mwnet_nas`."""
    cfg, data, device = setup.config, setup.data, setup.device
    net = make_classifier(cfg["classifier"], data.input_shape, data.num_classes).to(device)
    uses = vnet_input.split("+")
    if "feature" not in uses:
        feature_layer = None
    elif feature_layer is None:
        raise ValueError(f"MW-Net input {vnet_input!r} needs a feature layer")
    feature_dim = net.feature_dims[feature_layer] if feature_layer else 0
    vnet = MetaWeightNet(input_width(vnet_input, feature_dim, data.num_classes),
                         tuple(hidden)).to(device)
    w, theta = dict(net.named_parameters()), dict(vnet.named_parameters())
    detach_input = cfg["mwnet_variant"] == "noise"

    def forward(params, x):
        return logits_and_features(net, x, feature_layer, params)

    def inputs_of(losses, features, y, detach=detach_input):
        return weight_inputs(losses, features, y if "label" in uses else None, data.num_classes,
                             use_loss="loss" in uses, detach=detach)

    weighted_train_loss = mwnet_train_loss(forward, vnet, w,
                                           normalize=cfg["weight_normalization"] == "sum",
                                           inputs_of=inputs_of, detach_input=detach_input)

    def meta_loss(p, b):
        x, y, _ = b["meta"]
        return F.cross_entropy(run_with(net, x, p["w"]), y)

    w_opt, w_schedule = classifier_optimizer(w, cfg)
    program = program_for(
        [Level("w", w, w_opt, weighted_train_loss, scheduler=w_schedule),
         Level("theta", theta, theta_optimizer(theta, cfg), meta_loss, reads_lower=("w",))],
        cfg,
    )
    train_counts = torch.bincount(data.train.clean_y, minlength=data.num_classes).tolist()

    @torch.no_grad()
    def epoch_report() -> EpochReport:
        losses, features = split_losses(net, data.train, device, feature_layer)
        weights = vnet(inputs_of(losses, features, data.train.y.to(device), detach=True))
        _, per_class = class_accuracies(net, data.test, data.num_classes, device)
        is_noisy = data.train.is_noisy
        return EpochReport(
            metrics=reweighting_metrics(per_class, train_counts, weights, is_noisy),
            artifacts=[weight_function(weight_curve(vnet, losses, weights)),
                       weight_histogram(weights, is_noisy)])

    return Built(program=program, predict=net, modules=[net, vnet],
                 param_count=count_parameters(w), epoch_report=epoch_report)


def build(setup: Setup) -> Built:
    return build_mwnet(setup, hidden=(setup.config["mwnet_hidden"],))


MWNET_KNOBS: dict[str, Knob] = {
    **CLASSIFIER_KNOBS,
    "meta_lr": Knob(1e-3, "Adam learning rate of MW-Net's theta (MW-Net: 1e-3)", low=1e-5,
                    high=0.1, log=True, tune=True, search=(1e-4, 1e-2)),
    "meta_wd": Knob(1e-4, "weight decay of theta (MW-Net: 1e-4)", low=0.0, high=0.01),
    "meta_per_class": Knob(META_PER_CLASS, "clean meta examples per class, carved from "
                           "validation (MW-Net: 10 for imbalance, 100 for noise on CIFAR-10)",
                           low=1, high=1000),
    "weight_normalization": Knob(
        "sum", "sum: divide the weighted train loss by the batch's sum of weights (MW-Net's "
        "class-imbalance code and first release), so only relative weights matter; none: by the "
        "batch size (the current MW-Net.py)", choices=("sum", "none")),
    "method": Knob("exact", "hypergradient of theta: exact (MW-Net's double backward) or "
                   "finite_difference", choices=SECOND_ORDER_METHODS),
    "mwnet_variant": Knob(
        "noise", "which MW-Net code to follow: noise (theta Adam meta_lr, MW-Net's input "
        "detached) or imbalance (theta SGD meta_sgd_lr with Nesterov momentum 0.9 and w_wd, "
        "input not detached)", choices=("noise", "imbalance")),
    "meta_sgd_lr": Knob(1e-5, "SGD learning rate of theta in the imbalance variant (MW-Net: "
                        "1e-5)", low=1e-7, high=0.1, log=True),
}

SKILL = Skill(
    name="mwnet",
    summary="Meta-Weight-Net: an MLP maps each example's loss to its weight, learned on clean "
            "meta data",
    knobs={**MWNET_KNOBS,
           "mwnet_hidden": Knob(100, "hidden units of MW-Net (MW-Net: 100)", low=1, high=1000)},
    build=build,
    kind="reweighting",
    methods=SECOND_ORDER_METHODS,
    levels=("w", "theta"),
)
