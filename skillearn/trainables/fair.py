"""Learning by Grouping for fair NAS (LBG / DALBG; thesis 004 ch. 2, Algorithm 2).

    T*(C)     = argmin_T sum_n -G_n(C) log f_{j_n}(x_n; T)             level `gam`
    S*(T*, A) = argmin_S sum_n E_n l(f(x_n; S_jn, A_jn), y_n) + lam sum_k M_k
                                                               level `experts`, reads `gam`
    C, A      = argmin sum_i -log( E_i * p(y_i | x_i; S*_ji, A_ji) )
                                                      level `group`, reads `gam` and `experts`
    j_n = argmax_k C_nk, G_n = C_{n j_n}   (C = softmax of per-training-example logits, N x K)
    j^_n = argmax_k f_k(x_n; T), E_n = f_{j^_n}(x_n; T)   (the group-assignment model's choice)

K experts (`groups`, default 2 as the thesis) are supernets of the run's search space, each
with its own architecture A_k; the GAM f(x; T) is the small encoder (<= 16 px) or a ResNet,
with a K-way head. The protected attribute is never read: batches carry (x, y, id) only, and
the per-epoch contingency of learned groups against the attribute is evaluation.
Inference: T picks the group, that group's expert predicts. `lam=0` is LBG, `lam=0.1` DALBG.

Choices where the thesis is silent or inconsistent (also in the README):
- "E * f" in the top loss: E times the expert's class probability, inside the log, so the loss
  is CE(expert) - log E (the GAM is rewarded for confident routing that helps validation);
- M_k compares soft-weighted *means* of expert k's embedding (weights f_k and 1 - f_k,
  normalised), eq. 2.6 relaxed; eq. 2.7 as printed divides by N instead (1/4 of this value
  for balanced groups). `mmd=gaussian` is DAN's multi-kernel version (5 bandwidths around the
  batch's mean squared distance);
- the direct dL/dA term that eq. 2.18 omits is included (the engine differentiates through
  the unrolled steps, so it is never dropped);
- every expert embeds the whole batch (M_k needs it); the thesis routes each example to one
  expert (O(N)). Experts are not shrunk to 1/K of the cells;
- learning rates: experts use DARTS' weight settings, the GAM the same SGD (it is a
  classifier on the same split), A_k DARTS' architecture Adam; C's rate is sized so that the
  one step per epoch each entry receives can flip a group within a few epochs (C starts at
  logits ~ N(0, 0.01^2): a random grouping, confidence 1/K);
- retraining (`retrain_epochs`) retrains the largest group's expert alone; the LBG model
  (GAM + K retrained experts) is not retrained.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from skillearn.artifacts import EpochReport, rows_table
from skillearn.mlo import SECOND_ORDER_METHODS, Level
from skillearn.trainables.architecture import ArchitectureState
from skillearn.trainables.encoders import ENCODER_KNOBS, auto_encoder_kind, make_encoder
from skillearn.trainables.group_adam import GroupAdam
from skillearn.trainables.lfm import positions_by_id
from skillearn.trainables.setup import Built, Setup, build_supernet, program_for
from skillearn.trainables.skill import Knob, Skill
from skillearn.trainables.weights import count_parameters, run_with

LEVELS = ("gam", "experts", "group")
MMD_KINDS = ("linear", "gaussian")
GAUSSIAN_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # DAN: bandwidths 2^-2 .. 2^2 of the base
EVAL_BATCH = 512  # examples per forward pass of the per-epoch diagnostics


def kernel_matrix(phi: torch.Tensor, kind: str) -> torch.Tensor:
    """k(phi_i, phi_j): the dot product, or a sum of Gaussians whose bandwidths are multiples
    of the mean squared distance (detached: the bandwidth is not learned)."""
    if kind == "linear":
        return phi @ phi.T
    squared = torch.cdist(phi, phi).pow(2)
    base = squared.detach().mean().clamp_min(1e-12)
    return sum(torch.exp(-squared / (base * s)) for s in GAUSSIAN_SCALES)


def soft_mmd(phi: torch.Tensor, weight: torch.Tensor, kind: str = "linear") -> torch.Tensor:
    """Squared MMD between the weight-averaged and (1 - weight)-averaged embeddings:
    (a - b)^T K (a - b) with a = w / sum w, b = (1 - w) / sum (1 - w). The linear kernel gives
    || mean_w phi - mean_{1-w} phi ||^2 (eq. 2.6, relaxed by soft group membership)."""
    a = weight / weight.sum().clamp_min(1e-12)
    rest = 1 - weight
    b = rest / rest.sum().clamp_min(1e-12)
    d = a - b
    return d @ kernel_matrix(phi, kind) @ d


class EmbeddingTap:
    """Captures the input of a network's `classifier` (its embedding phi) on every forward pass,
    whatever the backbone; a network without one is embedded by its logits."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.value: torch.Tensor | None = None
        head = getattr(net, "classifier", None)
        if isinstance(head, torch.nn.Module):
            head.register_forward_hook(self._keep)

    def _keep(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.value = inputs[0].flatten(1)

    def take(self, logits: torch.Tensor) -> torch.Tensor:
        value, self.value = self.value, None
        return logits if value is None else value


def _prefixed(params: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def build(setup: Setup) -> Built:
    cfg, data, device = setup.config, setup.data, setup.device
    groups = cfg["groups"]
    experts = [build_supernet(setup) for _ in range(groups)]
    taps = [EmbeddingTap(net) for net in experts]
    encoder_kind = auto_encoder_kind(cfg["encoder"], data.input_shape)
    gam = torch.nn.Sequential(
        make_encoder(encoder_kind, data.input_shape[0], cfg["encoder_dim"],
                     cfg["encoder_weights"]),
        torch.nn.Linear(cfg["encoder_dim"], groups),
    ).to(device)
    gam_params = dict(gam.named_parameters())
    expert_params = {f"e{k}.{n}": p for k, net in enumerate(experts)
                     for n, p in net.weight_parameters().items()}
    arch_params = {f"A{k}.{n}": p for k, net in enumerate(experts)
                   for n, p in net.arch_parameters().items()}
    position = positions_by_id(data.train.index, device)  # C's row of a training example id
    c_logits = (0.01 * torch.randn(len(data.train), groups, device=device)).requires_grad_(True)
    upper = {"C": c_logits, **arch_params}

    def routing(p, x):
        """(j^, E) of every example: the GAM's group and its confidence."""
        probs = torch.softmax(run_with(gam, x, p["gam"]), dim=1)
        confidence, group = probs.max(dim=1)
        return probs, group, confidence

    def expert_outputs(p, x):
        """Logits (K, B, classes) and embeddings of every expert on the batch."""
        logits, embeddings = [], []
        for k, net in enumerate(experts):
            out = run_with(net, x, _prefixed(p["experts"], f"e{k}."),
                           _prefixed(p["group"], f"A{k}."))
            logits.append(out)
            embeddings.append(taps[k].take(out))
        return torch.stack(logits), embeddings

    def routed(logits, group):
        return logits[group, torch.arange(len(group), device=group.device)]

    def gam_loss(p, b):  # eq. 2.11
        x, _, ids = b["train"]
        c = torch.softmax(p["group"]["C"][position[ids]], dim=1)
        confidence, assigned = c.max(dim=1)  # G_n, j_n
        log_probs = F.log_softmax(run_with(gam, x, p["gam"]), dim=1)
        return -(confidence * log_probs.gather(1, assigned[:, None]).squeeze(1)).mean()

    def experts_loss(p, b):  # eq. 2.12 (+ lam M_k, eq. 2.8)
        x, y, _ = b["train"]
        probs, group, confidence = routing(p, x)
        logits, embeddings = expert_outputs(p, x)
        loss = (confidence * F.cross_entropy(routed(logits, group), y, reduction="none")).mean()
        if cfg["lam"] > 0:
            loss = loss + cfg["lam"] * sum(soft_mmd(phi, probs[:, k], cfg["mmd"])
                                           for k, phi in enumerate(embeddings))
        return loss

    def group_loss(p, b):  # eq. 2.13 / 2.17
        x, y, _ = b["val"]
        _, group, confidence = routing(p, x)
        logits, _ = expert_outputs(p, x)
        ce = F.cross_entropy(routed(logits, group), y, reduction="none")
        return (ce - torch.log(confidence.clamp_min(1e-12))).mean()

    gam_opt = torch.optim.SGD(gam_params.values(), lr=cfg["gam_lr"], momentum=0.9,
                              weight_decay=cfg["w_wd"])
    experts_opt = torch.optim.SGD(expert_params.values(), lr=cfg["w_lr"], momentum=0.9,
                                  weight_decay=cfg["w_wd"])
    upper_opt = GroupAdam([
        {"params": list(arch_params.values()), "lr": cfg["arch_lr"],
         "weight_decay": cfg["arch_wd"]},
        {"params": [c_logits], "lr": cfg["c_lr"], "weight_decay": 0.0, "lazy": True},
    ], betas=(0.5, 0.999))

    def cosine(opt):
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"],
                                                          eta_min=cfg["w_lr_min"])

    levels = [
        Level("gam", gam_params, gam_opt, gam_loss, grad_clip=5.0, scheduler=cosine(gam_opt)),
        Level("experts", expert_params, experts_opt, experts_loss, reads_lower=("gam",),
              grad_clip=5.0, scheduler=cosine(experts_opt)),
        Level("group", upper, upper_opt, group_loss, reads_lower=("gam", "experts")),
    ]
    program = program_for(levels, cfg)
    current = {"gam": gam_params, "experts": expert_params, "group": upper}

    def predict(x: torch.Tensor) -> torch.Tensor:
        _, group, _ = routing(current, x)
        logits, _ = expert_outputs(current, x)
        return routed(logits, group)

    def assignment() -> torch.Tensor:
        return c_logits.detach().argmax(dim=1).cpu()

    def largest_group() -> int:
        return int(torch.bincount(assignment(), minlength=groups).argmax())

    def all_alphas() -> dict[str, torch.Tensor]:
        return dict(arch_params)

    @torch.no_grad()
    def epoch_report() -> EpochReport:
        assigned = assignment()
        sizes = torch.bincount(assigned, minlength=groups)
        c_confidence = torch.softmax(c_logits.detach(), 1).max(1).values
        gam_group, gam_confidence, mmd = [], [], torch.zeros(groups)
        chunks = range(0, len(data.train), EVAL_BATCH)
        for start in chunks:  # M_k per chunk, averaged: a 32 px split does not fit at once
            x = data.train.x[start : start + EVAL_BATCH].to(device)
            probs, group, confidence = routing(current, x)
            _, embeddings = expert_outputs(current, x)
            gam_group.append(group.cpu())
            gam_confidence.append(confidence.cpu())
            mmd += torch.tensor([float(soft_mmd(phi, probs[:, k], cfg["mmd"]))
                                 for k, phi in enumerate(embeddings)])
        mmd /= len(chunks)
        metrics = {
            **{f"group_size_{k}": float(n) for k, n in enumerate(sizes.tolist())},
            "c_confidence": float(c_confidence.mean()),
            "gam_confidence": float(torch.cat(gam_confidence).mean()),
            "gam_agrees_with_c": float((torch.cat(gam_group) == assigned).float().mean()),
            **{f"mmd_group_{k}": round(float(v), 6) for k, v in enumerate(mmd)},
        }
        artifacts = [rows_table("expert_genotypes", ("expert", "genotype"),
                                ((k, net.genotype().to_json()) for k, net in enumerate(experts)))]
        sensitive = data.train.sensitive
        if sensitive is not None:  # evaluation only: how the learned groups align with it
            width = max(len(data.sensitive_groups), int(sensitive.max()) + 1)
            table = torch.zeros(groups, width, dtype=torch.long)
            table.index_put_((assigned, sensitive.cpu()), torch.ones_like(assigned),
                             accumulate=True)
            artifacts.append(rows_table(
                "group_vs_sensitive", ("group", *(f"attribute_{a}" for a in range(width))),
                ([k, *row] for k, row in enumerate(table.tolist()))))
        return EpochReport(metrics=metrics, artifacts=artifacts)

    return Built(
        program=program,
        predict=predict,
        modules=[*experts, gam],
        architecture=ArchitectureState(genotype=lambda: experts[largest_group()].genotype(),
                                       alphas=all_alphas, ops=setup.space.ops),
        param_count=count_parameters(expert_params) + count_parameters(gam_params),
        epoch_report=epoch_report,
    )


SKILL = Skill(
    name="fair",
    summary="Learning by Grouping (LBG/DALBG): a learned grouping, one NAS expert per group",
    knobs={
        "groups": Knob(2, "number of latent groups K = experts (thesis: 2)", low=2, high=16),
        "lam": Knob(0.1, "weight of the MMD between each group's embeddings and the rest "
                    "(0 = LBG, 0.1 = DALBG as the thesis)", low=0.0, high=100.0, tune=True,
                    search=(0.0, 1.0)),
        "mmd": Knob("linear", "MMD kernel: linear (mean embeddings, eq. 2.6/2.7) or gaussian "
                    "(DAN's multi-kernel)", choices=MMD_KINDS),
        "w_lr": Knob(0.025, "experts' SGD learning rate (DARTS)", low=1e-5, high=1.0, log=True,
                     tune=True, search=(0.005, 0.2)),
        "gam_lr": Knob(0.025, "group-assignment model's SGD learning rate (thesis: unstated; "
                       "the experts' rate)", low=1e-5, high=1.0, log=True, tune=True,
                       search=(0.005, 0.2)),
        "w_lr_min": Knob(0.001, "cosine floor of the experts' and GAM's rates", low=0.0,
                         high=0.1),
        "w_wd": Knob(3e-4, "weight decay of experts and GAM", low=0.0, high=0.01),
        "arch_lr": Knob(3e-4, "Adam learning rate of the experts' architectures (DARTS)",
                        low=1e-6, high=1.0, log=True, tune=True, search=(1e-4, 1e-2)),
        "arch_wd": Knob(1e-3, "architecture weight decay (DARTS)", low=0.0, high=0.1),
        "c_lr": Knob(0.05, "Adam learning rate of the grouping C (lazy: an entry moves only "
                     "in the steps whose batch holds its example)", low=1e-6, high=10.0,
                     log=True, tune=True, search=(1e-3, 0.5)),
        "order": Knob("bottom_up", "level update order: bottom_up (Algorithm 2: T, then the "
                      "experts, then C and A), top_down, or a permutation of gam,experts,group"),
        **ENCODER_KNOBS,
        "encoder_dim": Knob(32, "feature size of the GAM's encoder", choices=(16, 32, 64)),
    },
    build=build,
    methods=SECOND_ORDER_METHODS,
    levels=LEVELS,
)
