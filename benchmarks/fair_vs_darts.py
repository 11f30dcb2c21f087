"""DARTS against `fair` (LBG/DALBG) on the group-shift digits: accuracy and fairness over seeds.

    python -m benchmarks.fair_vs_darts [--seeds 0,1,2] [--epochs 6] [--lam 0.1] [--json PATH]

Each skill searches `digits_groups` with its defaults for `--epochs` epochs per seed; the
supernet's (darts) or the routed experts' (fair) test metrics after the search are compared:
mean +- std over seeds and Welch's t-test p per metric. No retraining (fair's retraining of
the GAM + K experts is not built).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from scipy.stats import ttest_ind

from skillearn.artifacts import Table, find_artifact
from skillearn.trainables.runner import run_skill


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


METRICS = ("test_acc", "test_eo_diff", "test_dp_diff", "test_worst_group_acc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[dict]] = {"darts": [], "fair": []}
    for seed in seeds:
        for skill in results:
            config = {"dataset": "digits_groups", "epochs": args.epochs, "seed": seed,
                      "fd_gap_every": 0, **({"lam": args.lam} if skill == "fair" else {})}
            started = time.perf_counter()
            metrics = run_skill(skill, config, lambda m, c: None)
            row = {k: metrics[k] for k in METRICS}
            row["seconds"] = time.perf_counter() - started
            if skill == "fair":  # learned groups (rows) against the attribute (columns), train
                table = find_artifact(metrics, Table, "group_vs_sensitive")
                row["group_vs_sensitive"] = [r[1:] for r in table.rows]
            results[skill].append(row)
            print(skill, seed, json.dumps(row), flush=True)
    print(f"| metric | darts | fair (lam={args.lam}) | Welch p |\n|---|---|---|---|")
    summary = {}
    for key in (*METRICS, "seconds"):
        a = [r[key] for r in results["darts"]]
        b = [r[key] for r in results["fair"]]
        p = float(ttest_ind(a, b, equal_var=False).pvalue) if len(seeds) > 1 else float("nan")
        summary[key] = {"darts": a, "fair": b, "welch_p": p}
        print(f"| {key} | {statistics.mean(a):.4f} ± {sd(a):.4f} | "
              f"{statistics.mean(b):.4f} ± {sd(b):.4f} | {p:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seeds": seeds, "epochs": args.epochs, "lam": args.lam,
                       "machine": "2-core AMD EPYC, CPU only", "results": summary,
                       "fair_group_vs_sensitive": [r["group_vs_sensitive"]
                                                   for r in results["fair"]]}, f, indent=1)


if __name__ == "__main__":
    main()
