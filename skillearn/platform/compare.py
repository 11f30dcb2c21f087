"""`skillearn compare`: skills side by side, mean ± std over seeds, as a table and a bar chart.

Reads only MLflow trial runs. Within one skill, each seed contributes its best trial by
validation accuracy (a seeds-only sweep has one trial per seed; a TPE sweep contributes its
best configuration), so "best mwnet_nas" and a fixed baseline are compared the same way.

Against a baseline skill each other skill gets Welch's t-test (unequal variances) on the
compared metric over seeds: the two-sided p-value and the 95% confidence interval of the
difference of means (Welch–Satterthwaite degrees of freedom). The p-values are not corrected
for comparing several skills at once. Search cost is what the trials logged: each trial's
`search_time_s` (the search epochs, without evaluation or retraining) times the CPUs and GPUs
its sweep gave each trial, summed over every trial of a seed (a TPE sweep's cost is all its
trials, not only the best), and averaged over seeds; the hardware is each trial's `hardware`
tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skillearn.platform.hardware import HARDWARE_TAG
from skillearn.platform.redact import redact
from skillearn.platform.report import _client
from skillearn.platform.tags import PARENT_RUN_TAG, ROLE_TAG
from skillearn.platform.validate import UsageError

COMPARED = ("test_acc", "worst_class_acc", "weight_auc", "retrain_test_acc")
FILTERS = ("dataset", "noise_rate", "noise_type", "imbalance")
# the skills a comparison is measured against when no --baseline is named: plain
# cross-entropy for the reweighting skills, first-order DARTS for the NAS skills
DEFAULT_BASELINES = ("ce", "darts")
CONFIDENCE = 0.95
RESOURCES = ("cpus_per_trial", "gpus_per_trial")  # params of the sweep's parent run


def trial_table(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Every trial run: skill, seed, data settings, final metrics."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UsageError(f"no experiment named {experiment!r} in {redact(tracking_uri)}")
    rows, token = [], None
    resources: dict[str, dict[str, float | None]] = {}  # parent run id -> its sweep's resources
    while True:
        page = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`{ROLE_TAG}` = 'trial'",
                                  max_results=1000, page_token=token)
        for run in page:
            params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
            row: dict[str, Any] = {"skill": tags.get("skill"), "status": run.info.status}
            for key in ("seed", *FILTERS):
                row[key] = params.get(key)
            row["val_acc"] = metrics.get("val_acc")
            for key in COMPARED:
                row[key] = metrics.get(key)
            row["search_time_s"] = metrics.get("search_time_s")
            row["hardware"] = tags.get(HARDWARE_TAG)
            parent = tags.get(PARENT_RUN_TAG)
            if parent and parent not in resources:
                resources[parent] = _sweep_resources(client, parent)
            row.update(resources.get(parent or "", dict.fromkeys(RESOURCES)))
            rows.append(row)
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


def _sweep_resources(client: Any, parent_run_id: str) -> dict[str, float | None]:
    """CPUs and GPUs per trial, from the sweep's parent run (None when it cannot be read)."""
    try:
        params = client.get_run(parent_run_id).data.params
    except Exception:  # a deleted parent leaves its trials' cost unknown, not the table broken
        return dict.fromkeys(RESOURCES)
    found: dict[str, float | None] = {}
    for key in RESOURCES:
        try:
            found[key] = float(params[key])
        except (KeyError, ValueError):
            found[key] = None
    return found


def default_baseline(skills: Sequence[str]) -> str | None:
    """`ce` or `darts` when compared, else the first skill (in the order given)."""
    return next((s for s in DEFAULT_BASELINES if s in skills), skills[0] if skills else None)


def welch(sample: Sequence[float], baseline: Sequence[float],
          confidence: float = CONFIDENCE) -> dict[str, float]:
    """Welch's t-test of `sample` against `baseline`: mean difference, its confidence interval
    (Welch–Satterthwaite degrees of freedom) and the two-sided p-value; NaN where undefined
    (fewer than two values on a side, or no variance at all)."""
    from scipy import stats

    diff = float(pd.Series(sample).mean() - pd.Series(baseline).mean())
    undefined = {"diff": diff, "low": float("nan"), "high": float("nan"),
                 "p_value": float("nan"), "df": float("nan")}
    if len(sample) < 2 or len(baseline) < 2:
        return undefined
    result = stats.ttest_ind(sample, baseline, equal_var=False)
    if not pd.notna(result.pvalue):
        return undefined
    interval = result.confidence_interval(confidence)
    return {"diff": diff, "low": float(interval.low), "high": float(interval.high),
            "p_value": float(result.pvalue), "df": float(result.df)}


def search_cost(trials: pd.DataFrame) -> pd.DataFrame:
    """Per skill: CPU- and GPU-hours of one search (every trial of a seed, mean over seeds),
    and the hardware its trials ran on."""
    needed = {"search_time_s", *RESOURCES}
    if trials.empty or not needed <= set(trials.columns):
        return pd.DataFrame(columns=["skill", "search_cpu_h", "search_gpu_h", "hardware"])
    hours = pd.to_numeric(trials["search_time_s"], errors="coerce") / 3600.0
    costs = pd.DataFrame({
        "skill": trials["skill"], "seed": trials["seed"],
        "search_cpu_h": hours * pd.to_numeric(trials["cpus_per_trial"], errors="coerce"),
        "search_gpu_h": hours * pd.to_numeric(trials["gpus_per_trial"], errors="coerce"),
    })
    per_seed = costs.groupby(["skill", "seed"], dropna=False)[["search_cpu_h", "search_gpu_h"]]
    table = per_seed.sum(min_count=1).groupby("skill").mean().reset_index()
    hardware = trials.dropna(subset=["hardware"]).groupby("skill")["hardware"].agg(
        lambda names: "; ".join(sorted(set(names))))
    return table.merge(hardware.rename("hardware"), on="skill", how="left")


def _matching(trials: pd.DataFrame, skills: Sequence[str] | None,
              filters: dict[str, Any]) -> pd.DataFrame:
    """Trials of `skills` (all when None) on the data settings in `filters`, any status."""
    chosen = trials
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
    return chosen


def compare(
    trials: pd.DataFrame, skills: Sequence[str] | None = None, *, baseline: str | None = None,
    metric: str = "test_acc", **filters: Any
) -> pd.DataFrame:
    """Mean ± std per skill over seeds (best trial per seed), for trials matching `filters`;
    Welch's test of `metric` against `baseline` (default: `default_baseline`), and search
    cost. The table's `baseline` attribute names the baseline used."""
    if trials.empty:
        return trials
    if skills and baseline and baseline not in skills:
        skills = [*skills, baseline]  # compared against, so shown
    matching = _matching(trials, skills, filters)
    chosen = matching[matching["status"] == "FINISHED"].dropna(subset=["val_acc"])
    if chosen.empty:
        return pd.DataFrame()
    best = chosen.loc[chosen.groupby(["skill", "seed"])["val_acc"].idxmax()]
    values: dict[str, pd.Series] = {}
    rows = []
    for skill, group in best.groupby("skill"):
        row: dict[str, Any] = {"skill": skill, "seeds": len(group)}
        for key in COMPARED:
            column = pd.to_numeric(group[key], errors="coerce").dropna()
            if len(column):
                row[f"{key}_mean"] = column.mean()
                row[f"{key}_std"] = column.std(ddof=1) if len(column) > 1 else 0.0
        values[str(skill)] = pd.to_numeric(group[metric], errors="coerce").dropna()
        rows.append(row)
    table = pd.DataFrame(rows)
    baseline = baseline or default_baseline([*(skills or []), *sorted(values)])
    if baseline not in values:
        raise UsageError(f"baseline {str(baseline)[:40]!r} has no finished trials that match; "
                         f"compared: {', '.join(sorted(values))}")
    tests = {s: welch(v.tolist(), values[baseline].tolist()) for s, v in values.items()
             if s != baseline}
    for key in ("diff", "low", "high", "p_value"):
        table[f"{key}_vs_baseline"] = [tests.get(s, {}).get(key, float("nan"))
                                       for s in table["skill"]]
    table = table.merge(search_cost(matching), on="skill", how="left")
    table = table.sort_values(f"{metric}_mean" if f"{metric}_mean" in table else "test_acc_mean",
                              ascending=False).reset_index(drop=True)
    table.attrs.update(baseline=baseline, metric=metric)
    return table


def format_comparison(table: pd.DataFrame) -> str:
    """`mean ± std` cells, one row per skill; the difference to the baseline with its 95%
    interval and Welch's p-value; search cost; then the hardware of each skill's trials."""
    if table.empty:
        return "no finished trials match"
    shown = pd.DataFrame({"skill": table["skill"], "seeds": table["seeds"]})
    for key in COMPARED:
        if f"{key}_mean" in table:
            shown[key] = [
                "" if pd.isna(m) else f"{m:.4f} ± {s:.4f}"
                for m, s in zip(table[f"{key}_mean"], table[f"{key}_std"], strict=True)
            ]
    baseline, metric = table.attrs.get("baseline"), table.attrs.get("metric", "test_acc")
    if baseline and "diff_vs_baseline" in table:
        shown[f"{metric} - {baseline} [95% CI]"] = [
            "baseline" if s == baseline else _difference(row)
            for s, (_, row) in zip(table["skill"], table.iterrows(), strict=True)]
        shown["Welch p"] = ["" if pd.isna(p) else f"{p:.3g}"
                            for p in table["p_value_vs_baseline"]]
    for key, label in (("search_cpu_h", "search CPU-h"), ("search_gpu_h", "search GPU-h")):
        if key in table and table[key].notna().any():
            shown[label] = ["" if pd.isna(h) else f"{h:.3g}" for h in table[key]]
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        text = shown.to_string(index=False)
    if "hardware" in table:
        text += "".join(f"\nhardware of {s}: {h}" for s, h in
                        zip(table["skill"], table["hardware"], strict=True) if isinstance(h, str))
    return text


def _difference(row: pd.Series) -> str:
    diff, low, high = row["diff_vs_baseline"], row["low_vs_baseline"], row["high_vs_baseline"]
    if pd.isna(diff):
        return ""
    if pd.isna(low):
        return f"{diff:+.4f} (CI needs >= 2 seeds with spread)"
    return f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]"


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
