"""Check (not time) that each fast path computes what the plain path computes on the same inputs.

    python -m benchmarks.fast_paths [--device cpu|cuda] [--size tiny|digits/reduced|...]
        [--json PATH]

Checks, each a relative error ||fast - plain|| / ||plain|| against a tolerance:
1. supernet: skillearn's SuperNet (skips the `none` op; fused cells, and the edge-by-edge cells
   with polyphase dilated convs on CPU; NHWC) vs the original DARTS MixedOp sum (NCHW), logits
   and gradients: float64 (<= 1e-9), and with ReLU -> Softplus in both nets float32 (<= 1e-5)
   and bf16 autocast (<= max(1e-2, 2x the naive net's own bf16-vs-float32 error)). With
   ReLUs, float32 roundoff flips the odd activation that sits at 0 and moves a gradient by
   ~1e-4, which says nothing about the fast path;
2. darts_fd_vs_naive_second_order: skillearn's `finite_difference` hypergradient vs the naive
   DARTS second-order step (same weights, batch and momentum buffers), float64 (<= 1e-9);
   float32 is reported, not judged: the difference quotient divides roundoff by 2R;
3. fd_vs_exact: the finite-difference vs the exact hypergradient on a smooth-activation
   supernet (ReLU -> Softplus, no max-pool). This is an approximation, not a rewrite: its
   tolerance is the O(r^2) truncation plus float32 roundoff amplified by 1/r, so it is looser;
4. every boolean flag of `MultilevelProgram.__init__` (found by introspection, so flags added
   later are covered): one step of each skill and method with the flag on vs off. A flag that
   is exact must match to 1e-5; `reuse_unroll_grad` is, by design, exact only against the
   plain path evaluated where it claims to evaluate (the weight gradient at the architecture
   before this iteration's architecture step), which check 5 verifies;
5. reuse_unroll_grad_exactness (when the flag exists): DARTS top-down step with reuse vs the
   plain path that takes the weight gradient before the architecture step.
Exit status 1 when an exact check fails.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import sys
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks import cases
from benchmarks.common import environment, format_table, resolve_device, write_json
from benchmarks.equivalence import (
    build_skill,
    default_dtype,
    naive_vs_skillearn_second_order,
    relative_error,
    supernet_vs_naive_network,
)
from skillearn.mlo import MultilevelProgram
from skillearn.search_spaces.darts import SpaceConfig
from skillearn.trainables import get_skill

FLOAT32_TOL = 1e-5
BF16_TOL = 1e-2
FLOAT64_TOL = 1e-9
SMOOTH_OPS = ("none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")


def program_flags() -> dict[str, bool]:
    """Boolean keyword arguments of MultilevelProgram.__init__ and their defaults."""
    flags = {}
    for name, parameter in inspect.signature(MultilevelProgram.__init__).parameters.items():
        if isinstance(parameter.default, bool):
            flags[name] = parameter.default
    return flags


def _with_flag(program: MultilevelProgram, **flags: Any) -> MultilevelProgram:
    """A program over the same levels with some constructor flags changed."""
    return MultilevelProgram(list(program.levels.values()), method=program.method,
                             order=program.order, fd_radius=program.fd_radius,
                             **{**_current_flags(program), **flags})


def _current_flags(program: MultilevelProgram) -> dict[str, Any]:
    return {name: getattr(program, name) for name in program_flags() if hasattr(program, name)}


def _state(program: MultilevelProgram) -> list[torch.Tensor]:
    return [p.detach().clone() for level in program.levels.values() for p in level.params.values()]


def _smooth_variant(variant: cases.Variant) -> cases.Variant:
    space = variant.space
    smooth = SpaceConfig(ops=SMOOTH_OPS, nodes=space.nodes, cells=space.cells,
                         channels=space.channels, in_channels=space.in_channels,
                         num_classes=space.num_classes)
    return cases.Variant(variant.name + "/smooth", variant.size, variant.input_shape,
                         variant.batch, smooth)


def check_flag(flag: str, default: bool, skill: str, method: str, variant: cases.Variant,
               device: torch.device, steps: int = 2) -> float:
    """Relative difference of every level's parameters after `steps` steps, flag on vs off."""
    finals = []
    for value in (default, not default):
        built, batches = build_skill(skill, method, variant, device)
        program = _with_flag(built.program, **{flag: value})
        for _ in range(steps):
            program.step(batches)
        finals.append(_state(program))
    return relative_error(finals[1], finals[0])


def apply_gradient(program: MultilevelProgram, name: str, grads: dict[str, torch.Tensor]) -> None:
    """A level's real optimizer step from given gradients (clip as the engine does)."""
    level = program.levels[name]
    params = list(level.params.values())
    for key, param in level.params.items():
        param.grad = grads[key].detach()
    if level.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, level.grad_clip)
    level.optimizer.step()
    for param in params:
        param.grad = None


def check_reuse_exactness(variant: cases.Variant, device: torch.device, steps: int = 2) -> float:
    """DARTS top-down with reuse_unroll_grad vs the plain path evaluated at the same point:
    the weight gradient taken before the architecture moves, then arch step, then weight step.
    """
    built_fast, batches = build_skill("darts", "finite_difference", variant, device)
    fast = _with_flag(built_fast.program, reuse_unroll_grad=True)
    built_ref, _ = build_skill("darts", "finite_difference", variant, device)
    ref = built_ref.program
    assert fast.order == ref.order == "top_down"
    for _ in range(steps):
        fast.step(batches)
        weight_grads, _ = ref.gradient("weights", batches)
        arch_grads, _ = ref.gradient("arch", batches)
        apply_gradient(ref, "arch", arch_grads)
        apply_gradient(ref, "weights", weight_grads)
    return relative_error(_state(fast), _state(ref))


def fd_vs_exact(variant: cases.Variant, device: torch.device, dtype: torch.dtype) -> float:
    """||g_fd - g_exact|| / ||g_exact|| of DARTS' arch level on a smooth supernet."""
    with default_dtype(dtype):
        built, batches = build_skill("darts", "finite_difference", _smooth_variant(variant),
                                     device, smooth=True)
        program = built.program
        # one weight step first so the momentum buffers exist, as mid-search
        grads, _ = program.gradient("weights", batches)
        apply_gradient(program, "weights", grads)
        return float(program.hypergradient_gap("arch", batches))


def run_checks(variant: cases.Variant, device: torch.device,
               skills: Sequence[str] = cases.SKILLS) -> list[dict[str, Any]]:
    """Every check as a row: name, configuration, relative error, tolerance, kind, passed."""
    rows: list[dict[str, Any]] = []

    def add(name: str, config: str, error: float, tolerance: float | None,
            kind: str = "exact") -> None:
        """tolerance None: an approximation whose size is reported, not judged."""
        passed = tolerance is None or error <= tolerance
        rows.append({"check": name, "config": config, "relative_error": error,
                     "tolerance": tolerance, "kind": kind, "passed": passed})

    for fused in (True, False):
        name = f"supernet_{'fused' if fused else 'edgewise'}_vs_naive"
        with default_dtype(torch.float64):
            exact = supernet_vs_naive_network(variant, device, fused=fused)
        for key, error in exact.items():
            add(name, f"float64 {key}", error, FLOAT64_TOL)
        supernet = supernet_vs_naive_network(variant, device, fused=fused, smooth=True)
        for key, error in supernet.items():
            add(name, f"float32 Softplus {key}", error, FLOAT32_TOL)
        bf16 = supernet_vs_naive_network(variant, device, autocast_dtype=torch.bfloat16,
                                         fused=fused, smooth=True)
        for key in ("logits", "weight_grads", "alpha_grads"):
            # two bf16 computations differ by their own rounding: judged against 1e-2 or twice
            # what bf16 alone moves the naive reference from its float32 result
            noise = bf16[f"reference_noise_{key}"]
            add(name, f"bf16 autocast Softplus {key} (naive bf16 vs f32: {noise:.1e})",
                bf16[key], max(BF16_TOL, 2 * noise))

    result = naive_vs_skillearn_second_order(variant, device, dtype=torch.float64)
    add("darts_fd_vs_naive_second_order", "float64 hypergradient", result["hypergradient"],
        FLOAT64_TOL)
    result = naive_vs_skillearn_second_order(variant, device, dtype=torch.float32)
    add("darts_fd_vs_naive_second_order", "float32 hypergradient (roundoff / 2R)",
        result["hypergradient"], None, kind="roundoff")

    add("fd_vs_exact", "float64 smooth supernet", fd_vs_exact(variant, device, torch.float64),
        1e-3, kind="approximation")
    add("fd_vs_exact", "float32 smooth supernet", fd_vs_exact(variant, device, torch.float32),
        1e-2, kind="approximation")

    flags = program_flags()
    for flag, default in flags.items():
        for skill in skills:
            for method in get_skill(skill).methods:
                error = check_flag(flag, default, skill, method, variant, device)
                kind = "approximation" if flag == "reuse_unroll_grad" else "exact"
                add(f"flag {flag}={not default}", f"{skill}/{method} vs {flag}={default}",
                    error, FLOAT32_TOL if kind == "exact" else None, kind=kind)
    if "reuse_unroll_grad" in flags:
        add("reuse_unroll_grad_exactness", "darts/finite_difference top_down, float32",
            check_reuse_exactness(variant, device), FLOAT32_TOL)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fast_paths",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", default="tiny", choices=sorted(cases.VARIANTS),
                        help="configuration to check on (default: tiny, seconds on CPU)")
    parser.add_argument("--skills", default="darts,lfm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    variant = copy.deepcopy(cases.VARIANTS[args.size])
    skills = tuple(s for s in args.skills.split(",") if s)
    rows = run_checks(variant, device, skills)
    print(f"# fast_paths on {variant.name} ({device.type}), torch {torch.__version__}")
    print(format_table(
        ["check", "config", "rel. error", "tolerance", "kind", "passed"],
        [[r["check"], r["config"], f"{r['relative_error']:.2e}",
          "reported" if r["tolerance"] is None else f"{r['tolerance']:.0e}",
          r["kind"], r["passed"]] for r in rows],
    ))
    if args.json:
        write_json(args.json, {"benchmark": "fast_paths",
                               "environment": environment(device, args.threads),
                               "variant": variant.describe(), "checks": rows})
    failed = [r for r in rows if not r["passed"]]
    for row in failed:
        print(f"FAILED: {row['check']} ({row['config']}): {row['relative_error']:.2e} > "
              f"{row['tolerance']:.0e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
