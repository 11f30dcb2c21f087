"""Learning From Mistakes for data reweighting (seed 000, eq. 9): B = one weight per example.

    W1*(b)        = argmin_W1 mean_i b_i CE_i(W1)                  level `w1`, train batch
    W2*(W1*, V, r) = argmin_W2 mean_i a_i CE_i(W2)                 level `w2`, reads `w1`
    b, V, r       = argmin CE(W2*, meta batch)                     level `upper`, reads `w2`
    a_i = sigmoid(sum_j r_j x_ij z_ij u_j),  u_j = CE(W1'(d_j^val))  (eqs. 2-5, `example_weights`)

D_val is the clean, class-balanced meta set (`meta_per_class`, default 10 per class, carved
exactly as for `mwnet`, see `skillearn.data.load`), as in the official DR code (10 per class for
imbalance, 1,000 for noise on CIFAR); so `compare` gives `lfm_dr` and `mwnet` the same clean data.

Where b reaches the validation loss (`b_path`):
- `mistakes` = eq. 9 as written: only through W1 -> u -> a -> W2 (a second-order path, scale
  eta1 * eta2). Taken literally this path *rewards b for making W1 worse*: d L_val / d u_j < 0
  whenever raising the weights a of W2's (mostly clean) same-label examples helps W2, and
  d u_j / d b_k < 0 for a clean k that agrees with validation example j, so the hypergradient
  lowers b of clean examples and raises b of mislabelled ones (measured: b's clean-vs-noisy
  ROC-AUC < 0.5 on digits with 40% noise; README, "lfm_dr");
- `w2` (default) = b also multiplies W2's per-example loss (a_i * b_i). This is the effect of
  the official *noise* script, which restarts W2 from W1' every step so that b reaches W2's
  step directly; the direct path is first order (eta2) and has the sign of MW-Net's / L2RW's
  meta-gradient (clean examples that agree with the meta set gain weight). The mistake path
  through u is kept on top of it.

Step sizes (`upper_step`): b's exact hypergradient is ~1e-6, V's and r's ~1e-4 on digits, so
plain SGD at the official code's rates (b 1e-2, V and r 1e-5) leaves all three where they start
(the code's gradients are ~100x larger for V and r — a sum over the batch — and b's has no
eta1 * eta2 factor). `normalized` (default) steps each group by lr * g / rms(g) (`NormalizedSGD`:
same direction as the hypergradient, a typical coordinate moves by its lr per step, entries of b
outside the batch stay put); `sgd` is the code's momentum SGD (0.9, wd 5e-4 on V and r, clip 5)
on the raw hypergradient, for comparison. Both anneal with a cosine to 1e-5 (the code: b only).

Other choices (recorded in every run's params):
- b is a tensor over the *train split indexed by example id* — the paper's per-sample weights.
  The official code ties b to (position in batch, batch number) of a shuffling loader, so there
  its b_i is not attached to one example;
- r has one entry per meta example by id (as `lfm`); x and u use the meta batch;
- b is clamped at 0 inside the losses (a negative weight would make W1 ascend that loss);
- W1/W2: the classifier knobs (SGD `w_lr` 0.03 by default — MW-Net's 0.1 memorises the noisy
  digits; momentum 0.9, wd 5e-4, /10 at 80% and 90% of the epochs); plain momentum by
  default (`momentum=nesterov` gives the code's Nesterov, unrolled exactly; the measurements
  in the README were made with plain momentum); method finite_difference;
- W2 starts as a copy of W1 and persists (the imbalance script); the reported model is W2.
Encoder V: small CNN for <=16px inputs, else ResNet-18 (random init unless `encoder_weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from skillearn.artifacts import EpochReport
from skillearn.mlo import SECOND_ORDER_METHODS, Level
from skillearn.reweighting.metrics import reweighting_metrics, weight_report
from skillearn.reweighting.mwnet import binned_weight_curve
from skillearn.trainables.classifiers import (
    CLASSIFIER_KNOBS,
    classifier_optimizer,
    make_classifier,
    split_losses,
)
from skillearn.trainables.encoders import ENCODER_KNOBS, auto_encoder_kind, make_encoder
from skillearn.trainables.evaluation import class_accuracies
from skillearn.trainables.lfm import example_weights, positions_by_id
from skillearn.trainables.mwnet import META_PER_CLASS
from skillearn.trainables.normalized_sgd import NormalizedSGD
from skillearn.trainables.setup import Built, Setup, program_for
from skillearn.trainables.skill import Knob, Skill
from skillearn.trainables.weight_reports import weight_function, weight_histogram, weight_trends
from skillearn.trainables.weights import clone_weights, count_parameters, run_with

B_PATHS = ("w2", "mistakes")
UPPER_STEPS = ("normalized", "sgd")


def relative_change(now: torch.Tensor, start: torch.Tensor) -> float:
    """||now - start|| / ||start||: how far a learned quantity has moved from its init."""
    return float((now - start).norm() / start.norm().clamp_min(1e-12))


def build(setup: Setup) -> Built:
    cfg, data, device = setup.config, setup.data, setup.device
    if data.meta is None:  # meta_per_class >= 1 is checked up front; a guard, not a path
        raise ValueError("lfm_dr needs a meta set (meta_per_class >= 1)")
    net = make_classifier(cfg["classifier"], data.input_shape, data.num_classes).to(device)
    w1 = dict(net.named_parameters())
    w2, w2_buffers = clone_weights(net)
    encoder_kind = auto_encoder_kind(cfg["encoder"], data.input_shape)
    encoder = make_encoder(encoder_kind, data.input_shape[0], cfg["encoder_dim"],
                           cfg["encoder_weights"]).to(device)
    train_row, meta_row = positions_by_id(data.train.index, device), positions_by_id(
        data.meta.index, device)
    b = torch.ones(len(data.train), device=device, requires_grad=True)
    r = torch.ones(len(data.meta), device=device, requires_grad=True)
    encoder_params = [v for _, v in encoder.named_parameters()]
    upper = {"b": b, "r": r, **{f"V.{k}": v for k, v in encoder.named_parameters()}}
    b_reaches_w2 = cfg["b_path"] == "w2"

    def encoder_of(p):
        return {k[2:]: v for k, v in p["upper"].items() if k.startswith("V.")}

    def b_of(p, ids):
        return p["upper"]["b"][train_row[ids]].clamp_min(0.0)

    def w1_loss(p, batch):
        x, y, ids = batch["train"]
        return (b_of(p, ids) * F.cross_entropy(run_with(net, x, p["w1"]), y,
                                               reduction="none")).mean()

    def w2_loss(p, batch):
        x, y, ids = batch["train"]
        xv, yv, iv = batch["meta"]
        u = F.cross_entropy(run_with(net, xv, p["w1"]), yv, reduction="none")  # eq. 4
        feats = run_with(encoder, torch.cat([x, xv]), encoder_of(p))
        r_batch = p["upper"]["r"][meta_row[iv]]
        a = example_weights(feats[: len(x)], feats[len(x):], y, yv, u, r_batch)
        if b_reaches_w2:
            a = a * b_of(p, ids)
        losses = F.cross_entropy(run_with(net, x, p["w2"], w2_buffers), y, reduction="none")
        return (a * losses).mean()  # eq. 6

    def val_loss(p, batch):
        xv, yv, _ = batch["meta"]
        return F.cross_entropy(run_with(net, xv, p["w2"], w2_buffers), yv)  # eq. 9, top

    w1_opt, w1_schedule = classifier_optimizer(w1, cfg)
    w2_opt, w2_schedule = classifier_optimizer(w2, cfg)
    groups = [{"params": [b], "lr": cfg["b_lr"]},
              {"params": encoder_params, "lr": cfg["encoder_lr"]},
              {"params": [r], "lr": cfg["r_lr"]}]
    if cfg["upper_step"] == "normalized":
        upper_opt: torch.optim.Optimizer = NormalizedSGD(groups, lr=cfg["b_lr"])
        upper_clip = None  # a group's step does not depend on its gradient's scale
    else:
        groups[0]["weight_decay"] = 0.0
        upper_opt = torch.optim.SGD(groups, lr=cfg["b_lr"], momentum=0.9, weight_decay=5e-4)
        upper_clip = 5.0
    upper_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(upper_opt, T_max=cfg["epochs"],
                                                                eta_min=1e-5)
    program = program_for([
        Level("w1", w1, w1_opt, w1_loss, grad_clip=5.0, scheduler=w1_schedule,
              reads_upper=("upper",)),
        Level("w2", w2, w2_opt, w2_loss, reads_lower=("w1",), grad_clip=5.0, scheduler=w2_schedule,
              reads_upper=("upper",)),
        Level("upper", upper, upper_opt, val_loss, reads_lower=("w2",), grad_clip=upper_clip,
              scheduler=upper_schedule),
    ], cfg)

    def predict(x):
        return run_with(net, x, w2, w2_buffers)

    def mistake_weights(x: torch.Tensor, feats_meta: torch.Tensor, y: torch.Tensor,
                        yv: torch.Tensor, u: torch.Tensor, iv: torch.Tensor) -> torch.Tensor:
        return example_weights(encoder(x), feats_meta, y, yv, u, r[meta_row[iv]])

    learned = LearnedWeights(b=b, r=r, encoder_params=encoder_params)
    return Built(program=program, predict=predict, modules=[net, encoder],
                 state={f"w2_buffer.{k}": v for k, v in w2_buffers.items()},
                 param_count=count_parameters(w1),
                 epoch_report=lfm_dr_report(net, encoder, predict, learned, mistake_weights,
                                            setup))


@dataclass
class LearnedWeights:
    """LFM-DR's learned upper variables, and where each started (to report how far it moved)."""

    b: torch.Tensor
    r: torch.Tensor
    encoder_params: list[torch.Tensor]
    start: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = {"b": self.b.detach().clone(), "r": self.r.detach().clone(),
                      "V": self.flat_encoder().clone()}

    def flat_encoder(self) -> torch.Tensor:
        return torch.cat([v.detach().flatten() for v in self.encoder_params])

    def changes(self) -> dict[str, float]:
        return {"b_change": relative_change(self.b, self.start["b"]),
                "r_change": relative_change(self.r, self.start["r"]),
                "V_change": relative_change(self.flat_encoder(), self.start["V"])}


def lfm_dr_report(net: torch.nn.Module, encoder: torch.nn.Module,
                  predict: Callable[[torch.Tensor], torch.Tensor], learned: LearnedWeights,
                  mistake_weights: Callable[..., torch.Tensor],
                  setup: Setup) -> Callable[[], EpochReport]:
    """What LFM-DR reports each epoch: shot-group accuracy, the quality of b and of the train
    split's a_i, how far b, r and V moved, b's loss -> weight curve and histogram, the trends."""
    cfg, data, device = setup.config, setup.data, setup.device
    b, r = learned.b, learned.r
    train_counts = torch.bincount(data.train.clean_y, minlength=data.num_classes).tolist()
    meta = data.meta
    if meta is None:  # build refuses this first
        raise ValueError("lfm_dr needs a meta set (meta_per_class >= 1)")

    @torch.no_grad()
    def train_split_a() -> torch.Tensor:
        """a_i over the train split against the first meta batch, u from W1."""
        n_meta = min(cfg["batch_size"], len(meta))
        xv, yv, iv = (t[:n_meta].to(device) for t in (meta.x, meta.y, meta.index))
        u = F.cross_entropy(net(xv), yv, reduction="none")
        feats_meta = encoder(xv)
        chunks = []
        for first in range(0, len(data.train), 512):
            x = data.train.x[first : first + 512].to(device)
            y = data.train.y[first : first + 512].to(device)
            chunks.append(mistake_weights(x, feats_meta, y, yv, u, iv))
        return torch.cat(chunks)

    @torch.no_grad()
    def epoch_report() -> EpochReport:
        is_noisy = data.train.is_noisy
        _, per_class = class_accuracies(predict, data.test, data.num_classes, device)
        metrics = reweighting_metrics(per_class, train_counts, b.detach(), is_noisy)
        a = train_split_a()
        metrics.update(weight_report(a, is_noisy, prefix="a_"))
        losses, _ = split_losses(net, data.train, device)
        curve = binned_weight_curve(losses, b.detach())
        metrics.update({
            "a_mean": float(a.mean()), "a_std": float(a.std()),
            "b_mean": float(b.mean()), "b_std": float(b.std()),
            "r_mean": float(r.mean()), "r_std": float(r.std()),
            **learned.changes(),
        })
        return EpochReport(metrics=metrics, artifacts=[
            weight_histogram(b.detach(), is_noisy), weight_function(curve),
            *weight_trends(metrics)])

    return epoch_report


SKILL = Skill(
    name="lfm_dr",
    summary="Learning From Mistakes for data reweighting: per-example weights b learned through "
            "learn -> relearn on mistakes -> validate on the clean meta set",
    knobs={
        **CLASSIFIER_KNOBS,
        "meta_per_class": Knob(META_PER_CLASS, "clean meta examples per class (D_val), carved "
                               "as for mwnet (DR code: 10 for imbalance, 100 for "
                               "noise on CIFAR-10)", low=1, high=1000),
        "b_path": Knob("w2", "how b reaches the meta loss: w2 = b also weights W2's loss (as the "
                       "noise code's W2 restart from W1' does), mistakes = only W1 -> u -> a -> "
                       "W2 (eq. 9 as written; its hypergradient favours mislabelled examples)",
                       choices=B_PATHS),
        "upper_step": Knob("normalized", "step of b, V, r: normalized = lr * g / rms(g) per "
                           "group (NormalizedSGD), sgd = the DR code's momentum SGD on the raw "
                           "hypergradient (with the code's rates b 1e-2, V/r 1e-5 they stay put)",
                           choices=UPPER_STEPS),
        "b_lr": Knob(0.05, "learning rate of the per-example weights b (normalized: about the "
                     "change of a batch entry per step; code's SGD: 1e-2)",
                     low=1e-6, high=10.0, log=True, tune=True, search=(3e-3, 0.3)),
        "encoder_lr": Knob(1e-3, "learning rate of the encoder V (normalized: per-coordinate "
                           "step; code's SGD: 1e-5)", low=1e-7, high=1.0, log=True, tune=True,
                           search=(1e-5, 1e-2)),
        "r_lr": Knob(1e-2, "learning rate of the coefficients r (normalized: per-entry step; "
                     "code's SGD: 1e-5)", low=1e-7, high=10.0, log=True, tune=True,
                     search=(1e-4, 0.1)),
        **ENCODER_KNOBS,
        "encoder_dim": Knob(32, "feature size of the small encoder", choices=(16, 32, 64)),
    },
    build=build,
    kind="reweighting",
    methods=SECOND_ORDER_METHODS,
    levels=("w1", "w2", "upper"),
)
