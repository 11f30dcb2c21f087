"""Learning From Mistakes for data reweighting (seed 000, eq. 9): B = one weight per example.

    W1*(b)        = argmin_W1 mean_i b_i CE_i(W1)                  level `w1`, train batch
    W2*(W1*, V, r) = argmin_W2 mean_i a_i CE_i(W2)                 level `w2`, reads `w1`
    b, V, r       = argmin CE(W2*, val batch)                      level `upper`, reads `w2`
    a_i = sigmoid(sum_j r_j x_ij z_ij u_j),  u_j = CE(W1'(d_j^val))  (eqs. 2-5, `example_weights`)

b reaches the validation loss only through W1 -> u -> a -> W2 (no direct path, no W2 term):
`w1` depends on `upper` for b, `w2` for V and r, and the engine's chain carries b's
hypergradient through both unrolled steps. `first_order` is not offered (b, V, r would get none).

Choices (recorded in every run's params):
- b is a tensor over the *train split indexed by example id* — the paper's per-sample weights.
  The official code ties b to (position in batch, batch number) of a shuffling loader, so there
  its b_i is not attached to one example;
- r has one entry per validation example by id (as `lfm`); x and u use the validation batch;
- b is clamped at 0 inside W1's loss (a negative weight would make W1 ascend that loss);
- optimisers follow the DR code: W1/W2 SGD 0.1, momentum 0.9, wd 5e-4, step /10 at 80%/90%
  (plain momentum: the engine's unroll mirrors plain SGD); b SGD 1e-2, V and r SGD 1e-5
  (momentum 0.9, wd 5e-4 on V and r), cosine to 1e-5, clip 5; method finite_difference;
- the reported model is W2 (the relearned one, as `lfm`).
Encoder V: small CNN for <=16px inputs, else ResNet-18 (random init: no downloads).
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from skillearn.mlo import SECOND_ORDER_METHODS, Level
from skillearn.reweighting.metrics import reweighting_metrics, weight_report
from skillearn.reweighting.mwnet import binned_weight_curve
from skillearn.trainables.classifiers import (
    CLASSIFIER_KNOBS,
    classifier_optimizer,
    make_classifier,
    split_losses,
)
from skillearn.trainables.encoders import ENCODER_KNOBS, make_encoder
from skillearn.trainables.evaluation import class_accuracies
from skillearn.trainables.lfm import example_weights, positions_by_id
from skillearn.trainables.setup import Built, Setup, program_for
from skillearn.trainables.skill import Knob, Skill
from skillearn.trainables.weights import clone_weights, count_parameters, run_with


def build(setup: Setup) -> Built:
    cfg, data, device = setup.config, setup.data, setup.device
    net = make_classifier(cfg["classifier"], data.input_shape, data.num_classes).to(device)
    w1 = dict(net.named_parameters())
    w2, w2_buffers = clone_weights(net)
    encoder_kind = cfg["encoder"] if cfg["encoder"] != "auto" else (
        "small" if data.input_shape[-1] <= 16 else "resnet18")
    encoder = make_encoder(encoder_kind, data.input_shape[0], cfg["encoder_dim"],
                           cfg["encoder_weights"]).to(device)
    train_row, val_row = positions_by_id(data.train.index, device), positions_by_id(
        data.val.index, device)
    b = torch.ones(len(data.train), device=device, requires_grad=True)
    r = torch.ones(len(data.val), device=device, requires_grad=True)
    upper = {"b": b, "r": r, **{f"V.{k}": v for k, v in encoder.named_parameters()}}

    def encoder_of(p):
        return {k[2:]: v for k, v in p["upper"].items() if k.startswith("V.")}

    def w1_loss(p, batch):
        x, y, ids = batch["train"]
        weights = p["upper"]["b"][train_row[ids]].clamp_min(0.0)
        return (weights * F.cross_entropy(run_with(net, x, p["w1"]), y, reduction="none")).mean()

    def w2_loss(p, batch):
        x, y, _ = batch["train"]
        xv, yv, iv = batch["val"]
        u = F.cross_entropy(run_with(net, xv, p["w1"]), yv, reduction="none")  # eq. 4
        feats = run_with(encoder, torch.cat([x, xv]), encoder_of(p))
        a = example_weights(feats[: len(x)], feats[len(x):], y, yv, u, p["upper"]["r"][val_row[iv]])
        losses = F.cross_entropy(run_with(net, x, p["w2"], w2_buffers), y, reduction="none")
        return (a * losses).mean()  # eq. 6

    def val_loss(p, batch):
        xv, yv, _ = batch["val"]
        return F.cross_entropy(run_with(net, xv, p["w2"], w2_buffers), yv)  # eq. 9, top

    w1_opt, w1_schedule = classifier_optimizer(w1, cfg)
    w2_opt, w2_schedule = classifier_optimizer(w2, cfg)
    upper_opt = torch.optim.SGD([
        {"params": [b], "lr": cfg["b_lr"], "weight_decay": 0.0},
        {"params": [v for k, v in upper.items() if k.startswith("V.")], "lr": cfg["encoder_lr"]},
        {"params": [r], "lr": cfg["r_lr"]},
    ], lr=cfg["b_lr"], momentum=0.9, weight_decay=5e-4)
    upper_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(upper_opt, T_max=cfg["epochs"],
                                                                eta_min=1e-5)
    program = program_for([
        Level("w1", w1, w1_opt, w1_loss, grad_clip=5.0, scheduler=w1_schedule,
              depends_on=("upper",)),
        Level("w2", w2, w2_opt, w2_loss, reads=("w1",), grad_clip=5.0, scheduler=w2_schedule,
              depends_on=("upper",)),
        Level("upper", upper, upper_opt, val_loss, reads=("w2",), grad_clip=5.0,
              scheduler=upper_schedule),
    ], cfg)
    train_counts = torch.bincount(data.train.clean_y, minlength=data.num_classes).tolist()

    def predict(x):
        return run_with(net, x, w2, w2_buffers)

    @torch.no_grad()
    def train_split_a() -> torch.Tensor:
        """a_i over the train split against the first validation batch, u from W1."""
        n_val = min(cfg["batch_size"], len(data.val))
        xv, yv, iv = (t[:n_val].to(device) for t in (data.val.x, data.val.y, data.val.index))
        u = F.cross_entropy(net(xv), yv, reduction="none")
        feats_val = encoder(xv)
        chunks = []
        for start in range(0, len(data.train), 512):
            x = data.train.x[start : start + 512].to(device)
            y = data.train.y[start : start + 512].to(device)
            chunks.append(example_weights(encoder(x), feats_val, y, yv, u, r[val_row[iv]]))
        return torch.cat(chunks)

    @torch.no_grad()
    def epoch_metrics():
        is_noisy = data.train.is_noisy
        _, per_class = class_accuracies(predict, data.test, data.num_classes, device)
        metrics = reweighting_metrics(per_class, train_counts, b.detach(), is_noisy)
        metrics.update(weight_report(train_split_a(), is_noisy, cap=0, prefix="a_"))
        losses, _ = split_losses(net, data.train, device)
        metrics["weight_curve"] = json.dumps(binned_weight_curve(losses, b.detach()))
        metrics["b_std"] = float(b.detach().std())
        return metrics

    return Built(program=program, predict=predict, modules=[net, encoder],
                 state={f"w2_buffer.{k}": v for k, v in w2_buffers.items()},
                 gap_level="upper", param_count=count_parameters(w1),
                 epoch_metrics=epoch_metrics)


SKILL = Skill(
    name="lfm_dr",
    summary="Learning From Mistakes for data reweighting: per-example weights b learned through "
            "learn -> relearn on mistakes -> validate",
    knobs={
        **CLASSIFIER_KNOBS,
        "b_lr": Knob(1e-2, "SGD learning rate of the per-example weights b (code: 1e-2)",
                     low=1e-5, high=10.0, log=True, tune=True,
                     search=(1e-2, 10.0)),
        "encoder_lr": Knob(1e-5, "SGD learning rate of the encoder V (DR code: 1e-5)", low=1e-6,
                           high=0.1, log=True, tune=True, search=(1e-5, 1e-2)),
        "r_lr": Knob(1e-5, "SGD learning rate of the coefficients r (DR code: 1e-5)", low=1e-6,
                     high=0.1, log=True, tune=True, search=(1e-5, 1e-2)),
        **ENCODER_KNOBS,
        "encoder_dim": Knob(32, "feature size of the small encoder", choices=(16, 32, 64)),
    },
    build=build,
    kind="reweighting",
    methods=SECOND_ORDER_METHODS,
)
