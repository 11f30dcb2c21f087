"""Learning by Passing Tests for NAS (seed 001, section 3, eqs. 6-19): a tester creates a
hard but meaningful test; the testee's architecture learns to pass it.

    W*(A)        = argmin_W L(A, W, D_train)                                  level `weights`
    E*, X*(C)    = argmin_{E,X} L(E, X, D_train) + gamma * L(E, X, sigma)     level `tester`
    A            = argmin_A  difficulty(A, W*(A), C, E*(C))                   level `arch`
    C            = argmax_C  difficulty(...) - lambda * L(E*(C), X*(C), D_val)  level `creator`
    sigma(C, E, D_b) = {(d, f(d)) : d in D_b},  f(d) = sigmoid(C(E(d)))       eqs. 12-14
    difficulty = sum_d f(d) l(A, W, d) / sum_d f(d)                          eq. 9 (soft)

The seed's top level is one min-max over (A, C); here it is two top levels that read the same
unrolled W' and (E', X') and differ in direction: `creator` declares `maximize=True`, so the
engine ascends it in the real step and in the hypergradient (no hand-negated loss). The update
order is the seed's Algorithm 2: A, C, (E, X), W (`order=arch,creator,tester,weights`).

Defaults: lambda = gamma = 1 (both tuned by TPE in a sweep); C under Adam 3e-4, wd 1e-3 (the
seed's); E, X under SGD 0.025 cosine, momentum 0.9, wd 3e-4 (the seed's); W and A as DARTS.
The testee never names its backbone: it is whatever `build_supernet` gives.

Deviations from the paper that remain:
- D_b (the test bank) and D_er^(val) are both the validation split (the seed uses its 25K
  validation half for both); a step's test is the validation minibatch, so sum_d runs over a
  batch, and the tester's weighted test loss is mean_d f(d) l(d) over the batch (the seed's
  sum over D_b would scale gamma with the bank's size).
- C is one linear layer with a sigmoid (the paper: "one feed-forward layer", squashing
  unnamed); X is one linear layer on E's features. E is the small CNN on <= 16 px inputs, else
  a randomly initialised ResNet-18 (the seed: ResNet-18/50, `encoder=resnet50`, and ImageNet
  weights through `encoder_weights`).
- C starts at zero (f = 1/2 for every example: no preference before it learns one); the
  paper does not say how C is initialised.
- The hypergradient keeps C's direct path through f (the seed's eq. 23 drops it).
With `method=first_order` (xi = 0) C learns from the difficulty's direct path through f only:
E' = E, so the meaningfulness term has no gradient on C and lambda does nothing.
Ablations of the seed: `ablation=difficulty_only` drops the meaningfulness term (lambda = 0);
`ablation=test_only` trains the tester on the created test only (no D_er^(tr) term).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from skillearn.artifacts import EpochReport, Image, rows_table
from skillearn.mlo import Level
from skillearn.trainables.architecture import ArchitectureState
from skillearn.trainables.encoders import ENCODER_KNOBS, auto_encoder_kind, make_encoder
from skillearn.trainables.setup import Built, Setup, build_supernet, program_for
from skillearn.trainables.skill import Knob, Skill
from skillearn.trainables.weights import count_parameters, run_with

LEVELS = ("weights", "tester", "arch", "creator")
SEED_ORDER = "arch,creator,tester,weights"  # Algorithm 2: A, C, (E, X), W
ABLATIONS = ("none", "difficulty_only", "test_only")
TOP_TESTS = 16  # test examples shown by f each epoch
EVAL_ROWS = 512  # validation rows the per-epoch f statistics are computed on


class Tester(nn.Module):
    """Encoder E with two heads on its features: the test creator C (one logit: f = sigmoid)
    and the target-task executor X (class logits)."""

    def __init__(self, encoder: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.creator = nn.Linear(feature_dim, 1)
        self.executor = nn.Linear(feature_dim, num_classes)
        nn.init.zeros_(self.creator.weight)  # the first test is every example at f = 1/2
        nn.init.zeros_(self.creator.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        return self.creator(features).squeeze(1), self.executor(features)


def soft_test_difficulty(selection: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """The size-normalised test loss sum f*l / sum f (seed eqs. 9, 13, 14): the f-weighted mean
    of the testee's per-example losses, so a bigger test is not a harder one."""
    return (selection * losses).sum() / selection.sum().clamp_min(1e-12)


def feature_dim(encoder: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(encoder(torch.zeros(2, *input_shape)).shape[1])


def build(setup: Setup) -> Built:
    cfg, data, device = setup.config, setup.data, setup.device
    net = build_supernet(setup)
    weights, arch = net.weight_parameters(), net.arch_parameters()
    encoder_kind = auto_encoder_kind(cfg["encoder"], data.input_shape)
    encoder = make_encoder(encoder_kind, data.input_shape[0], cfg["encoder_dim"],
                           cfg["encoder_weights"])
    tester = Tester(encoder, feature_dim(encoder, data.input_shape), data.num_classes).to(device)
    named = dict(tester.named_parameters())
    creator = {k: v for k, v in named.items() if k.startswith("creator.")}
    learner = {k: v for k, v in named.items() if not k.startswith("creator.")}  # E and X
    lam = 0.0 if cfg["ablation"] == "difficulty_only" else cfg["lam"]
    tester_train_weight = 0.0 if cfg["ablation"] == "test_only" else 1.0

    def run_tester(p, x):
        return run_with(tester, x, p["tester"], p["creator"])

    def weights_loss(p, b):
        x, y, _ = b["train"]
        return F.cross_entropy(run_with(net, x, p["weights"], p["arch"]), y)

    def tester_loss(p, b):  # eq. 7 with the soft test of eq. 13
        x, y, _ = b["train"]
        xb, yb, _ = b["val"]
        f_logit, logits = run_tester(p, torch.cat([x, xb]))
        f = torch.sigmoid(f_logit[len(x):])
        on_test = F.cross_entropy(logits[len(x):], yb, reduction="none")
        on_train = F.cross_entropy(logits[: len(x)], y)
        return tester_train_weight * on_train + cfg["gamma"] * (f * on_test).mean()

    def difficulty(p, b):
        xb, yb, _ = b["val"]
        f = torch.sigmoid(run_tester(p, xb)[0])
        losses = F.cross_entropy(run_with(net, xb, p["weights"], p["arch"]), yb,
                                 reduction="none")
        return soft_test_difficulty(f, losses)

    def creator_objective(p, b):  # eq. 10, ascended by the creator
        hard = difficulty(p, b)
        if lam == 0.0:
            return hard
        xv, yv, _ = b["val"]
        meaningless = F.cross_entropy(run_tester(p, xv)[1], yv)
        return hard - lam * meaningless

    def cosine(opt):
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"],
                                                          eta_min=cfg["w_lr_min"])

    w_opt = torch.optim.SGD(weights.values(), lr=cfg["w_lr"], momentum=0.9,
                            weight_decay=cfg["w_wd"])
    t_opt = torch.optim.SGD(learner.values(), lr=cfg["tester_lr"], momentum=0.9,
                            weight_decay=cfg["w_wd"])
    a_opt = torch.optim.Adam(arch.values(), lr=cfg["arch_lr"], betas=(0.5, 0.999),
                             weight_decay=cfg["arch_wd"])
    c_opt = torch.optim.Adam(creator.values(), lr=cfg["creator_lr"], betas=(0.5, 0.999),
                             weight_decay=cfg["creator_wd"])
    levels = [
        Level("weights", weights, w_opt, weights_loss, grad_clip=5.0, scheduler=cosine(w_opt),
              reads_upper=("arch",)),
        Level("tester", learner, t_opt, tester_loss, grad_clip=5.0, scheduler=cosine(t_opt),
              reads_upper=("creator",)),
        Level("arch", arch, a_opt, difficulty, reads_lower=("weights", "tester")),
        Level("creator", creator, c_opt, creator_objective, reads_lower=("weights", "tester"),
              maximize=True, grad_clip=5.0),
    ]
    return Built(
        program=program_for(levels, cfg),
        predict=net,
        modules=[net, tester],
        architecture=ArchitectureState.of_supernet(net),
        param_count=count_parameters(weights),
        epoch_report=lpt_report(net, tester, setup, encoder_kind),
    )


def selection_report(f: torch.Tensor, testee_wrong: torch.Tensor) -> dict[str, float]:
    """What the created test looks like: its size sum f (as a share of the bank), the spread of
    f, the mean binary entropy of the selection, and f on examples the testee gets wrong vs
    right and the AUC of f ranking wrong above right (the seed's claim: a hard test weighs the
    wrong ones more)."""
    p = f.clamp(1e-6, 1 - 1e-6)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).mean()
    report = {"f_mean": float(f.mean()), "f_std": float(f.std()),
              "f_entropy": float(entropy), "f_wrong_share": float(testee_wrong.float().mean())}
    if bool(testee_wrong.any()) and bool((~testee_wrong).any()):
        report["f_on_wrong"] = float(f[testee_wrong].mean())
        report["f_on_right"] = float(f[~testee_wrong].mean())
        report["f_wrong_auc"] = ranking_auc(f[testee_wrong], f[~testee_wrong])
    return report


def ranking_auc(higher: torch.Tensor, lower: torch.Tensor) -> float:
    """P(a score of `higher` > one of `lower`), ties counted half (Mann-Whitney AUC)."""
    diff = higher[:, None] - lower[None, :]
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


def image_grid_png(images: torch.Tensor, columns: int = 8) -> bytes:
    """A PNG of `images` (N, C, H, W) in a grid, each rescaled to 0..255 on its own."""
    from PIL import Image as PILImage

    x = images.detach().float().cpu()
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    x = ((x - low) / (high - low).clamp_min(1e-12) * 255).to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, _, h, w = x.shape
    rows = -(-n // columns)
    grid = torch.zeros(3, rows * (h + 1), columns * (w + 1), dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        grid[:, r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = x[i, :3]
    scale = max(1, 64 // max(h, 1))
    picture = PILImage.fromarray(grid.permute(1, 2, 0).numpy())
    picture = picture.resize((picture.width * scale, picture.height * scale), PILImage.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def lpt_report(net: nn.Module, tester: Tester, setup: Setup,
               encoder_kind: str) -> Callable[[], EpochReport]:
    """Each epoch, on the first EVAL_ROWS of the test bank: the selection's statistics, the
    testee's difficulty, the tester's validation loss, and the top tests by f (table + grid)."""
    data, device = setup.data, setup.device

    @torch.no_grad()
    def epoch_report() -> EpochReport:
        rows = slice(0, min(EVAL_ROWS, len(data.val)))
        x, y, ids = (t[rows].to(device) for t in (data.val.x, data.val.y, data.val.index))
        f_logit, tester_logits = tester(x)
        f = torch.sigmoid(f_logit)
        testee_logits = net(x)
        losses = F.cross_entropy(testee_logits, y, reduction="none")
        metrics = {
            **selection_report(f, testee_logits.argmax(1) != y),
            "difficulty": float(soft_test_difficulty(f, losses)),
            "tester_val_loss": float(F.cross_entropy(tester_logits, y)),
            "tester_val_acc": float((tester_logits.argmax(1) == y).float().mean()),
            "encoder": encoder_kind,
        }
        top = torch.argsort(f, descending=True)[:TOP_TESTS]
        table = rows_table("lpt_top_tests", ["example", "label", "f", "testee_loss"],
                           zip(ids[top].tolist(), y[top].tolist(), f[top].tolist(),
                               losses[top].tolist(), strict=True))
        grid = Image.from_png("lpt_top_tests", image_grid_png(x[top]))
        return EpochReport(metrics=metrics, artifacts=[table, grid])

    return epoch_report


SKILL = Skill(
    name="lpt",
    summary="Learning by Passing Tests: a tester creates hard, meaningful tests; the "
            "architecture learns to pass them",
    knobs={
        "lam": Knob(1.0, "lambda: weight of the tester's validation loss (meaningfulness) "
                    "against the test's difficulty in the creator's objective",
                    low=0.0, high=100.0, tune=True, search=(0.05, 5.0), log=True),
        "gamma": Knob(1.0, "gamma: weight of the created test in the tester's training loss",
                      low=0.0, high=100.0, tune=True, search=(0.05, 5.0), log=True),
        "ablation": Knob("none", "seed ablations: difficulty_only (no meaningfulness term) or "
                         "test_only (tester trained on the created test only)",
                         choices=ABLATIONS),
        "w_lr": Knob(0.025, "SGD learning rate of the testee's weights W", low=1e-5, high=1.0,
                     log=True, tune=True, search=(0.005, 0.2)),
        "w_lr_min": Knob(0.001, "cosine schedule floor of W and of the tester", low=0.0,
                         high=0.1),
        "w_wd": Knob(3e-4, "weight decay of W, E and X", low=0.0, high=0.01),
        "tester_lr": Knob(0.025, "SGD learning rate of the tester's encoder E and executor X",
                          low=1e-5, high=1.0, log=True),
        "arch_lr": Knob(3e-4, "Adam learning rate of the architecture A", low=1e-6, high=1.0,
                        log=True, tune=True, search=(1e-4, 1e-2)),
        "arch_wd": Knob(1e-3, "weight decay of the architecture A", low=0.0, high=0.1),
        "creator_lr": Knob(3e-4, "Adam learning rate of the test creator C (seed: 3e-4)",
                           low=1e-6, high=1.0, log=True),
        "creator_wd": Knob(1e-3, "weight decay of the test creator C (seed: 1e-3)", low=0.0,
                           high=0.1),
        "order": Knob(SEED_ORDER, "level update order: arch,creator,tester,weights (the seed's "
                      "Algorithm 2), bottom_up, top_down, or any permutation of the levels"),
        **ENCODER_KNOBS,
        "encoder_dim": Knob(32, "feature size of the small encoder", choices=(16, 32, 64)),
    },
    build=build,
    levels=LEVELS,
)
