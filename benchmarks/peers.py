"""skillearn's engine against Betty (leopard-ai/betty, PyPI `betty-ml`) on Betty's own examples.

    python -m benchmarks.peers [--cases mwnet_mlp,mwnet_resnet32,darts_digits,darts_cifar64]
        [--steps 30] [--warmup 3] [--repeats 3] [--threads 1] [--no-memory] [--json PATH]

Cases (Betty's examples `learning_to_reweight` and `neural_architecture_search`):
- `mwnet_mlp`: Meta-Weight-Net on the digits (sklearn's 8x8, 40% uniform label noise), classifier
  MLP 64-256-256-10, batch 100 (train and clean meta batch), MW-Net 1-100-1;
- `mwnet_resnet32`: the same with MW-Net's ResNet-32 on CIFAR-shaped synthetic data (3x32x32);
- `darts_digits` / `darts_cifar64`: DARTS' second-order search step on the supernet of
  `benchmarks.cases` (`digits/full8`, and `cifar64` = the DARTS/Betty CIFAR-10 search setting:
  8 ops, 4 nodes, 8 cells, C=16, batch 64). Both engines step the *same* supernet (skillearn's,
  fused cells and NHWC as trials build it), so the comparison is of the engines, not the models.
Both engines get the optimizers of the papers (MW-Net: SGD 0.1 momentum 0.9 wd 5e-4 and Adam
1e-3 wd 1e-4; DARTS: SGD 0.025 momentum 0.9 wd 3e-4 clip 5 and Adam 3e-4 (0.5, 0.999) wd 1e-3),
one fixed batch per level, and the finite-difference hypergradient (skillearn
`finite_difference`, Betty `type="darts"`, radius 0.01). Betty is set up as its examples do
(`ImplicitProblem`s, `u2l`/`l2u`, inner `unroll_steps=1`, outer `retain_graph=True`); one Betty
step is one `Engine.train_step()` (the inner's step, then the outer's).

Reported per case, all three step functions timed interleaved in one process (`common`):
- step ratio = median step time / median time of a plain step (forward, backward and SGD step
  of the classifier / supernet weights on the train batch, plain cross entropy) for skillearn
  and for Betty, and skillearn's step time over Betty's; `--repeats` rebuilds and re-times,
  the summary is the median over repeats with the IQR of the per-round samples;
- peak memory of one step (a fresh process per engine on CPU, see `common`);
- hypergradient agreement on the same state (identical weights and batches):
  `mixed`: the second-order term -d/du <grad_w f(w, u), v> with the same v = grad_w of the upper
  loss, as Betty's `hypergradient.darts` and skillearn's `mixed_vjp_finite_difference` compute
  it, each also against the exact double-backward value; `engine`: the gradient each engine
  hands its upper optimizer in one step from that state (skillearn's through the one-step
  unroll w' = w - xi grad; Betty's after its inner step to w_{t+1}, the same point, with an
  identity inverse Hessian and the finite difference taken there: for MW-Net, whose upper loss
  has no direct term, both point the same way; for DARTS they weight the second-order term
  differently by design, xi vs 1, so this cosine is reported, not judged).
  Betty's MW-Net example detaches MW-Net's input *at the perturbed weights*, so its finite
  difference also differentiates through V's input; skillearn's `noise` variant reads the input
  at the current weights (MW-Net's `cost.data`). `mixed` therefore lists skillearn both ways:
  `noise` (the skill's quantity) and `input_grad` (the imbalance variant's, Betty's quantity).
- implicit hypergradients on the same state, lower level read at its current weights: the
  product -d/du <grad_w f, q> with q ~ H^{-1} v by a Neumann series (the same series in both:
  `IMPLICIT["neumann"]`) and by conjugate gradient (5 iterations each), skillearn's
  `mlo.implicit` against Betty's `hypergradient.neumann` / `hypergradient.cg` (for MW-Net the
  `noise` quantity, MW-Net's input detached at the current weights, as in Betty's example).
  Betty 0.1.x's CG builds the next direction from the *old* residual (`p_new = r + beta p` with
  r before its update), so after its first iteration it is no longer CG; the cosine shows it.
- Betty 0.1.x's finite-difference restore bug: `hypergradient/darts.py` perturbs the lower
  weights by +eps v and -2 eps v in place, then "restores" them with the out-of-place
  `p.data.add(...)`, so every hypergradient leaves them at w - eps v. The benchmark measures the
  displacement ||w_after - w_before|| (equal to `darts_alpha` = 0.01 when the bug is present).

Betty is optional: without it the Betty rows are skipped with a note. It installs on Python
3.11 only as release 0.1.1, without its (stale) pins:
`pip install --no-deps --target DIR betty-ml`, then run with `PYTHONPATH=DIR`.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import cases
from benchmarks.common import (
    environment,
    format_table,
    peak_step_memory_mb,
    release_memory,
    resolve_device,
    run_probe_subprocess,
    summarize,
    time_interleaved,
    write_json,
)
from skillearn.data import DataBundle
from skillearn.data.corruption import uniform_noise
from skillearn.mlo import Level, MultilevelProgram
from skillearn.mlo.hypergrad import mixed_vjp_exact, mixed_vjp_finite_difference
from skillearn.mlo.implicit import conjugate_gradient, neumann
from skillearn.reweighting.mwnet import MetaWeightNet
from skillearn.trainables import get_skill
from skillearn.trainables.classifiers import resnet32
from skillearn.trainables.mwnet import mwnet_train_loss
from skillearn.trainables.setup import Setup
from skillearn.trainables.weights import call_with, run_with

StepFn = Callable[[], Any]
PLAIN, SKILLEARN, SKILLEARN_REUSE, BETTY = "plain", "skillearn", "skillearn_reuse", "betty"
ENGINES = (PLAIN, SKILLEARN, SKILLEARN_REUSE, BETTY)
MULTILEVEL = (SKILLEARN, SKILLEARN_REUSE, BETTY)
FD_RADIUS = 0.01  # skillearn's fd_radius and Betty's darts_alpha (both default to it)
NOISE_RATE = 0.4
BETTY_INSTALL = ("pip install --no-deps --target DIR betty-ml (release 0.1.1 on Python 3.11), "
                 "then PYTHONPATH=DIR")


@dataclass(frozen=True)
class PeerCase:
    """One of Betty's examples at one size."""

    name: str
    kind: str  # "mwnet" or "darts"
    description: str
    classifier: str = "mlp"  # mwnet: "mlp" or "resnet32"
    input_shape: tuple[int, int, int] = (1, 8, 8)
    batch: int = 100
    hidden: tuple[int, ...] = (256, 256)  # mwnet MLP hidden widths
    digits: bool = False  # mwnet: sklearn's digits instead of random tensors
    variant: str = ""  # darts: a `benchmarks.cases` variant
    slow_on_cpu: bool = False


CASES: dict[str, PeerCase] = {c.name: c for c in (
    PeerCase("mwnet_mlp", "mwnet", "MW-Net, digits 40% uniform noise, MLP 64-256-256-10, "
             "batch 100, MW-Net 1-100-1", digits=True),
    PeerCase("mwnet_resnet32", "mwnet", "MW-Net, ResNet-32 on 3x32x32 synthetic, batch 100, "
             "MW-Net 1-100-1", classifier="resnet32", input_shape=(3, 32, 32),
             slow_on_cpu=True),
    PeerCase("darts_digits", "darts", "DARTS 2nd order, supernet digits/full8 (1x8x8, 8 ops, "
             "4 nodes, 3 cells, C=8), batch 64", variant="digits/full8"),
    PeerCase("darts_cifar64", "darts", "DARTS 2nd order, supernet cifar64 (3x32x32, 8 ops, "
             "4 nodes, 8 cells, C=16), batch 64", variant="cifar64", slow_on_cpu=True),
    # seconds-scale smoke configurations for the tests, not measurements
    PeerCase("mwnet_tiny", "mwnet", "smoke test: MLP 64-16-10, batch 8", batch=8,
             hidden=(16,)),
    PeerCase("darts_tiny", "darts", "smoke test: the `tiny` supernet", variant="tiny"),
)}
DEFAULT_CASES = ("mwnet_mlp", "mwnet_resnet32", "darts_digits")


# --------------------------------------------------------------------------------------------
# Betty (optional)
def betty_missing_reason() -> str | None:
    """None when Betty imports, else why not (the note printed instead of its rows)."""
    try:
        import betty
        import betty.engine  # noqa: F401
        from betty.problems import ImplicitProblem  # noqa: F401
    except Exception as error:  # any import failure means "no Betty rows", never a crash
        return (f"Betty is not importable ({type(error).__name__}: {error}); its rows are "
                f"skipped. To compare: {BETTY_INSTALL}")
    from betty.logging.logger_base import get_logger

    get_logger().setLevel(logging.WARNING)  # its engine logs problem tables to stdout at INFO
    return None if hasattr(betty, "__version__") else "Betty has no __version__"


def betty_version() -> str | None:
    try:
        import betty
    except Exception:
        return None
    return getattr(betty, "__version__", None)


class _Repeat:
    """A 'data loader' that yields the same batch forever (both engines see one fixed batch)."""

    def __init__(self, batch: tuple[torch.Tensor, ...]) -> None:
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


def _betty_problems(kind: str):
    """Betty's `ImplicitProblem`s for the two examples, as its example scripts write them."""
    from betty.problems import ImplicitProblem

    class MWNetInner(ImplicitProblem):  # examples/learning_to_reweight (MW-Net 1-100-1 form)
        def training_step(self, batch):
            x, y = batch
            losses = F.cross_entropy(self.module(x), y, reduction="none")
            weights = self.outer(losses.detach().reshape(-1, 1))
            return (weights * losses).mean()

    class MWNetOuter(ImplicitProblem):
        def training_step(self, batch):
            x, y = batch
            return F.cross_entropy(self.inner(x), y)

    class DartsInner(ImplicitProblem):  # examples/neural_architecture_search
        weights: list[torch.Tensor] = []

        def training_step(self, batch):
            x, y = batch
            return F.cross_entropy(self.module(x), y)

        def trainable_parameters(self):  # the supernet also holds the alphas: not ours
            return self.weights

        def parameters(self):
            return self.weights

    class DartsOuter(ImplicitProblem):
        def training_step(self, batch):
            x, y = batch
            return F.cross_entropy(self.inner(x), y)

    return (MWNetInner, MWNetOuter) if kind == "mwnet" else (DartsInner, DartsOuter)


class _AlphaHolder(nn.Module):
    """Betty's upper problem needs a module: this one holds the supernet's own alphas."""

    def __init__(self, alphas: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.alphas = nn.ParameterList(list(alphas.values()))


# --------------------------------------------------------------------------------------------
# the problems: models, batches, optimizers (shared by every engine)
@dataclass
class Parts:
    """One freshly seeded instance of a case: lower model, upper parameters, batches."""

    case: PeerCase
    lower: nn.Module
    lower_params: dict[str, torch.Tensor]
    upper_module: nn.Module
    upper_params: dict[str, torch.Tensor]
    train: tuple[torch.Tensor, torch.Tensor]
    upper_batch: tuple[torch.Tensor, torch.Tensor]
    program: MultilevelProgram | None = None  # darts: the skill's own program
    batches: dict[str, tuple] | None = None


def _mlp(case: PeerCase, num_classes: int = 10) -> nn.Module:
    widths = [int(np.prod(case.input_shape)), *case.hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


def _mwnet_batches(case: PeerCase, seed: int) -> tuple[tuple, tuple]:
    """(noisy train batch, clean meta batch): digits or random tensors shaped like CIFAR."""
    rng = np.random.default_rng(seed)
    n = case.batch
    if case.digits:
        from sklearn.datasets import load_digits

        digits = load_digits()
        order = rng.permutation(len(digits.target))[: 2 * n]
        x = torch.tensor(digits.images[order] / 16.0, dtype=torch.float32).unsqueeze(1)
        y = digits.target[order].astype(np.int64)
    else:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((2 * n, *case.input_shape), generator=gen)
        y = rng.integers(0, 10, size=2 * n)
    noisy = uniform_noise(y[:n], 10, NOISE_RATE, rng)
    return (x[:n], torch.as_tensor(noisy)), (x[n:], torch.as_tensor(y[n:]))


def mwnet_parts(case: PeerCase, device: torch.device, seed: int) -> Parts:
    train, meta = _mwnet_batches(case, seed)
    torch.manual_seed(seed)
    net = (_mlp(case) if case.classifier == "mlp" else resnet32(10, case.input_shape[0]))
    net = net.to(device).train()
    vnet = MetaWeightNet(1, (100,)).to(device).train()
    return Parts(case, net, dict(net.named_parameters()), vnet, dict(vnet.named_parameters()),
                 tuple(t.to(device) for t in train), tuple(t.to(device) for t in meta))


def darts_parts(case: PeerCase, device: torch.device, seed: int, reuse_grad: bool = False
                ) -> Parts:
    """The darts skill's program exactly as `benchmarks.cases.build_skill_step` builds it."""
    variant = cases.VARIANTS[case.variant]
    data: DataBundle = cases.synthetic_bundle(variant, seed)
    config = cases.skill_config("darts", "finite_difference", device, variant, seed)
    config["reuse_grad"] = reuse_grad
    torch.manual_seed(seed)
    built = get_skill("darts").build(Setup(config=config, data=data, device=device,
                                           space=variant.space))
    (net,) = built.modules
    net.train()
    program = built.program
    weights, arch = program.levels["weights"].params, program.levels["arch"].params
    batches = cases.engine_batches(data, device)
    return Parts(case, net, dict(weights), _AlphaHolder(arch), dict(arch),
                 batches["train"][:2], batches["val"][:2], program, batches)


def build_parts(case: PeerCase, device: torch.device, seed: int, reuse_grad: bool = False
                ) -> Parts:
    if case.kind == "mwnet":
        return mwnet_parts(case, device, seed)
    return darts_parts(case, device, seed, reuse_grad)


def _optimizers(parts: Parts) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, float]:
    """(lower SGD, upper Adam, lower grad clip or 0) with the papers' settings."""
    lower, upper = list(parts.lower_params.values()), list(parts.upper_params.values())
    if parts.case.kind == "mwnet":
        return (torch.optim.SGD(lower, lr=0.1, momentum=0.9, weight_decay=5e-4),
                torch.optim.Adam(upper, lr=1e-3, weight_decay=1e-4), 0.0)
    return (torch.optim.SGD(lower, lr=0.025, momentum=0.9, weight_decay=3e-4),
            torch.optim.Adam(upper, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3), 5.0)


# --------------------------------------------------------------------------------------------
# the three step functions
def plain_step(parts: Parts) -> StepFn:
    """Forward, backward, (clip,) SGD step of the lower weights on the train batch."""
    if parts.case.kind == "darts":
        for alpha in parts.upper_params.values():
            alpha.requires_grad_(False)
    optimizer, _, clip = _optimizers(parts)
    params = list(parts.lower_params.values())
    x, y = parts.train

    def step():
        loss = F.cross_entropy(parts.lower(x), y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def mwnet_program(parts: Parts, method: str = "finite_difference", detach_input: bool = True,
                  reuse_grad: bool = False) -> tuple[MultilevelProgram, dict[str, tuple]]:
    """The MW-Net program as the mwnet skill builds it (its train loss, order `top_down`),
    for any classifier; MW-Net's batch-mean normalisation (`weight_normalization=none`),
    which is also Betty's example's."""
    net, vnet, w, theta = parts.lower, parts.upper_module, parts.lower_params, parts.upper_params

    def forward(params, x):
        return call_with(net, params, (x,)), None  # as the skill's `logits_and_features`

    train_loss = mwnet_train_loss(forward, vnet, w, normalize=False, detach_input=detach_input)

    def meta_loss(p, b):
        x, y, _ = b["meta"]
        return F.cross_entropy(run_with(net, x, p["w"]), y)

    w_opt, theta_opt, _ = _optimizers(parts)
    program = MultilevelProgram(
        [Level("w", w, w_opt, train_loss), Level("theta", theta, theta_opt, meta_loss,
                                                 reads_lower=("w",))],
        method=method, order="top_down", fd_radius=FD_RADIUS, reuse_unroll_grad=reuse_grad)
    index = torch.arange(parts.case.batch, device=parts.train[0].device)
    return program, {"train": (*parts.train, index), "meta": (*parts.upper_batch, index)}


def skillearn_step(parts: Parts, reuse_grad: bool = False) -> StepFn:
    """`reuse_grad`: the lower level's real step reuses the gradient of the upper level's
    unroll (taken before the upper level moved): Betty's update order, one pass fewer."""
    if parts.case.kind == "darts":
        program, batches = parts.program, parts.batches
    else:
        program, batches = mwnet_program(parts, reuse_grad=reuse_grad)
    return lambda: program.step(batches)


@dataclass
class BettySide:
    engine: Any
    inner: Any
    outer: Any


def betty_side(parts: Parts, device: torch.device) -> BettySide:
    """Betty's engine over the same modules, optimizers' settings and batches."""
    from betty.configs import Config, EngineConfig
    from betty.engine import Engine

    inner_cls, outer_cls = _betty_problems(parts.case.kind)
    lower_opt, upper_opt, clip = _optimizers(parts)
    if parts.case.kind == "darts":
        inner_cls.weights = list(parts.lower_params.values())
    outer = outer_cls(name="outer", module=parts.upper_module, optimizer=upper_opt,
                      config=Config(type="darts", retain_graph=True, darts_alpha=FD_RADIUS),
                      train_data_loader=_Repeat(parts.upper_batch), device=device)
    inner = inner_cls(name="inner", module=parts.lower, optimizer=lower_opt,
                      config=Config(type="darts", unroll_steps=1, gradient_clipping=clip,
                                    darts_alpha=FD_RADIUS),
                      train_data_loader=_Repeat(parts.train), device=device)
    engine = Engine(problems=[outer, inner],
                    config=EngineConfig(train_iters=1, valid_step=10**9),
                    dependencies={"u2l": {outer: [inner]}, "l2u": {inner: [outer]}})
    return BettySide(engine, inner, outer)


def betty_step(parts: Parts, device: torch.device) -> StepFn:
    side = betty_side(parts, device)

    def step():
        side.engine.global_step += 1
        side.engine.train_step()

    return step


def build_step(engine: str, case: PeerCase, device: torch.device, seed: int) -> StepFn:
    parts = build_parts(case, device, seed, reuse_grad=engine == SKILLEARN_REUSE)
    if engine == PLAIN:
        return plain_step(parts)
    if engine in (SKILLEARN, SKILLEARN_REUSE):
        return skillearn_step(parts, reuse_grad=engine == SKILLEARN_REUSE)
    if engine == BETTY:
        return betty_step(parts, device)
    raise ValueError(f"unknown engine {engine!r}")


# --------------------------------------------------------------------------------------------
# hypergradients on the same state
def cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    u = torch.cat([t.reshape(-1) for t in a]).double()
    v = torch.cat([t.reshape(-1) for t in b]).double()
    return float(u @ v / (u.norm() * v.norm()).clamp_min(1e-300))


def _lower_loss_at(parts: Parts, detach_input: bool) -> Callable[[Sequence[torch.Tensor]], Any]:
    """The lower level's loss at weights `w_values` with the current upper parameters."""
    keys = list(parts.lower_params)
    if parts.case.kind == "darts":
        level = parts.program.levels["weights"]
        levels = parts.program.levels

        def loss_at(w_values):
            view = {name: lvl.params for name, lvl in levels.items()}
            view["weights"] = dict(zip(keys, w_values, strict=True))
            return level.loss(view, parts.batches)

        return loss_at
    program, batches = mwnet_program(parts, detach_input=detach_input)
    level = program.levels["w"]

    def loss_at(w_values):
        view = {"w": dict(zip(keys, w_values, strict=True)), "theta": parts.upper_params}
        return level.loss(view, batches)

    return loss_at


def _upper_v(parts: Parts) -> list[torch.Tensor]:
    """v = grad_w of the upper loss at the current weights (the same vector for both)."""
    x, y = parts.upper_batch
    w = list(parts.lower_params.values())
    with torch.enable_grad():
        loss = F.cross_entropy(parts.lower(x), y)
        return list(torch.autograd.grad(loss, w))


# the implicit methods' settings, the same for both engines (alpha below 2/lambda_max(H))
IMPLICIT: dict[str, dict[str, float]] = {"neumann": {"iterations": 5, "alpha": 0.01},
                                         "conjugate_gradient": {"iterations": 5}}


def _implicit_agreement(parts: Parts, side: BettySide, v: list[torch.Tensor]) -> dict[str, Any]:
    """skillearn's implicit products against Betty's on the current state (w unchanged)."""
    from betty.hypergradient.cg import cg as betty_cg
    from betty.hypergradient.neumann import neumann as betty_neumann

    w = list(parts.lower_params.values())
    theta = list(parts.upper_params.values())
    loss_at = _lower_loss_at(parts, detach_input=True)
    neumann_settings = IMPLICIT["neumann"]
    cg_settings = IMPLICIT["conjugate_gradient"]
    config = side.inner.config
    config.neumann_iterations = int(neumann_settings["iterations"])
    config.neumann_alpha = neumann_settings["alpha"]
    config.cg_iterations, config.cg_alpha = int(cg_settings["iterations"]), 1.0
    side.inner.cur_batch = parts.train
    ours = {
        "neumann": neumann(loss_at, w, theta, v, **neumann_settings),
        "conjugate_gradient": conjugate_gradient(loss_at, w, theta, v, tolerance=0.0,
                                                 **cg_settings),
    }
    theirs = {"neumann": betty_neumann([t.clone() for t in v], side.inner, side.outer),
              "conjugate_gradient": betty_cg([t.clone() for t in v], side.inner, side.outer)}
    theirs = {method: [torch.zeros_like(t) if g is None else g
                       for g, t in zip(grads, theta, strict=True)]
              for method, grads in theirs.items()}
    result: dict[str, Any] = {method: {"cos_skillearn_betty": cosine([-g for g in ours[method]],
                                                                     theirs[method])}
                              for method in ours}
    # CG's reference: four times the iterations (it has converged where H is positive definite);
    # v'Hv/|v|^2 < 0 means CG meets negative curvature at once: skillearn then stops and takes
    # the one-step direction, Betty divides by the negative curvature and flips the sign
    converged = [-g for g in conjugate_gradient(loss_at, w, theta, v, tolerance=0.0,
                                                iterations=4 * int(cg_settings["iterations"]))]
    cg = result["conjugate_gradient"]
    cg["cos_skillearn_converged"] = cosine([-g for g in ours["conjugate_gradient"]], converged)
    cg["cos_betty_converged"] = cosine(theirs["conjugate_gradient"], converged)
    with torch.enable_grad():
        w_leaf = [t.detach().requires_grad_(True) for t in w]
        grads = torch.autograd.grad(loss_at(w_leaf), w_leaf, create_graph=True)
        hv = torch.autograd.grad(grads, w_leaf, v)
    cg["vHv_over_vv"] = float(sum((a * b).sum() for a, b in zip(v, hv, strict=True))
                              / sum((a * a).sum() for a in v))
    return result


def hypergradient_agreement(case: PeerCase, device: torch.device, seed: int,
                            with_betty: bool) -> dict[str, Any]:
    """Cosines of the second-order term and of the engines' full hypergradients on one state,
    and Betty's restore-bug displacement."""
    parts = build_parts(case, device, seed)
    w = list(parts.lower_params.values())
    theta = list(parts.upper_params.values())
    v = _upper_v(parts)
    result: dict[str, Any] = {"mixed": {}, "engine": {}}
    variants = ("noise", "input_grad") if case.kind == "mwnet" else ("default",)
    skillearn_mixed, exact = {}, {}
    for variant in variants:
        loss_at = _lower_loss_at(parts, detach_input=variant == "noise")
        fd = mixed_vjp_finite_difference(loss_at, w, theta, v, radius=FD_RADIUS)
        skillearn_mixed[variant] = [-g for g in fd]
        exact[variant] = [-g for g in mixed_vjp_exact(loss_at, w, theta, v)]
        result["mixed"][variant] = {
            "cos_skillearn_exact": cosine(skillearn_mixed[variant], exact[variant])}
    if case.kind == "mwnet":
        program, batches = mwnet_program(parts)
        upper_name = "theta"
    else:
        program, batches, upper_name = parts.program, parts.batches, "arch"
    skillearn_full, _ = program.gradient(upper_name, batches)
    skillearn_full = [skillearn_full[k] for k in parts.upper_params]
    # the method's own hypergradient, exactly: double backward through the one-step unroll
    exact_full, _ = program.gradient(upper_name, batches, method="exact")
    exact_full = [exact_full[k] for k in parts.upper_params]
    result["engine"]["cos_skillearn_exact"] = cosine(skillearn_full, exact_full)
    if not with_betty:
        return result

    from betty.hypergradient.darts import darts as betty_darts

    side = betty_side(parts, device)
    side.inner.cur_batch = parts.train
    before = [p.detach().clone() for p in w]
    betty_mixed = list(betty_darts([t.clone() for t in v], side.inner, side.outer))
    displacement = float(torch.cat([(p.detach() - b).reshape(-1)
                                    for p, b in zip(w, before, strict=True)]).norm())
    with torch.no_grad():
        for p, b in zip(w, before, strict=True):
            p.copy_(b)
    result["implicit"] = _implicit_agreement(parts, side, v)
    betty_quantity = "input_grad" if case.kind == "mwnet" else "default"
    for variant in variants:
        result["mixed"][variant]["cos_skillearn_betty"] = cosine(skillearn_mixed[variant],
                                                                 betty_mixed)
    result["mixed"]["betty"] = {"quantity": betty_quantity,
                                "cos_betty_exact": cosine(betty_mixed, exact[betty_quantity])}
    result["betty_restore_displacement"] = displacement
    result["betty_restore_expected_if_buggy"] = FD_RADIUS

    # Betty's upper gradient for one engine step from this state: its inner step first (as
    # its engine orders them; skillearn's unroll mirrors that SGD step), then the outer's
    # gradient at the new weights, without the outer optimizer step
    side.inner.one_step_descent()
    outer = side.outer
    loss, _ = outer.get_loss(parts.upper_batch)
    outer.backward(loss=loss, params=outer.trainable_parameters(), paths=outer._paths,
                   create_graph=not outer._first_order, retain_graph=outer._retain_graph,
                   allow_unused=outer._allow_unused)
    betty_full = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                  for p in outer.trainable_parameters()]
    outer.zero_grad()
    result["engine"].update(cos_skillearn_betty=cosine(skillearn_full, betty_full),
                            cos_betty_exact=cosine(betty_full, exact_full),
                            judged=case.kind == "mwnet")
    return result


# --------------------------------------------------------------------------------------------
# driver
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed rounds per repeat (default 30; 4 for CIFAR shapes on CPU)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="discarded warm-up rounds (default 3; 1 for CIFAR shapes on CPU)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rebuild and re-time this many times (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory probes")
    parser.add_argument("--hypergradients-only", action="store_true",
                        help="only the hypergradient agreement (no timing, no memory)")
    parser.add_argument("--no-betty", action="store_true",
                        help="skillearn side only, even if Betty is importable")
    parser.add_argument("--json", default=None, help="write every figure to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no per-step progress lines")
    # internal: measure one engine's CPU peak memory in this (fresh) process
    parser.add_argument("--probe-memory", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _probe(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.probe_memory == BETTY:
        betty_missing_reason()  # quiets Betty's logger
    step = build_step(args.probe_memory, CASES[args.case], device, args.seed)
    step()
    peak_mb, method = peak_step_memory_mb(step, device)
    print(json.dumps({"engine": args.probe_memory, "peak_mb": peak_mb, "method": method}))


def _log(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def ratio_keys(engines: Sequence[str]) -> list[tuple[str, str, str]]:
    """(key, numerator, denominator): every multilevel engine over the plain step, and each
    skillearn engine over Betty."""
    keys = [(f"{e}/plain", e, PLAIN) for e in engines if e != PLAIN]
    if BETTY in engines:
        keys += [(f"{e}/betty", e, BETTY) for e in engines if e in (SKILLEARN, SKILLEARN_REUSE)]
    return keys


def run_case(case: PeerCase, device: torch.device, args: argparse.Namespace,
             engines: tuple[str, ...]) -> dict[str, Any]:
    slow = device.type == "cpu" and case.slow_on_cpu
    warmup = args.warmup if args.warmup is not None else (1 if slow else 3)
    timed = args.steps if args.steps is not None else (4 if slow else 30)
    _log(args, f"== {case.name}: {', '.join(engines)}; {args.repeats} x ({warmup} warm-up + "
               f"{timed} timed) interleaved rounds on {device.type}")
    keys = ratio_keys(engines)
    repeats: list[dict[str, Any]] = []
    samples: dict[str, list[float]] = {e: [] for e in engines}
    for repeat in range(args.repeats):
        steps = {e: build_step(e, case, device, args.seed) for e in engines}
        timings = time_interleaved(steps, device, warmup, timed,
                                   progress=None if args.quiet else lambda m: _log(args, m))
        del steps
        release_memory()
        medians = {e: t.median_ms for e, t in timings.items()}
        for e, t in timings.items():
            samples[e].extend(t.samples_ms)
        ratios = {key: _ratio(medians[a], medians[b]) for key, a, b in keys}
        repeats.append({"medians_ms": medians, "ratios": ratios})
        _log(args, f"  repeat {repeat + 1}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in ratios.items() if v is not None))
    pooled = {e: summarize([s / 1000 for s in values]).to_dict() for e, values in samples.items()}

    def spread(key: str) -> dict[str, float]:
        values = [r["ratios"][key] for r in repeats]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    memory: dict[str, dict[str, Any]] = {}
    if not args.no_memory:
        for engine in engines:
            if device.type == "cuda":
                step = build_step(engine, case, device, args.seed)
                step()
                peak_mb, method = peak_step_memory_mb(step, device)
                del step
            else:
                result = run_probe_subprocess(
                    "benchmarks.peers", ["--probe-memory", engine, "--case", case.name,
                                         "--threads", str(args.threads), "--seed",
                                         str(args.seed)], args.threads)
                peak_mb, method = result["peak_mb"], result["method"]
            memory[engine] = {"peak_mb": peak_mb, "method": method}
            _log(args, f"  memory {engine}: {peak_mb:.1f} MB ({method})")
    peaks = {e: m["peak_mb"] for e, m in memory.items()}
    memory_ratios = {key: _ratio(peaks.get(a), peaks.get(b)) for key, a, b in keys}
    agreement = hypergradient_agreement(case, device, args.seed, BETTY in engines)
    return {
        "case": case.name,
        "description": case.description,
        "warmup": warmup,
        "timed_steps": timed,
        "repeats": repeats,
        "pooled_timings": pooled,
        "step_ratios": {key: spread(key) for key, _, _ in keys},
        "memory": memory,
        "memory_ratios": memory_ratios,
        "hypergradients": agreement,
    }


def print_case(result: dict[str, Any]) -> None:
    rows = []
    plain_memory = result["memory"].get(PLAIN, {}).get("peak_mb")
    for engine, timing in result["pooled_timings"].items():
        ratio = result["step_ratios"].get(f"{engine}/plain", {"median": 1.0, "min": 1.0,
                                                               "max": 1.0})
        memory = result["memory"].get(engine, {}).get("peak_mb")
        rows.append([engine, timing["median_ms"], timing["iqr_ms"], ratio["median"],
                     f"{ratio['min']:.2f}-{ratio['max']:.2f}", memory,
                     _ratio(memory, plain_memory)])
    print(f"\n### {result['case']}: {result['description']} ({len(result['repeats'])} repeats x "
          f"{result['timed_steps']} timed rounds after {result['warmup']} warm-up)")
    print(format_table(["engine", "median ms", "IQR ms", "step ratio", "range over repeats",
                        "peak MB", "memory ratio"], rows))
    between = [[key, r["median"], f"{r['min']:.2f}-{r['max']:.2f}",
                result["memory_ratios"].get(key)]
               for key, r in result["step_ratios"].items() if key.endswith("/betty")]
    if between:
        print(format_table(["skillearn over Betty", "step time", "range over repeats",
                            "peak memory"], between))
    hyper = result["hypergradients"]
    hyper_rows = []
    for quantity, values in hyper["mixed"].items():
        for key, value in values.items():
            if key != "quantity":
                hyper_rows.append([f"mixed/{quantity}", key, value])
    for key, value in hyper["engine"].items():
        hyper_rows.append(["engine", key, value])
    for method, values in hyper.get("implicit", {}).items():
        for key, value in values.items():
            hyper_rows.append([f"implicit/{method}", key, value])
    if "betty_restore_displacement" in hyper:
        hyper_rows.append(["betty restore bug", "||w_after - w_before|| (0.01 = buggy)",
                           hyper["betty_restore_displacement"]])
    print(format_table(["hypergradient", "measure", "value"], hyper_rows))


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.probe_memory:
        _probe(args)
        return None
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    names = tuple(s.strip() for s in args.cases.split(",") if s.strip())
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise SystemExit(f"unknown case(s) {unknown or args.cases!r}; choose from "
                         f"{', '.join(CASES)}")
    missing = "--no-betty was given" if args.no_betty else betty_missing_reason()
    engines = tuple(e for e in ENGINES if e != BETTY) if missing else ENGINES
    payload: dict[str, Any] = {
        "benchmark": "peers",
        "environment": {**environment(device, args.threads), "betty": betty_version()},
        "args": {k: v for k, v in vars(args).items() if k not in ("probe_memory", "case")},
        "notes": [f"Betty rows skipped: {missing}"] if missing else [],
        "results": [],
    }
    print(f"# peers on {payload['environment']['device_name']} ({device.type}), torch "
          f"{torch.__version__}, Betty {payload['environment']['betty'] or 'absent'}, "
          f"{args.threads} thread(s)")
    if missing:
        print(f"note: Betty rows skipped: {missing}")
    for name in names:
        if args.hypergradients_only:
            result = {"case": name, "hypergradients": hypergradient_agreement(
                CASES[name], device, args.seed, BETTY in engines)}
            print(f"\n### {name}\n" + json.dumps(result["hypergradients"], indent=1))
        else:
            result = run_case(CASES[name], device, args, engines)
            print_case(result)
        payload["results"].append(result)
        if args.json:
            write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
