"""`skillearn report`: the best trials of an MLflow experiment as one pandas table.

Reads only MLflow (child runs tagged `skillearn.role=trial`), so it works on any machine that
reaches the tracking store, long after the Ray cluster is gone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from skillearn.platform.redact import redact
from skillearn.platform.secrets import expand_secrets
from skillearn.platform.tags import ROLE_TAG
from skillearn.platform.validate import UsageError

METRIC_COLUMNS = ("val_acc", "test_acc", "worst_class_acc", "retrain_test_acc")


def short_op(op: str) -> str:
    """sep_conv_3x3 -> sep3, dil_conv_5x5 -> dil5, skip_connect -> skip, max_pool_3x3 -> max3."""
    kernel = re.search(r"(\d+)x\d+", op)
    return op.split("_")[0][:4] + (kernel.group(1) if kernel else "")


def short_genotype(genotype_json: str | None) -> str:
    """A one-line genotype: `N: op/input ... | R: op/input ...` (empty when absent)."""
    if not genotype_json:
        return ""
    try:
        data = json.loads(genotype_json)
        cells = []
        for which, label in (("normal", "N"), ("reduce", "R")):
            edges = " ".join(f"{short_op(op)}/{j}" for op, j in data.get(which, []))
            cells.append(f"{label}: {edges}")
        return " | ".join(cells)
    except (ValueError, TypeError, AttributeError):
        return genotype_json[:60]


def _tuned_params(skill: str | None) -> list[str]:
    """The skill's searched knobs (shown as columns); none when the skill is unknown here."""
    if not skill:
        return []
    try:
        from skillearn.trainables.registry import get_skill

        return sorted(get_skill(skill).tuned_knobs())
    except Exception:
        return []


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        if not db.is_file():
            raise UsageError(
                f"no MLflow database at {db}; run a sweep first or pass the sweep's --tracking-uri"
            )
    return MlflowClient(tracking_uri=expand_secrets(tracking_uri))


def best_trials(tracking_uri: str, experiment: str, top: int = 10) -> pd.DataFrame:
    """The `top` trial runs of `experiment` by val_acc (best first), one row per trial."""
    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UsageError(
            f"no experiment named {experiment!r} in {redact(tracking_uri)}; check --experiment "
            "(the sweep's default is 'skillearn')"
        )
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'trial'",
            max_results=1000, page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    rows = []
    for run in runs:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        skill = tags.get("skill")
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run": run.info.run_name,
            "sweep": tags.get("sweep"),  # the run name says skill, trial and knobs, not this
            "skill": skill,
            "dataset": tags.get("dataset"),
            "status": run.info.status,
        }
        for key in _tuned_params(skill) + ["method", "seed"]:
            if key in params:
                row[key] = pd.to_numeric(params[key], errors="coerce")
                row[key] = params[key] if pd.isna(row[key]) else row[key]
        for key in METRIC_COLUMNS:
            if key in metrics:
                row[key] = metrics[key]
        row["genotype"] = short_genotype(tags.get("genotype"))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    if "val_acc" in table:
        table = table.sort_values("val_acc", ascending=False, na_position="last")
    return table.head(top).reset_index(drop=True)


def format_table(table: pd.DataFrame) -> str:
    """The table as text, wide enough not to wrap the genotype column."""
    if table.empty:
        return "no trials logged yet"
    with pd.option_context("display.width", 250, "display.max_columns", 50,
                           "display.max_colwidth", 120, "display.float_format", "{:.4g}".format):
        return table.to_string(index=False)
