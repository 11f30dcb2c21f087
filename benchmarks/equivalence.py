"""Same inputs, two code paths, one number: how far apart their results are.

Used by `benchmarks.fast_paths` and the tests. The central check is that the naive DARTS
second-order step and skillearn's `finite_difference` hypergradient are the same algorithm:
same weights copied in, same batch, same momentum buffers, DARTS' top-down order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from benchmarks import cases
from benchmarks.naive import Architect, ArchitectSettings, Network
from benchmarks.naive.train_search import network_optimizer, weight_step
from skillearn.mlo import MultilevelProgram
from skillearn.search_spaces.darts import SuperNet
from skillearn.trainables import get_skill
from skillearn.trainables.setup import Built, Setup

ALPHA_PAIRS = (("alpha_normal", "alphas_normal"), ("alpha_reduce", "alphas_reduce"))


def relative_error(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """||a - b|| / ||b|| over lists of tensors taken as one vector (float64 accumulation)."""
    diff = torch.cat([(x.double() - y.double()).flatten() for x, y in zip(a, b, strict=True)])
    ref = torch.cat([y.double().flatten() for y in b])
    return float(diff.norm() / ref.norm().clamp_min(1e-30))


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build models and data in `dtype` (float64 makes the comparisons roundoff-free)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def smooth_activations(module: nn.Module) -> nn.Module:
    """Replace every ReLU by Softplus in place, so finite differences of gradients converge
    (a ReLU kink between w - eps v and w + eps v makes the DARTS difference meaningless)."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.Softplus())
        else:
            smooth_activations(child)
    return module


def build_skill(skill: str, method: str, variant: cases.Variant, device: torch.device,
                seed: int = 0, smooth: bool = False) -> tuple[Built, dict[str, tuple]]:
    """A skill built as a trial builds it, plus one batch per split."""
    data = cases.synthetic_bundle(variant, seed)
    config = cases.skill_config(skill, method, device, variant, seed)
    torch.manual_seed(seed)
    built = get_skill(skill).build(Setup(config=config, data=data, device=device,
                                         space=variant.space))
    if smooth:
        for module in built.modules:
            smooth_activations(module)
    return built, cases.engine_batches(data, device)


def _apply_weight_step(program: MultilevelProgram, batches: Mapping[str, Any]) -> None:
    """The real weight step of skillearn's DARTS level (gradient, clip 5, SGD)."""
    level = program.levels["weights"]
    grads, _ = program.gradient("weights", batches)
    params = list(level.params.values())
    for key, param in level.params.items():
        param.grad = grads[key].detach()
    torch.nn.utils.clip_grad_norm_(params, level.grad_clip)
    level.optimizer.step()
    for param in params:
        param.grad = None


def _paired_models(variant: cases.Variant, device: torch.device, method: str, seed: int
                   ) -> tuple[Built, dict[str, tuple], Network]:
    """skillearn's DARTS skill and the naive network holding the same weights and alphas."""
    built, batches = build_skill("darts", method, variant, device, seed)
    net: SuperNet = built.predict  # type: ignore[assignment]
    model = cases.naive_network(variant, device).train()
    model.load_state_dict({k: v for k, v in net.edgewise_state_dict().items()
                           if not k.startswith("alpha_")})
    for ours, theirs in ALPHA_PAIRS:
        getattr(model, theirs).data.copy_(getattr(net, ours).data)
    return built, batches, model


def naive_vs_skillearn_first_order(
    variant: cases.Variant, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64, seed: int = 0,
) -> float:
    """Relative error between DARTS' first-order alpha gradient (`_backward_step`) and
    skillearn's `first_order` gradient of the `arch` level."""
    device = torch.device(device)
    with default_dtype(dtype):
        built, batches, model = _paired_models(variant, device, "first_order", seed)
        ours, _ = built.program.gradient("arch", batches)
        architect = Architect(model, ArchitectSettings())
        architect.optimizer.zero_grad()
        architect._backward_step(*batches["val"][:2])
        theirs = [getattr(model, name).grad for _, name in ALPHA_PAIRS]
        return relative_error([ours[name] for name, _ in ALPHA_PAIRS], theirs)


def naive_vs_skillearn_second_order(
    variant: cases.Variant,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    weight_steps: int = 1,
) -> dict[str, float]:
    """Relative error between the naive DARTS second-order alpha gradient and skillearn's
    `finite_difference` hypergradient of the `arch` level, on identical state.

    `weight_steps` identical weight steps are taken first on both sides so that the SGD
    momentum buffers exist and the unrolled step mirrors them (DARTS' `moment` term).
    Returns the errors of the hypergradient, of the weights after those steps (must be ~0 for
    the comparison to mean anything), and of the unperturbed validation loss.
    """
    device = torch.device(device)
    with default_dtype(dtype):
        built, batches, model = _paired_models(variant, device, "finite_difference", seed)
        net: SuperNet = built.predict  # type: ignore[assignment]
        optimizer = network_optimizer(model)
        architect = Architect(model, ArchitectSettings())
        program = built.program
        x, y, _ = batches["train"]
        xv, yv, _ = batches["val"]

        for _ in range(weight_steps):
            _apply_weight_step(program, batches)
            weight_step(model, optimizer, x, y)
        ours_now = net.to_edgewise({k: p.detach() for k, p in net.weight_parameters().items()})
        theirs_now = dict(model.named_parameters())
        weights_error = relative_error([theirs_now[k].detach() for k in ours_now],
                                       list(ours_now.values()))

        ours, _ = program.gradient("arch", batches, method="finite_difference")
        eta = optimizer.param_groups[0]["lr"]
        architect.optimizer.zero_grad()
        architect._backward_step_unrolled(x, y, xv, yv, eta, optimizer)
        theirs = [getattr(model, name).grad for _, name in ALPHA_PAIRS]
        hyper_error = relative_error([ours[name] for name, _ in ALPHA_PAIRS], theirs)
        with torch.no_grad():
            loss_error = relative_error([model._loss(xv, yv)],
                                        [torch.nn.functional.cross_entropy(net(xv), yv)])
    return {"hypergradient": hyper_error, "weights_after_steps": weights_error,
            "val_loss": loss_error}


def supernet_vs_naive_network(
    variant: cases.Variant, device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None, seed: int = 0, fused: bool = True,
    smooth: bool = False,
) -> dict[str, float]:
    """skillearn's SuperNet (which skips the `none` op) against the original MixedOp sum:
    relative error of the logits and of the gradients of weights and alphas."""
    device = torch.device(device)
    data = cases.synthetic_bundle(variant, seed)
    torch.manual_seed(seed)
    net = SuperNet(variant.space, fused=fused).to(device).train().use_channels_last()
    model = cases.naive_network(variant, device).train()
    model.load_state_dict({k: v for k, v in net.edgewise_state_dict().items()
                           if not k.startswith("alpha_")})
    for ours, theirs in ALPHA_PAIRS:
        getattr(model, theirs).data.copy_(getattr(net, ours).data)
    if smooth:  # no ReLU kinks: float32 roundoff cannot flip an activation's gradient
        smooth_activations(net)
        smooth_activations(model)
    x, y = data.train.x.to(device), data.train.y.to(device)
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype
                else contextlib.nullcontext())
    results: dict[str, list[torch.Tensor]] = {}
    names = list(net.to_edgewise(net.weight_parameters()))  # DARTS' names, one order
    runs = [("ours", net, autocast), ("theirs", model, autocast)]
    if autocast_dtype:  # the reference in full precision: how far low precision alone moves it
        runs.append(("theirs_fp32", model, contextlib.nullcontext()))
    for key, module, context in runs:
        alphas = ([net.alpha_normal, net.alpha_reduce] if module is net
                  else model.arch_parameters())
        named = {n: p for n, p in module.named_parameters() if not n.startswith("alpha_")}
        with context:
            logits = module(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
        grads = torch.autograd.grad(loss, list(named.values()) + list(alphas))
        by_name = dict(zip(named, grads, strict=False))
        if module is net:
            by_name = net.to_edgewise(by_name)
        results[key] = ([logits.detach().float()] + [by_name[n].detach() for n in names]
                        + [g.detach() for g in grads[-2:]])
    n_weights = len(results["ours"]) - 3

    def errors(a: str, b: str, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}logits": relative_error(results[a][:1], results[b][:1]),
            f"{prefix}weight_grads": relative_error(results[a][1:1 + n_weights],
                                                    results[b][1:1 + n_weights]),
            f"{prefix}alpha_grads": relative_error(results[a][-2:], results[b][-2:]),
        }

    out = errors("ours", "theirs")
    if autocast_dtype:
        out |= errors("theirs", "theirs_fp32", prefix="reference_noise_")
    return out
