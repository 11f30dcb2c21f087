"""Step and memory ratios of skillearn's multilevel step against a plain step and naive DARTS.

    python -m benchmarks.step_ratio [--device cpu|cuda] [--sizes digits,cifar64,cifar256]
        [--steps 20] [--warmup N] [--skills darts,lfm] [--methods ...]
        [--backbones pc_darts,p_darts|none] [--json PATH]

For each size, each skill and each hypergradient method it reports
- step ratio   = median time of one `program.step(batches)` / median time of one plain step
  (forward + backward + clip + SGD of the same supernet's weights on the same batch);
- memory ratio = peak memory of that step / peak memory of the plain step;
and the same for the naive reference (a port of the original DARTS code: plain weight step,
first-order and second-order search iterations), plus the headline comparisons the
performance issue sets targets for. `darts@<backbone>/<method>` rows time the darts skill on
another search backbone at the same batch (PC-DARTS; P-DARTS in its first and last stage,
`.s0` / `.s2`), with `<backbone>_over_darts_<method>` headlines. All methods of a size
are timed interleaved.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks import cases
from benchmarks.common import (
    environment,
    format_table,
    peak_step_memory_mb,
    release_memory,
    resolve_device,
    run_probe_subprocess,
    time_interleaved,
    write_json,
)

CPU_SLOW_SIZES = ("cifar64", "cifar256")
CIFAR10_SEARCH_IMAGES = 25_000  # DARTS searches on half of CIFAR-10's training set
HEADLINES: tuple[tuple[str, str, str, str], ...] = (
    # (key, numerator label, denominator label, quantity)
    ("skillearn_plain_over_naive_plain", cases.PLAIN, cases.NAIVE_PLAIN, "time"),
    ("darts_finite_difference_over_naive_second_order", "darts/finite_difference",
     cases.NAIVE_SECOND_ORDER, "time"),
    ("darts_first_order_over_naive_first_order", "darts/first_order", cases.NAIVE_FIRST_ORDER,
     "time"),
    ("lfm_finite_difference_over_naive_second_order", "lfm/finite_difference",
     cases.NAIVE_SECOND_ORDER, "time"),
    ("darts_exact_memory_ratio", "darts/exact", cases.PLAIN, "memory"),
    ("lfm_exact_memory_ratio", "lfm/exact", cases.PLAIN, "memory"),
    ("naive_second_order_memory_ratio", cases.NAIVE_SECOND_ORDER, cases.NAIVE_PLAIN, "memory"),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_ratio",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sizes", default="digits",
                        help=f"comma-separated, from {', '.join(cases.SIZES)}")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per method (default 20; 3 for CIFAR sizes on CPU)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="discarded warm-up rounds (default 2; 1 for CIFAR sizes on CPU)")
    parser.add_argument("--skills", default="darts,lfm")
    parser.add_argument("--methods", default=",".join(cases.METHODS))
    parser.add_argument("--backbones", default="pc_darts,p_darts",
                        help="darts rows on other search backbones, comma-separated, or none "
                        "(p_darts gives its first and last stage)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive DARTS reference")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory measurement")
    parser.add_argument("--order", default=None,
                        help="level update order: top_down, bottom_up or level names (default: "
                        "each skill's own, darts top_down, lfm arch,w1,w2)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write every figure to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no per-step progress lines")
    # internal: measure one label's CPU peak memory in this (fresh) process
    parser.add_argument("--probe-memory", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _split_list(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in items if s not in allowed]
    if unknown or not items:
        raise SystemExit(f"unknown {what} {unknown or text!r}; choose from {', '.join(allowed)}")
    return items


def _probe(args: argparse.Namespace) -> None:
    """Child process: build one label, warm up one step, print its peak step memory as JSON."""
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    variant = cases.VARIANTS[args.variant]
    step = cases.build_step(args.probe_memory, variant, device, args.seed, args.order)
    step()
    peak_mb, method = peak_step_memory_mb(step, device)
    print(json.dumps({"label": args.probe_memory, "peak_mb": peak_mb, "method": method}))


def measure_memory(labels: Sequence[str], variant: cases.Variant, device: torch.device,
                   steps: dict[str, cases.StepFn], args: argparse.Namespace
                   ) -> dict[str, dict[str, Any]]:
    """Peak step memory per label: in process on CUDA, a fresh subprocess per label on CPU."""
    memory: dict[str, dict[str, Any]] = {}
    for label in labels:
        if device.type == "cuda":
            peak_mb, method = peak_step_memory_mb(steps[label], device)
        else:
            probe_args = ["--probe-memory", label, "--variant", variant.name,
                          "--device", "cpu", "--threads", str(args.threads),
                          "--seed", str(args.seed)]
            if args.order:
                probe_args += ["--order", args.order]
            result = run_probe_subprocess("benchmarks.step_ratio", probe_args, args.threads)
            peak_mb, method = result["peak_mb"], result["method"]
        memory[label] = {"peak_mb": peak_mb, "method": method}
        _log(args, f"  memory {label}: {peak_mb:.1f} MB ({method})")
    return memory


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _baseline(label: str) -> str:
    return cases.NAIVE_PLAIN if label.startswith("naive/") else cases.PLAIN


def run_variant(variant: cases.Variant, device: torch.device, args: argparse.Namespace,
                skills: tuple[str, ...], methods: tuple[str, ...],
                backbones: tuple[str, ...] = ()) -> dict[str, Any]:
    """Build every step function for one variant, time them interleaved, measure memory."""
    slow = device.type == "cpu" and variant.size in CPU_SLOW_SIZES
    warmup = args.warmup if args.warmup is not None else (1 if slow else 2)
    timed = args.steps if args.steps is not None else (3 if slow else 20)
    labels = [cases.PLAIN, cases.other_cells_label(variant)]
    if not args.no_naive:
        labels += list(cases.NAIVE_LABELS)
    skill_labels, notes = cases.skill_labels(skills, methods)
    labels += skill_labels
    if "darts" in skills:
        if "p_darts" in backbones and len(variant.space.ops) < 4:  # 3 stages need 4 -> 3 -> 2
            backbones = tuple(b for b in backbones if b != "p_darts")
            notes.append(f"p_darts skipped: its three stages prune from >= 4 ops, this space "
                         f"has {len(variant.space.ops)}")
        labels += cases.backbone_labels(backbones, methods)
    if timed < 20:
        notes.append(f"only {timed} timed steps per method after {warmup} warm-up round(s)"
                     + (" (CIFAR-shaped size on CPU: each step takes seconds to minutes)"
                        if slow else "") + "; medians are less stable than with >= 20")
    if (any(label.startswith("lfm/") for label in labels) and variant.input_shape[-1] > 16
            and not cases.torchvision_available()):
        notes.append("torchvision missing: lfm uses the small encoder instead of ResNet-18")
    _log(args, f"== {variant.name}: {len(labels)} methods, {warmup} warm-up + {timed} timed "
               f"rounds on {device.type}")

    steps = {label: cases.build_step(label, variant, device, args.seed, args.order)
             for label in labels}
    timings = time_interleaved(steps, device, warmup, timed,
                               progress=None if args.quiet else lambda m: _log(args, m))
    if device.type == "cpu":  # the probes are fresh processes: give this one's memory back
        steps.clear()         # first (cifar64 on a 24 GiB box was OOM-killed otherwise)
        release_memory()
    memory = {} if args.no_memory else measure_memory(labels, variant, device, steps, args)
    del steps

    medians = {label: t.median_ms for label, t in timings.items()}
    peaks = {label: m["peak_mb"] for label, m in memory.items()}
    ratios = {
        label: {
            "step_ratio": _ratio(medians[label], medians.get(_baseline(label))),
            "memory_ratio": _ratio(peaks.get(label), peaks.get(_baseline(label))),
            "baseline": _baseline(label),
        }
        for label in labels
    }
    headline: dict[str, float | None] = {}
    for key, numerator, denominator, quantity in HEADLINES:
        source = medians if quantity == "time" else peaks
        if numerator in source and denominator in source:
            headline[key] = _ratio(source[numerator], source[denominator])
    if variant.input_shape == (3, 32, 32):  # DARTS' CIFAR-10 search: 25k images, 50 epochs
        steps_per_search = 50 * math.ceil(CIFAR10_SEARCH_IMAGES / variant.batch)
        for label, key in (("darts/finite_difference", "darts"),
                           (cases.NAIVE_SECOND_ORDER, "naive")):
            if label in medians:
                headline[f"projected_50_epoch_cifar10_search_h_{key}"] = (
                    medians[label] * steps_per_search / 3.6e6)
    for label in labels:  # every backbone row against DARTS with the same method
        tag, _, method = label.partition("/")
        if tag.startswith("darts@") and f"darts/{method}" in medians:
            name = tag.removeprefix("darts@").replace(".", "_")
            headline[f"{name}_over_darts_{method}"] = _ratio(medians[label],
                                                             medians[f"darts/{method}"])
            if label in peaks and f"darts/{method}" in peaks:
                headline[f"{name}_over_darts_{method}_memory"] = _ratio(
                    peaks[label], peaks[f"darts/{method}"])
    fused = medians.get(cases.PLAIN_FUSED, medians.get(cases.PLAIN))
    edgewise = medians.get(cases.PLAIN_EDGEWISE, medians.get(cases.PLAIN))
    if cases.other_cells_label(variant) in medians:
        headline["fused_plain_over_edgewise_plain"] = _ratio(fused, edgewise)
    return {
        **variant.describe(),
        "warmup": warmup,
        "timed_steps": timed,
        "order": args.order or "each skill's default",
        "timings": {label: t.to_dict() for label, t in timings.items()},
        "memory": memory,
        "ratios": ratios,
        "headline": headline,
        "notes": notes,
    }


def print_variant(result: dict[str, Any]) -> None:
    rows = []
    for label, timing in result["timings"].items():
        memory = result["memory"].get(label, {})
        ratio = result["ratios"][label]
        rows.append([label, timing["median_ms"], timing["iqr_ms"], ratio["step_ratio"],
                     memory.get("peak_mb"), ratio["memory_ratio"]])
    print(f"\n### {result['variant']}  (input {'x'.join(map(str, result['input_shape']))}, "
          f"batch {result['batch']}, {len(result['ops'])} ops, {result['nodes']} nodes, "
          f"{result['cells']} cells, C={result['channels']}; {result['timed_steps']} timed "
          f"steps after {result['warmup']} warm-up)")
    print(format_table(["method", "median ms", "IQR ms", "step ratio", "peak MB",
                        "memory ratio"], rows))
    if result["headline"]:
        print(format_table(["headline", "ratio"], list(result["headline"].items())))
    for note in result["notes"]:
        print(f"note: {note}")


def _log(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.probe_memory:
        _probe(args)
        return None
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sizes = _split_list(args.sizes, tuple(cases.SIZES), "size")
    skills = _split_list(args.skills, cases.SKILLS, "skill")
    methods = _split_list(args.methods, cases.METHODS, "method")
    backbones = () if args.backbones.strip() in ("", "none") else _split_list(
        args.backbones, tuple(b for b in cases.BACKBONES if b != "darts"), "backbone")
    payload: dict[str, Any] = {
        "benchmark": "step_ratio",
        "environment": environment(device, args.threads),
        "args": {k: v for k, v in vars(args).items() if k not in ("probe_memory", "variant")},
        "results": [],
    }
    print(f"# step_ratio on {payload['environment']['device_name']} ({device.type}), "
          f"torch {torch.__version__}, {args.threads} threads")
    for size in sizes:
        for variant in cases.SIZES[size]:
            result = run_variant(variant, device, args, skills, methods, backbones)
            payload["results"].append(result)
            print_variant(result)
            if args.json:  # write as we go: CPU CIFAR runs take long
                write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
