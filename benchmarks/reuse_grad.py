"""The opt-in `reuse_grad` fast path: darts' second-order step with and without it, beside the
naive DARTS second-order step, timed interleaved on one input.

    python -m benchmarks.reuse_grad --size digits/full8 --steps 20 --json results/reuse.json

Its effect on accuracy is measured separately, with real sweeps (see RESULTS.md).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.cases import (
    NAIVE_SECOND_ORDER,
    VARIANTS,
    build_naive_step,
    engine_batches,
    synthetic_bundle,
)
from benchmarks.common import environment, format_table, time_interleaved, write_json
from skillearn.trainables import get_skill, resolve_config
from skillearn.trainables.setup import Setup


def darts_step(variant_name: str, reuse: bool, device: torch.device, seed: int = 0):
    """One darts finite-difference `program.step` as a trial builds it, reuse on or off."""
    variant = VARIANTS[variant_name]
    data = synthetic_bundle(variant, seed)
    config = resolve_config(get_skill("darts"), {
        "method": "finite_difference", "device": device.type, "batch_size": variant.batch,
        "seed": seed, "reuse_grad": reuse})
    torch.manual_seed(seed)
    built = get_skill("darts").build(Setup(config=config, data=data, device=device,
                                           space=variant.space))
    for module in built.modules:
        module.train()
    batches = engine_batches(data, device)
    return lambda: built.program.step(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="digits/full8", choices=sorted(VARIANTS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    steps = {
        NAIVE_SECOND_ORDER: build_naive_step(NAIVE_SECOND_ORDER, VARIANTS[args.size], device),
        "darts/finite_difference": darts_step(args.size, False, device),
        "darts/finite_difference+reuse_grad": darts_step(args.size, True, device),
    }
    timings = time_interleaved(steps, device, args.warmup, args.steps)
    naive = timings[NAIVE_SECOND_ORDER].median_ms
    rows = [[label, t.median_ms, t.iqr_ms, t.median_ms / naive] for label, t in timings.items()]
    print(f"# {args.size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"{args.threads} threads")
    print(format_table(["method", "median ms", "IQR ms", "÷ naive second order"], rows))
    if args.json:
        write_json(args.json, {"environment": environment(device, args.threads),
                               "size": args.size,
                               "results": {k: v.to_dict() for k, v in timings.items()}})


if __name__ == "__main__":
    main()
