"""Learning From Mistakes for NAS (seed 000, eqs. 1-8): learn, relearn on mistakes, validate.

    W1*(B)        = argmin L_train(W1, B)                          level `w1`
    W2*(W1*, V, r) = argmin sum_i a_i l(W2, B, d_i)                level `w2`, reads `w1`
    B, V, r       = argmin L_val(W2*, B)                           level `arch`, reads `w2`
    a_i = sigmoid( sum_j r_j x_ij z_ij u_j )                       eq. 5
    x_ij = softmax_j(V(d_i) . V(d_j^val)),  z_ij = [y_i == y_j],  u_j = CE(W1'(d_j^val))

Choices where paper and official code differ (recorded in every run's params):
- x and u over the *validation minibatch* (the code; the paper's sums run over all of D_val,
  which would need every validation example per step);
- r has one entry per validation example, indexed by example id (the paper's r in R^{N_val});
  the code ties r_j to the position in the batch instead;
- raw dot products in the softmax (both); r initialised to 1 (code);
- W1/W2 follow DARTS' network settings (the paper: "follow the original implementation");
  B, V, r use Adam, betas (0.5, 0.999), with the code's rates (1e-3 / 1e-2 / 1e-2);
- update order top_down = the code (B/V/r, then W2, then W1); bottom_up = Algorithm 1.
`first_order` is not offered: V and r reach the validation loss only through W2's unrolled
step, so with xi = 0 they would never learn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from skillearn.mlo import Level
from skillearn.trainables.encoders import ENCODER_KNOBS, make_encoder
from skillearn.trainables.setup import Built, Setup, build_supernet, program_for
from skillearn.trainables.skill import Knob, Skill
from skillearn.trainables.weights import clone_weights, count_parameters, run_with

ALPHAS = ("alpha_normal", "alpha_reduce")


def example_weights(
    feats_train: torch.Tensor,
    feats_val: torch.Tensor,
    y_train: torch.Tensor,
    y_val: torch.Tensor,
    val_loss: torch.Tensor,
    r: torch.Tensor,
) -> torch.Tensor:
    """a_i = sigmoid(sum_j r_j x_ij z_ij u_j) for a train batch against a validation batch."""
    similarity = torch.softmax(feats_train @ feats_val.T, dim=1)  # x_ij, eq. 2
    same_label = (y_train[:, None] == y_val[None, :]).to(similarity.dtype)  # z_ij, eq. 3
    return torch.sigmoid((similarity * same_label * val_loss[None, :]) @ r)  # eq. 5


def positions_by_id(ids: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Lookup table example id -> row of its split (-1 for ids not in the split)."""
    table = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
    table[ids] = torch.arange(len(ids))
    return table.to(device)


def build(setup: Setup) -> Built:
    cfg, data, device = setup.config, setup.data, setup.device
    net = build_supernet(setup)
    w1 = net.weight_parameters()
    w2, w2_buffers = clone_weights(net, exclude=net.arch_parameters())
    encoder_kind = cfg["encoder"] if cfg["encoder"] != "auto" else (
        "small" if data.input_shape[-1] <= 16 else "resnet18")
    encoder = make_encoder(encoder_kind, data.input_shape[0], cfg["encoder_dim"],
                           cfg["encoder_weights"]).to(device)
    position = positions_by_id(data.val.index, device)  # r_j looked up by example id
    r = torch.ones(len(data.val), device=device, requires_grad=True)
    upper = {**net.arch_parameters(), "r": r,
             **{f"V.{k}": v for k, v in encoder.named_parameters()}}

    def split_upper(p):
        arch = {k: p["arch"][k] for k in ALPHAS}
        enc = {k[2:]: v for k, v in p["arch"].items() if k.startswith("V.")}
        return arch, enc, p["arch"]["r"]

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
        a = example_weights(feats[: len(x)], feats[len(x):], y, yv, u, r_all[position[iv]])
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
    upper_opt = torch.optim.Adam([
        {"params": [upper[k] for k in ALPHAS], "lr": cfg["arch_lr"], "weight_decay": 1e-3},
        {"params": [v for k, v in upper.items() if k.startswith("V.")], "lr": cfg["encoder_lr"],
         "weight_decay": 1e-4},
        {"params": [r], "lr": cfg["r_lr"], "weight_decay": 1e-4},
    ], betas=(0.5, 0.999))
    levels = [
        Level("w1", w1, w1_opt, w1_loss, grad_clip=5.0, scheduler=cosine(w1_opt),
              depends_on=("arch",)),
        Level("w2", w2, w2_opt, w2_loss, reads=("w1",), grad_clip=5.0,
              scheduler=cosine(w2_opt), depends_on=("arch",)),
        Level("arch", upper, upper_opt, val_loss, reads=("w2",), grad_clip=5.0),
    ]
    program = program_for(levels, cfg)

    def predict(x):
        return run_with(net, x, w2, w2_buffers)

    def epoch_metrics():
        return {"r_mean": float(r.detach().mean()), "r_std": float(r.detach().std()),
                "encoder": encoder_kind}

    return Built(
        program=program,
        predict=predict,
        modules=[net, encoder],
        state={f"w2_buffer.{k}": v for k, v in w2_buffers.items()},
        genotype=net.genotype,
        alphas=net.arch_parameters,
        gap_level="arch",
        ops=setup.space.ops,
        param_count=count_parameters(w1),
        epoch_metrics=epoch_metrics,
    )


SKILL = Skill(
    name="lfm",
    summary="Learning From Mistakes: three-level NAS (learn, relearn on mistakes, validate)",
    knobs={
        "w_lr": Knob(0.025, "SGD learning rate of W1 and W2", low=1e-5, high=1.0, log=True,
                     tune=True, search=(0.005, 0.2)),
        "w_lr_min": Knob(0.001, "cosine schedule floor of W1 and W2", low=0.0, high=0.1),
        "w_wd": Knob(3e-4, "weight decay of W1 and W2", low=0.0, high=0.01),
        "arch_lr": Knob(1e-3, "Adam learning rate of the architecture B", low=1e-6, high=1.0,
                        log=True, tune=True, search=(1e-4, 1e-2)),
        "encoder_lr": Knob(1e-2, "Adam learning rate of the encoder V", low=1e-6, high=1.0,
                           log=True, tune=True, search=(1e-4, 3e-2)),
        "r_lr": Knob(1e-2, "Adam learning rate of the coefficients r", low=1e-6, high=1.0,
                     log=True, tune=True, search=(1e-3, 1e-1)),
        **ENCODER_KNOBS,
        "encoder_dim": Knob(32, "feature size of the small encoder", choices=(16, 32, 64),
                            tune=True),
    },
    build=build,
    methods=("finite_difference", "exact"),
)
