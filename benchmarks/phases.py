"""Where a multilevel step's time goes, phase by phase, in units of its own plain step.

    python -m benchmarks.phases [--sizes digits] [--skill darts] [--methods finite_difference]
        [--steps 20] [--warmup 2] [--threads 2] [--reuse-grad] [--flops] [--json PATH]

The skill is built exactly as a trial builds it (`cases.build_skill_step`); its program's
internal calls are timed by wrapping them, summed per step, and divided by the median plain
step of the same supernet on the same batch (`cases.build_plain_step`), interleaved round by
round as `benchmarks.step_ratio` does. The phases, in DARTS' order (top_down: arch, then weights):
- `unroll`: the lower level's gradient at (w, alpha) and the virtual step w' (DARTS: ~1 pass);
- `upper at w'`: the upper loss at the unrolled point, its gradient in alpha and w' (~1 pass);
- `mixed product`: the method's product, e.g. the finite-difference pair in alpha only (~1.2);
- `lower gradient`: the weights' own gradient for their real step (~1, or 0 with `reuse_grad`);
- `optimizer steps`: both levels' optimizer steps and clipping;
- `other`: what the step spends outside those calls (Python, bookkeeping).
`--flops` counts matmul/conv FLOPs per phase instead (`torch.utils.flop_counter`): the passes
themselves, independent of the machine's load, in units of the plain step's FLOPs.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import cases
from benchmarks.common import (
    cpu_clock,
    environment,
    format_table,
    resolve_device,
    synchronize,
    write_json,
)
from skillearn.trainables.registry import get_skill
from skillearn.trainables.setup import Setup

PHASES = ("unroll", "upper at w'", "mixed product", "lower gradient", "optimizer steps", "other")


class PhaseClock:
    """Wraps a program's internal calls and sums their time per phase for one step."""

    def __init__(self, program: Any, device: torch.device,
                 meter: Callable[[], float] | None = None) -> None:
        self.program, self.device = program, device
        self.meter = meter or self._seconds
        self.current: dict[str, float] = defaultdict(float)
        self.depth = 0
        self._wrap("_unroll", "unroll")
        self._wrap("_mixed_vjp", "mixed product")
        self._wrap("_apply", "optimizer steps")
        self._wrap("gradient", None)

    def _wrap(self, attribute: str, phase: str | None) -> None:
        original = getattr(self.program, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = self.meter()
            inner_before = sum(self.current.values())
            result = original(*args, **kwargs)
            seconds = self.meter() - started
            if phase is not None:
                self.current[phase] += seconds
            else:  # gradient(name): what its own calls did not account for
                inner = sum(self.current.values()) - inner_before
                upper = args[0] in self.program.upper_levels()
                self.current["upper at w'" if upper else "lower gradient"] += seconds - inner
            return result

        setattr(self.program, attribute, timed)

    def _seconds(self) -> float:
        synchronize(self.device)
        return cpu_clock()()

    def step(self, step: Callable[[], Any]) -> dict[str, float]:
        self.current = defaultdict(float)
        started = self.meter()
        step()
        total = self.meter() - started
        phases = dict(self.current)
        phases["other"] = total - sum(phases.values())
        phases["total"] = total
        return phases


def count_flops(size: str, skill: str, method: str, device: torch.device,
                reuse_grad: bool) -> dict[str, Any]:
    """FLOPs of each phase of one step (after one warm-up step) over a plain step's FLOPs."""
    (variant, *_) = cases.SIZES[size]
    built, batches = _built(size, skill, method, device, reuse_grad)
    counter = FlopCounterMode(display=False)
    clock = PhaseClock(built.program, device, meter=lambda: float(counter.get_total_flops()))
    plain = cases.build_plain_step(variant, device)
    built.program.step(batches)
    with counter:
        plain()
        plain_flops = float(counter.get_total_flops())
        phases = clock.step(lambda: built.program.step(batches))
    return {"size": size, "label": _label(skill, method, reuse_grad), "plain_flops": plain_flops,
            "phase_flops": phases,
            "phase_over_plain": {p: f / plain_flops for p, f in phases.items()}}


def _label(skill: str, method: str, reuse_grad: bool) -> str:
    return f"{skill}/{method}" + ("+reuse_grad" if reuse_grad else "")


def _built(size: str, skill: str, method: str, device: torch.device,
           reuse_grad: bool) -> tuple[Any, Any]:
    (variant, *_) = cases.SIZES[size]
    data = cases.synthetic_bundle(variant)
    config = cases.skill_config(skill, method, device, variant)
    config["reuse_grad"] = reuse_grad
    torch.manual_seed(0)
    built = get_skill(skill).build(Setup(config=config, data=data, device=device,
                                         space=variant.space))
    for module in built.modules:
        module.train()
    return built, cases.engine_batches(data, device)


def measure(size: str, skill: str, method: str, device: torch.device, steps: int, warmup: int,
            reuse_grad: bool) -> dict[str, Any]:
    (variant, *_) = cases.SIZES[size]
    built, batches = _built(size, skill, method, device, reuse_grad)
    clock = PhaseClock(built.program, device)
    plain = cases.build_plain_step(variant, device)
    plain_s: list[float] = []
    phase_s: dict[str, list[float]] = defaultdict(list)
    for round_index in range(warmup + steps):
        synchronize(device)
        started = cpu_clock()()
        plain()
        synchronize(device)
        plain_seconds = cpu_clock()() - started
        phases = clock.step(lambda: built.program.step(batches))
        if round_index >= warmup:
            plain_s.append(plain_seconds)
            for phase in (*PHASES, "total"):
                phase_s[phase].append(phases.get(phase, 0.0))
    plain_ms = 1000 * statistics.median(plain_s)
    medians = {phase: 1000 * statistics.median(values) for phase, values in phase_s.items()}
    return {"size": size, "label": _label(skill, method, reuse_grad),
            "plain_ms": plain_ms, "phase_ms": medians,
            "phase_over_plain": {p: ms / plain_ms for p, ms in medians.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.phases",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sizes", default="digits")
    parser.add_argument("--skill", default="darts", choices=cases.SKILLS)
    parser.add_argument("--methods", default="first_order,finite_difference")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reuse-grad", action="store_true")
    parser.add_argument("--flops", action="store_true",
                        help="count matmul/conv FLOPs per phase instead of timing")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    results = []
    for size in args.sizes.split(","):
        for method in args.methods.split(","):
            if args.flops:
                result = count_flops(size, args.skill, method, device, args.reuse_grad)
                unit, scale, plain = "MFLOP", 1e-6, result["plain_flops"] * 1e-6
                values = result["phase_flops"]
            else:
                result = measure(size, args.skill, method, device, args.steps, args.warmup,
                                 args.reuse_grad)
                unit, scale, plain = "median ms", 1.0, result["plain_ms"]
                values = result["phase_ms"]
            results.append(result)
            print(f"\n{size} {result['label']}: plain step {plain:.1f} {unit.split()[-1]}")
            rows = [[phase, f"{scale * values.get(phase, 0.0):.1f}",
                     f"{result['phase_over_plain'].get(phase, 0.0):.2f}"]
                    for phase in (*PHASES, "total")]
            print(format_table(["phase", unit, "x plain step"], rows))
    if args.json:
        write_json(args.json, {"environment": environment(device, args.threads),
                               "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
