"""Rehearse autoscaling (and a spot preemption) on one machine, with Ray's fake multi-node
provider standing in for the cloud of clusters/aws.yaml, gcp.yaml and kuberay.yaml.

A head with no trial resources and an autoscaler; a worker type carrying `accel: 1` (min 0, max
3 by default) that the autoscaler launches when the sweep's trials ask for it
(`--trial-resource accel=1`) and releases after the idle timeout. With --preempt, the node of the
first trial to save a checkpoint is removed mid-trial (all its processes killed) and the trial
resumes elsewhere. Prints the time from sweep start to the first worker and to the last trial,
and logs those figures and the node count over time (node_count.png) on the sweep's MLflow
parent run.

    python clusters/rehearse_autoscaling.py [--preempt] [--trials 3] [--workdir DIR]

Only this cluster's processes are stopped at the end (never `ray stop`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from autoscaling_cluster import fake_autoscaling_cluster, rehearse  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="trials, all at once (default 3)")
    parser.add_argument("--max-workers", type=int, default=3, help="default 3")
    parser.add_argument("--idle-timeout", type=float, default=5.0,
                        help="seconds before an idle worker goes (default 5)")
    parser.add_argument("--epochs", type=int, default=3, help="default 3")
    parser.add_argument("--steps", type=int, default=4, help="steps per epoch (default 4)")
    parser.add_argument("--skill", default="darts", help="default darts")
    parser.add_argument("--preempt", action="store_true",
                        help="remove a worker node mid-trial (after its first checkpoint)")
    parser.add_argument("--workdir", help="where the sweep, MLflow store and plot go "
                        "(default: a new temporary folder)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="skillearn-autoscaling-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sweep = [args.skill, "--samples", str(args.trials), "--concurrency", str(args.trials),
             "--no-asha", "--epochs", str(args.epochs), "--set", f"steps_per_epoch={args.steps}"]
    if args.skill in ("darts", "lfm"):
        sweep += ["--set", "fd_gap_every=0"]
    name = f"autoscale-{int(time.time())}"
    started = time.perf_counter()
    with fake_autoscaling_cluster(max_workers=args.max_workers,
                                  idle_timeout_s=args.idle_timeout) as cluster:
        up = time.perf_counter() - started
        result = rehearse(cluster, workdir, sweep, name=name, preempt=args.preempt)
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (1 min)")
    print(f"head up in {up:.1f} s; sweep exit code {result.exit_code}")
    first = f"{result.first_worker_s:.1f} s" if result.first_worker_s is not None else "never"
    print(f"sweep start -> first worker: {first}")
    print(f"sweep start -> last trial done: {result.sweep_done_s:.1f} s")
    print(f"peak workers: {result.peak_workers} (max {args.max_workers}); all released "
          f"{result.released_s:.1f} s after the sweep (idle timeout {args.idle_timeout:g} s)")
    print("node count over time (s: workers): " + ", ".join(
        f"{t:.0f}:{n}" for t, n in _changes(result.samples)))
    if result.preempted:
        print(f"preempted: node ...{result.preempted['node'][-5:]} of {result.preempted['trial']} "
              f"after epoch {result.preempted['epoch']} ({result.preempted['processes']} "
              "processes killed)")
    if result.parent_run_id:
        print(f"MLflow: {result.tracking_uri}, experiment {name}, parent run "
              f"{result.parent_run_id} (node_count.png, time_to_first_worker_s, "
              "time_to_last_trial_s); trial runs are tagged node_id")
    return result.exit_code


def _changes(samples: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Only the samples where the worker count changed (and the first)."""
    out: list[tuple[float, int]] = []
    for t, n in samples:
        if not out or out[-1][1] != n:
            out.append((t, n))
    return out


if __name__ == "__main__":
    sys.exit(main())
