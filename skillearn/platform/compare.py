"""`skillearn compare`: skills side by side, mean ± std over seeds, as a table and a bar chart.

Reads only MLflow trial runs. Within one skill, each seed contributes its best trial by
validation accuracy (a seeds-only sweep has one trial per seed; a TPE sweep contributes its
best configuration), so "best mwnet_nas" and a fixed baseline are compared the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skillearn.platform.redact import redact
from skillearn.platform.report import _client
from skillearn.platform.tags import ROLE_TAG
from skillearn.platform.validate import UsageError

COMPARED = ("test_acc", "worst_class_acc", "weight_auc", "retrain_test_acc")
FILTERS = ("dataset", "noise_rate", "noise_type", "imbalance")


def trial_table(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Every trial run: skill, seed, data settings, final metrics."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UsageError(f"no experiment named {experiment!r} in {redact(tracking_uri)}")
    rows, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`{ROLE_TAG}` = 'trial'",
                                  max_results=1000, page_token=token)
        for run in page:
            params, metrics = run.data.params, run.data.metrics
            row: dict[str, Any] = {"skill": run.data.tags.get("skill"),
                                   "status": run.info.status}
            for key in ("seed", *FILTERS):
                row[key] = params.get(key)
            row["val_acc"] = metrics.get("val_acc")
            for key in COMPARED:
                row[key] = metrics.get(key)
            rows.append(row)
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


def compare(
    trials: pd.DataFrame, skills: Sequence[str] | None = None, **filters: Any
) -> pd.DataFrame:
    """Mean ± std per skill over seeds (best trial per seed), for trials matching `filters`."""
    if trials.empty:
        return trials
    chosen = trials[trials["status"] == "FINISHED"]
    if skills:
        chosen = chosen[chosen["skill"].isin(skills)]
    for key, value in filters.items():
        if value is None:
            continue
        column = pd.to_numeric(chosen[key], errors="coerce")
        if isinstance(value, str):
            chosen = chosen[chosen[key] == value]
        else:
            chosen = chosen[(column - float(value)).abs() < 1e-9]
    chosen = chosen.dropna(subset=["val_acc"])
    if chosen.empty:
        return pd.DataFrame()
    best = chosen.loc[chosen.groupby(["skill", "seed"])["val_acc"].idxmax()]
    rows = []
    for skill, group in best.groupby("skill"):
        row: dict[str, Any] = {"skill": skill, "seeds": len(group)}
        for key in COMPARED:
            values = pd.to_numeric(group[key], errors="coerce").dropna()
            if len(values):
                row[f"{key}_mean"] = values.mean()
                row[f"{key}_std"] = values.std(ddof=1) if len(values) > 1 else 0.0
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values("test_acc_mean", ascending=False).reset_index(drop=True)


def format_comparison(table: pd.DataFrame) -> str:
    """`mean ± std` cells, one row per skill."""
    if table.empty:
        return "no finished trials match"
    shown = pd.DataFrame({"skill": table["skill"], "seeds": table["seeds"]})
    for key in COMPARED:
        if f"{key}_mean" in table:
            shown[key] = [
                "" if pd.isna(m) else f"{m:.4f} ± {s:.4f}"
                for m, s in zip(table[f"{key}_mean"], table[f"{key}_std"], strict=True)
            ]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        return shown.to_string(index=False)


def draw_comparison(table: pd.DataFrame, path: str | Path) -> Path:
    """Grouped bars (test and worst-class accuracy) with std error bars, one group per skill."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in ("test_acc", "worst_class_acc") if f"{k}_mean" in table]
    fig = Figure(figsize=(1.6 + 1.2 * len(table), 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(table))
    width = 0.8 / max(1, len(keys))
    for i, key in enumerate(keys):
        ax.bar(x + i * width - 0.4 + width / 2, table[f"{key}_mean"], width,
               yerr=table[f"{key}_std"], capsize=3, label=key.replace("_", " "))
    ax.set_xticks(x, table["skill"], rotation=20)
    ax.set_ylabel("accuracy (mean ± std over seeds)")
    ax.set_ylim(0, 1.15)  # headroom for the legend above bars that reach 1
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.legend(loc="upper right", ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
