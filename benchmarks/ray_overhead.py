"""How much of a sweep's wall time goes to Ray Tune rather than to the skill's own steps.

Runs a real `skillearn sweep` (local Ray, the default MLflow tracking, fixed settings over
seeds so every trial does the same work) and reads each trial's results back:

- per trial: `time_total_s` (Tune's wall time of the trial, start-up excluded) against
  `search_time_s` (the runner's time inside engine steps); the rest is evaluation,
  checkpointing, reporting;
- per sweep: wall time of the whole command against the steps' time divided by the number of
  trials running at once, which also counts Ray's start-up and each trial's process start.

    python -m benchmarks.ray_overhead --trials 4 --epochs 3 --steps 40 --json results/ray.json

Needs Ray and MLflow (unlike the other benchmarks, which are for bare GPU machines).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def run(trials: int, epochs: int, steps: int, skill: str, workdir: Path) -> dict[str, Any]:
    """One sweep, timed, and every trial's last result."""
    from skillearn.platform.cli import main

    seeds = [str(s) for s in range(trials)]
    args = ["sweep", skill, "--seeds", *seeds, "--epochs", str(epochs),
            "--set", f"steps_per_epoch={steps}", "--set", "fd_gap_every=0",
            "--storage", str(workdir / "runs"), "--name", "overhead",
            "--tracking-uri", f"sqlite:///{workdir}/mlflow.db"]
    started = time.perf_counter()
    code = main(args)
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"the sweep failed with exit code {code}")
    results = []
    for path in sorted((workdir / "runs" / "overhead").glob("trial_*/result.json")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        results.append(lines[-1])
    return {"wall_s": wall, "results": results}


def summarize(measured: dict[str, Any], concurrency: int) -> dict[str, Any]:
    """Overhead shares per trial and for the whole sweep."""
    rows = []
    for result in measured["results"]:
        total, steps = float(result["time_total_s"]), float(result["search_time_s"])
        rows.append({"trial_s": total, "steps_s": steps, "outside_steps": 1 - steps / total})
    steps_total = sum(r["steps_s"] for r in rows)
    return {
        "trials": rows,
        "median_trial_s": statistics.median(r["trial_s"] for r in rows),
        "median_outside_steps_share": statistics.median(r["outside_steps"] for r in rows),
        "sweep_wall_s": measured["wall_s"],
        "sweep_outside_steps_share": 1 - steps_total / concurrency / measured["wall_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="engine steps per epoch")
    parser.add_argument("--skill", default="darts")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    concurrency = min(args.trials, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="skillearn-overhead-") as tmp:
        measured = run(args.trials, args.epochs, args.steps, args.skill, Path(tmp))
    summary = summarize(measured, concurrency)
    summary.update(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                   skill=args.skill, epochs=args.epochs, steps_per_epoch=args.steps,
                   date=time.strftime("%Y-%m-%d"))
    print(f"\n{'trial':>5} {'wall s':>8} {'steps s':>8} {'outside steps':>14}")
    for i, row in enumerate(summary["trials"]):
        print(f"{i:>5} {row['trial_s']:8.1f} {row['steps_s']:8.1f} "
              f"{100 * row['outside_steps']:13.1f}%")
    print(f"median trial {summary['median_trial_s']:.1f} s, outside the steps "
          f"{100 * summary['median_outside_steps_share']:.1f}% of a trial; whole sweep "
          f"{summary['sweep_wall_s']:.1f} s, outside the steps "
          f"{100 * summary['sweep_outside_steps_share']:.1f}% (Ray start-up included)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
