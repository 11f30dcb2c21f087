"""Learning From Mistakes for NAS (seed 000, eqs. 1-8): learn, relearn on mistakes, validate.

    W1*(B)        = argmin L_train(W1, B)                          level `w1`
    W2*(W1*, V, r) = argmin sum_i a_i l(W2, B, d_i)                level `w2`, reads `w1`
    B, V, r       = argmin L_val(W2*, B)                           level `arch`, reads `w2`
    a_i = sigmoid( sum_j r_j x_ij z_ij u_j )                       eq. 5
    x_ij = softmax_j(V(d_i) . V(d_j^val)),  z_ij = [y_i == y_j],  u_j = CE(W1'(d_j^val))

Defaults follow the official DARTS-LFM code (`NAS/darts-lfm`) where the paper is silent:
update order B/V/r -> W1 -> W2 (`order=arch,w1,w2`; `bottom_up` is the paper's Algorithm 1);
W1 and W2 initialised independently; B, V, r under Adam, betas (0.5, 0.999), rates 1e-3 / 1e-2
/ 1e-2, each annealed by cosine to 2.5e-4 over the epochs and clipped to norm 5 on its own;
weight decay 1e-5 on B, 1e-4 on V; raw dot products in the softmax.

Deviations from the paper / code that remain (recorded in every run's params):
- r: by default one entry per validation example, looked up by example id (the paper's r in
  R^{N_val}), stepped by a *lazy* Adam: only entries in the step's validation batch change and
  each keeps its own moment estimates, with no weight decay (`r_wd=0`). The code's r is one
  entry per *position* in the validation batch (dense, every entry gets a gradient each step,
  wd 1e-4): `r_mode=per_position`. Dense Adam with decay on the per-example r decayed every
  absent entry to 0 (issue 9) — see `group_adam`.
- x and u use the validation *minibatch* (the code; the paper's sums run over all of D_val).
- W1/W2 use DARTS' search settings (SGD 0.025 cosine to 1e-3, momentum 0.9, wd 3e-4; the code:
  1e-2 to 2.5e-4, wd 1e-4); the paper says "follow the original implementation" of DARTS.
- r starts at 1 (the code adds 1e-3 noise; `per_position` does too).
- the encoder V is a small CNN on <= 16 px inputs and a randomly initialised ResNet-18 above,
  unless `encoder_weights` gives ImageNet weights (the paper's V is ImageNet-pretrained). The
  small CNN ends in a LayerNorm: its raw features had norm ~0.05, so the softmax x was uniform
  (1/n) and a_i carried no visual similarity; pretrained ResNet features are large, as here.
Ablations of the paper: `ablate=x|u|z` leaves one factor out of a_i (Fig. 4; a missing x is the
uniform 1/n, a missing u or z is 1); `similarity=cosine|neg_l2` replaces the dot product (Fig. 5).
`first_order` is not offered: V and r reach the validation loss only through W2's unrolled
step, so with xi = 0 they would never learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from skillearn.artifacts import EpochReport
from skillearn.mlo import SECOND_ORDER_METHODS, Level
from skillearn.reweighting.metrics import weight_report
from skillearn.trainables.architecture import ArchitectureState
from skillearn.trainables.encoders import ENCODER_KNOBS, auto_encoder_kind, make_encoder
from skillearn.trainables.group_adam import GroupAdam
from skillearn.trainables.setup import Built, Setup, build_supernet, program_for
from skillearn.trainables.skill import Knob, Skill
from skillearn.trainables.weight_reports import weight_trends
from skillearn.trainables.weights import clone_weights, count_parameters, run_with

LEVELS = ("w1", "w2", "arch")
CODE_ORDER = "arch,w1,w2"  # Architect.step: step_AVr, step_w1, step_w2
SIMILARITIES = ("dot", "cosine", "neg_l2")
ABLATIONS = ("none", "x", "u", "z")
UPPER_CLIP = 5.0
A_EVAL_BATCHES = 4  # validation batches the per-epoch a_i are averaged over


def similarity_scores(feats_train: torch.Tensor, feats_val: torch.Tensor,
                      kind: str = "dot") -> torch.Tensor:
    """Scores whose softmax over the validation examples is x_ij: the paper's dot product, or
    cosine similarity / negative Euclidean distance (its Fig. 5 alternatives)."""
    if kind == "dot":
        return feats_train @ feats_val.T
    if kind == "cosine":
        return F.normalize(feats_train, dim=1) @ F.normalize(feats_val, dim=1).T
    if kind == "neg_l2":
        squared = (feats_train.pow(2).sum(1, keepdim=True) + feats_val.pow(2).sum(1)[None, :]
                   - 2 * feats_train @ feats_val.T)
        return -squared.clamp_min(1e-12).sqrt()  # clamped: no NaN gradient at distance 0
    raise ValueError(f"unknown similarity {kind!r}; use one of {SIMILARITIES}")


def example_weights(
    feats_train: torch.Tensor,
    feats_val: torch.Tensor,
    y_train: torch.Tensor,
    y_val: torch.Tensor,
    val_loss: torch.Tensor,
    r: torch.Tensor,
    similarity: str = "dot",
    ablate: str = "none",
) -> torch.Tensor:
    """a_i = sigmoid(sum_j r_j x_ij z_ij u_j) for a train batch against a validation batch.

    `ablate` leaves one factor out (seed 000, Fig. 4): x becomes the uniform 1/n_val (what the
    softmax gives when every example looks alike, so the scale of a_i is kept), u or z become 1.
    """
    if ablate == "x":
        x = torch.full((len(feats_train), len(feats_val)), 1.0 / len(feats_val),
                       dtype=feats_train.dtype, device=feats_train.device)
    else:
        x = torch.softmax(similarity_scores(feats_train, feats_val, similarity), dim=1)  # eq. 2
    z = (y_train[:, None] == y_val[None, :]).to(x.dtype)  # eq. 3
    if ablate == "z":
        z = torch.ones_like(z)
    u = torch.ones_like(val_loss) if ablate == "u" else val_loss
    return torch.sigmoid((x * z * u[None, :]) @ r)  # eq. 5


def positions_by_id(ids: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Lookup table example id -> row of its split (-1 for ids not in the split)."""
    table = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
    table[ids] = torch.arange(len(ids))
    return table.to(device)


def cosine_to_floor(base_lr: float, floor: float, epochs: int) -> Callable[[int], float]:
    """LambdaLR factor: cosine from `base_lr` to min(floor, base_lr) over `epochs` (as the
    code's CosineAnnealingLR(eta_min), without raising a rate that starts below the floor)."""
    end = min(floor, base_lr) / base_lr if base_lr > 0 else 1.0

    def factor(epoch: int) -> float:
        return end + (1 - end) * (1 + math.cos(math.pi * min(epoch, epochs) / epochs)) / 2

    return factor


def build(setup: Setup) -> Built:
    cfg, data, device = setup.config, setup.data, setup.device
    net = build_supernet(setup)
    w1 = net.weight_parameters()
    if cfg["w2_init"] == "independent":  # the code: two separately initialised networks
        twin = build_supernet(setup)
        w2, w2_buffers = clone_weights(twin, exclude=twin.arch_parameters())
    else:
        w2, w2_buffers = clone_weights(net, exclude=net.arch_parameters())
    encoder_kind = auto_encoder_kind(cfg["encoder"], data.input_shape)
    encoder = make_encoder(encoder_kind, data.input_shape[0], cfg["encoder_dim"],
                           cfg["encoder_weights"]).to(device)
    per_position = cfg["r_mode"] == "per_position"
    val_batch = min(cfg["batch_size"], len(data.val))
    position = positions_by_id(data.val.index, device)  # r_j looked up by example id
    if per_position:  # the code: nn.Linear(batch_size, 1), ones + 1e-3 N(0, 1)
        r = (torch.ones(val_batch, device=device)
             + 1e-3 * torch.randn(val_batch, device=device)).requires_grad_(True)
    else:
        r = torch.ones(len(data.val), device=device, requires_grad=True)
    arch_names = tuple(net.arch_parameters())  # alphas, plus a backbone's own (PC-DARTS' beta)
    upper = {**net.arch_parameters(), "r": r,
             **{f"V.{k}": v for k, v in encoder.named_parameters()}}
    weigh = {"similarity": cfg["similarity"], "ablate": cfg["ablate"]}

    def split_upper(p):
        arch = {k: p["arch"][k] for k in arch_names}
        enc = {k[2:]: v for k, v in p["arch"].items() if k.startswith("V.")}
        return arch, enc, p["arch"]["r"]

    def r_for(r_all: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return r_all[: len(ids)] if per_position else r_all[position[ids]]

    def w1_loss(p, b):
        x, y, _ = b["train"]
        arch, _, _ = split_upper(p)
        return F.cross_entropy(run_with(net, x, p["w1"], arch), y)

    def w2_loss(p, b):
        x, y, _ = b["train"]
        xv, yv, iv = b["val"]
        arch, enc, r_all = split_upper(p)
        u = F.cross_entropy(run_with(net, xv, p["w1"], arch), yv, reduction="none")  # eq. 4
        feats = run_with(encoder, torch.cat([x, xv]), enc)
        a = example_weights(feats[: len(x)], feats[len(x):], y, yv, u, r_for(r_all, iv), **weigh)
        losses = F.cross_entropy(run_with(net, x, p["w2"], arch, w2_buffers), y, reduction="none")
        return (a * losses).mean()  # eq. 6

    def val_loss(p, b):
        xv, yv, _ = b["val"]
        arch, _, _ = split_upper(p)
        return F.cross_entropy(run_with(net, xv, p["w2"], arch, w2_buffers), yv)  # eq. 7

    def sgd(params):
        return torch.optim.SGD(params.values(), lr=cfg["w_lr"], momentum=0.9,
                               weight_decay=cfg["w_wd"])

    def cosine(opt):
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"],
                                                          eta_min=cfg["w_lr_min"])

    w1_opt, w2_opt = sgd(w1), sgd(w2)
    per_group = cfg["upper_clip"] == "per_group"
    groups = [
        {"params": [upper[k] for k in arch_names], "lr": cfg["arch_lr"],
         "weight_decay": cfg["arch_wd"]},
        {"params": [v for k, v in upper.items() if k.startswith("V.")], "lr": cfg["encoder_lr"],
         "weight_decay": cfg["encoder_wd"]},
        {"params": [r], "lr": cfg["r_lr"], "weight_decay": cfg["r_wd"], "lazy": not per_position},
    ]
    upper_opt = GroupAdam(groups, betas=(0.5, 0.999), clip=UPPER_CLIP if per_group else None)
    upper_schedule = None
    if cfg["upper_schedule"] == "cosine":
        upper_schedule = torch.optim.lr_scheduler.LambdaLR(upper_opt, [
            cosine_to_floor(g["lr"], cfg["upper_lr_min"], cfg["epochs"]) for g in groups])
    levels = [
        Level("w1", w1, w1_opt, w1_loss, grad_clip=5.0, scheduler=cosine(w1_opt),
              reads_upper=("arch",)),
        Level("w2", w2, w2_opt, w2_loss, reads_lower=("w1",), grad_clip=5.0,
              scheduler=cosine(w2_opt), reads_upper=("arch",)),
        Level("arch", upper, upper_opt, val_loss, reads_lower=("w2",),
              grad_clip=None if per_group else UPPER_CLIP, scheduler=upper_schedule),
    ]
    program = program_for(levels, cfg)

    def predict(x):
        return run_with(net, x, w2, w2_buffers)

    def mistake_weights(feats_train, feats_val, y_train, y_val, u, ids_val):
        return example_weights(feats_train, feats_val, y_train, y_val, u, r_for(r, ids_val),
                               **weigh)

    return Built(
        program=program,
        predict=predict,
        modules=[net, encoder],
        state={f"w2_buffer.{k}": v for k, v in w2_buffers.items()},
        architecture=ArchitectureState.of_supernet(net),
        param_count=count_parameters(w1),
        epoch_report=lfm_report(net, encoder, r, mistake_weights, setup, val_batch,
                                encoder_kind),
    )


MistakeWeights = Callable[..., torch.Tensor]  # (feats_train, feats_val, y_train, y_val, u, ids)


def lfm_report(net: torch.nn.Module, encoder: torch.nn.Module, r: torch.Tensor,
               mistake_weights: MistakeWeights, setup: Setup, val_batch: int,
               encoder_kind: str) -> Callable[[], EpochReport]:
    """What LFM reports each epoch besides the architecture: r, the train split's a_i (means,
    clean-vs-noisy quality when labels are noisy) and their trend plot."""
    data, device = setup.data, setup.device

    @torch.no_grad()
    def train_split_a() -> torch.Tensor:
        """a_i of every training example, u from W1 and the current V and r, averaged over the
        first validation batches (a step sees one random batch; this is its expectation)."""
        feats_train = torch.cat([encoder(data.train.x[s : s + 512].to(device))
                                 for s in range(0, len(data.train), 512)])
        y_train = data.train.y.to(device)
        total = torch.zeros(len(data.train), device=device)
        batches = max(1, min(A_EVAL_BATCHES, len(data.val) // val_batch))
        for k in range(batches):
            rows = slice(k * val_batch, (k + 1) * val_batch)
            xv, yv, iv = (t[rows].to(device) for t in (data.val.x, data.val.y, data.val.index))
            u = F.cross_entropy(net(xv), yv, reduction="none")  # net's own weights are W1
            total += mistake_weights(feats_train, encoder(xv), y_train, yv, u, iv)
        return total / batches

    @torch.no_grad()
    def epoch_report() -> EpochReport:
        a = train_split_a()
        metrics = {"r_mean": float(r.mean()), "r_std": float(r.std()),
                   "a_mean": float(a.mean()), "a_std": float(a.std()), "encoder": encoder_kind}
        is_noisy = data.train.is_noisy
        if bool(is_noisy.any()):
            metrics.update(weight_report(a, is_noisy, prefix="a_"))
        return EpochReport(metrics=metrics, artifacts=weight_trends(metrics))

    return epoch_report


SKILL = Skill(
    name="lfm",
    summary="Learning From Mistakes: three-level NAS (learn, relearn on mistakes, validate)",
    knobs={
        "w_lr": Knob(0.025, "SGD learning rate of W1 and W2", low=1e-5, high=1.0, log=True,
                     tune=True, search=(0.005, 0.2)),
        "w_lr_min": Knob(0.001, "cosine schedule floor of W1 and W2", low=0.0, high=0.1),
        "w_wd": Knob(3e-4, "weight decay of W1 and W2", low=0.0, high=0.01),
        "w2_init": Knob("independent", "W2's initial weights: independent (the code: its own "
                        "random init) or copy (a copy of W1)", choices=("independent", "copy")),
        "arch_lr": Knob(1e-3, "Adam learning rate of the architecture B", low=1e-6, high=1.0,
                        log=True, tune=True, search=(1e-4, 1e-2)),
        "arch_wd": Knob(1e-5, "weight decay of the architecture B (LFM code: 1e-5; DARTS: 1e-3)",
                        low=0.0, high=0.1),
        "encoder_lr": Knob(1e-2, "Adam learning rate of the encoder V", low=1e-6, high=1.0,
                           log=True, tune=True, search=(1e-4, 3e-2)),
        "encoder_wd": Knob(1e-4, "weight decay of the encoder V (code: 1e-4)", low=0.0,
                           high=0.1),
        "r_lr": Knob(1e-2, "Adam learning rate of the coefficients r", low=1e-6, high=1.0,
                     log=True, tune=True, search=(1e-3, 1e-1)),
        "r_wd": Knob(0.0, "weight decay of r, applied to the entries a step updates (code: "
                     "1e-4 on its dense per-position r)", low=0.0, high=0.1),
        "r_mode": Knob("per_example", "r's entries: per_example (one per validation example, "
                       "lazy Adam: only the batch's entries move) or per_position (the code: "
                       "one per position in the validation batch, dense)",
                       choices=("per_example", "per_position")),
        "upper_schedule": Knob("cosine", "learning-rate schedule of B, V and r: cosine to "
                               "upper_lr_min over the epochs (code) or constant",
                               choices=("cosine", "constant")),
        "upper_lr_min": Knob(2.5e-4, "cosine floor of B, V and r (code: 2.5e-4; a rate below "
                             "it stays put)", low=0.0, high=0.1),
        "upper_clip": Knob("per_group", "gradient-norm clip 5 of the upper level: per_group "
                           "(code: B, V and r each) or joint (one norm over all)",
                           choices=("per_group", "joint")),
        "similarity": Knob("dot", "visual similarity in x_ij's softmax: dot (paper), cosine or "
                           "neg_l2 (Fig. 5 ablation)", choices=SIMILARITIES),
        "ablate": Knob("none", "leave one factor out of a_i (Fig. 4 ablation): x, u or z",
                       choices=ABLATIONS),
        "order": Knob(CODE_ORDER, "level update order: arch,w1,w2 (the code: B/V/r, then W1, "
                      "then W2), bottom_up (Algorithm 1: W1, W2, then B/V/r), top_down, or "
                      "any permutation of w1,w2,arch"),
        **ENCODER_KNOBS,
        "encoder_dim": Knob(32, "feature size of the small encoder", choices=(16, 32, 64),
                            tune=True),
    },
    build=build,
    methods=SECOND_ORDER_METHODS,
    levels=LEVELS,
)
