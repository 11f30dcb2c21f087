"""Every search backbone under each NAS skill on one dataset: accuracy, skips, search time.

    python -m benchmarks.backbone_table [--skills darts,lfm] [--backbones all]
        [--seeds 0,1,2] [--lfm-seeds 0] [--epochs 6] [--retrain-epochs 10]
        [--dataset digits] [--set key=value ...] [--json PATH]

Each (skill, backbone, seed) is one trial run in this process by the common runner (no Ray,
no MLflow), then its derived genotype is retrained (`retrain_epochs`, the run's recipe). The
table gives mean ± std over seeds of the supernet's test accuracy after the search, the
retrained network's test accuracy, the derived normal cell's skip count, the last Hessian
eigenvalue, the epochs searched (DARTS+ may stop early) and the search time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.common import environment, format_table, write_json
from skillearn.artifacts import GenotypeArtifact, find_artifact
from skillearn.trainables.backbone_knobs import BACKBONES
from skillearn.trainables.runner import run_skill

COLUMNS = ("test_acc", "retrain_test_acc", "skip_count", "hessian_eig", "epoch",
           "search_time_s")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backbone_table",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--skills", default="darts,lfm")
    parser.add_argument("--backbones", default="all")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the darts trials")
    parser.add_argument("--lfm-seeds", default="0", help="seeds of the other skills' trials")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--retrain-epochs", type=int, default=10)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="KEY=VALUE", help="any other knob (JSON values)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _genotype(final: dict[str, Any]) -> dict[str, Any] | None:
    """The trial's last declared genotype (a NAS trial reports one each epoch)."""
    artifact = find_artifact(final, GenotypeArtifact)
    return artifact.genotype if artifact else None


def run_one(skill: str, backbone: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    config = {"dataset": args.dataset, "backbone": backbone, "seed": seed,
              "epochs": args.epochs, "retrain_epochs": args.retrain_epochs, "fd_gap_every": 0}
    config.update({k: _value(v) for k, v in (s.split("=", 1) for s in args.sets)})
    started = time.perf_counter()
    final = run_skill(skill, config, lambda metrics, checkpoint: None)
    row = {k: final.get(k) for k in COLUMNS}
    row.update(skill=skill, backbone=backbone, seed=seed, genotype=_genotype(final),
               wall_s=time.perf_counter() - started)
    return row


def summarise(rows: list[dict[str, Any]]) -> list[list[Any]]:
    table = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["skill"], row["backbone"]), []).append(row)
    for (skill, backbone), group in groups.items():
        cells: list[Any] = [skill, backbone, len(group)]
        for column in COLUMNS:
            values = [float(r[column]) for r in group if r[column] is not None]
            if not values:
                cells.append("-")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3g}")
            else:
                cells.append(f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}")
        table.append(cells)
    return table


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    backbones = BACKBONES if args.backbones == "all" else tuple(args.backbones.split(","))
    rows = []
    payload: dict[str, Any] = {"benchmark": "backbone_table",
                               "environment": environment(torch.device("cpu"), args.threads),
                               "args": vars(args), "rows": rows}
    for skill in args.skills.split(","):
        seeds = args.seeds if skill == "darts" else args.lfm_seeds
        for backbone in backbones:
            for seed in (int(s) for s in seeds.split(",")):
                rows.append(run_one(skill, backbone, seed, args))
                print(f"done {skill} {backbone} seed {seed}: "
                      f"{ {k: rows[-1][k] for k in COLUMNS} }", flush=True)
                if args.json:
                    write_json(args.json, payload)
    print(format_table(["skill", "backbone", "seeds", *COLUMNS], summarise(rows)))
    return payload


if __name__ == "__main__":
    main()
