"""Does `torch.compile` pay off for the supernet's plain step? Compile time vs steady-state gain.

    python -m benchmarks.compile_probe --size digits/full8 --steps 10 [--device cuda] [--json P]

Times the first compiled step (compilation included) and then eager and compiled steps
interleaved in one process (medians). This is the measurement behind "no compile flag" in
RESULTS.md; run it on a GPU to decide there.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from benchmarks import cases
from benchmarks.common import environment, resolve_device, time_interleaved, write_json


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", default="digits/full8", choices=sorted(cases.VARIANTS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    variant = cases.VARIANTS[args.size]
    steps = {"eager": cases.build_plain_step(variant, device),
             "compiled": cases.build_plain_step(variant, device, compiled=True)}
    started = time.perf_counter()
    steps["compiled"]()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    compile_s = time.perf_counter() - started
    print(f"first compiled step (compilation included): {compile_s:.1f} s", flush=True)
    timings = time_interleaved(steps, device, warmup=2, timed=args.steps)
    eager, compiled = timings["eager"].median_ms, timings["compiled"].median_ms
    print(f"{args.size} on {device.type}: eager {eager:.1f} ms, compiled {compiled:.1f} ms "
          f"({compiled / eager:.2f}x); compilation {compile_s:.0f} s = "
          f"{compile_s * 1000 / max(eager - compiled, 1e-9):.0f} steps to pay back")
    if args.json:
        write_json(args.json, {"benchmark": "compile_probe",
                                "environment": environment(device, args.threads),
                                "size": args.size, "compile_s": compile_s,
                                "eager_ms": eager, "compiled_ms": compiled})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
