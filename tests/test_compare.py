"""`skillearn compare`: best trial per seed, mean ± std per skill, and the bar chart."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from skillearn.platform.cli import main
from skillearn.platform.compare import compare, draw_comparison, format_comparison


def _trials() -> pd.DataFrame:
    rows = []
    for skill, accs in (("ce", [0.60, 0.62, 0.64]), ("mwnet", [0.70, 0.74, 0.72])):
        for seed, acc in enumerate(accs):
            rows.append({"skill": skill, "seed": str(seed), "status": "FINISHED",
                         "dataset": "digits", "noise_rate": "0.4", "noise_type": "uniform",
                         "imbalance": "10.0", "val_acc": acc, "test_acc": acc,
                         "worst_class_acc": acc - 0.2, "weight_auc": None,
                         "retrain_test_acc": None})
    # a worse trial of a sweep on seed 0 must not count, nor a failed one, nor other data
    rows.append({**rows[3], "val_acc": 0.1, "test_acc": 0.1})
    rows.append({**rows[0], "status": "FAILED", "val_acc": 0.99, "test_acc": 0.99})
    rows.append({**rows[0], "imbalance": "1.0", "val_acc": 0.95, "test_acc": 0.95})
    return pd.DataFrame(rows)


def test_mean_and_std_over_the_best_trial_of_each_seed() -> None:
    table = compare(_trials(), imbalance=10.0, noise_rate=0.4, dataset="digits")
    assert list(table["skill"]) == ["mwnet", "ce"]
    mwnet = table.iloc[0]
    assert mwnet["seeds"] == 3
    assert mwnet["test_acc_mean"] == pytest.approx(0.72)
    assert mwnet["test_acc_std"] == pytest.approx(0.02)
    assert table.iloc[1]["worst_class_acc_mean"] == pytest.approx(0.42)
    assert "0.7200 ± 0.0200" in format_comparison(table)


def test_skill_filter_and_chart(tmp_path: Path) -> None:
    table = compare(_trials(), ["ce"], imbalance=10.0)
    assert list(table["skill"]) == ["ce"]
    path = draw_comparison(table, tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seeds_and_seed_together_are_refused(capsys, tmp_path: Path) -> None:
    code = main(["sweep", "ce", "--seeds", "0", "1", "--seed", "3", "--storage",
                 str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert code == 2
    assert "either --seed or --seeds" in capsys.readouterr().err


def test_a_yaml_spec_is_checked_like_set(capsys, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("w_lr: 0.05\nnoise_rate: 1.5\n")
    code = main(["sweep", "darts", "--config", str(spec), "--storage", str(tmp_path / "runs"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert code == 2
    assert "noise_rate=1.5 is above its maximum" in capsys.readouterr().err
    spec.write_text("- not a mapping\n")
    assert main(["sweep", "darts", "--config", str(spec)]) == 2
    assert "must be a mapping" in capsys.readouterr().err


# --- Welch's test against a baseline and search cost, on real MLflow runs -------------------

ACCS = {"ce": [0.61, 0.64, 0.60, 0.66], "mwnet": [0.70, 0.75, 0.71], "darts": [0.62, 0.80]}
SEARCH_S = {"ce": 1800.0, "mwnet": 5400.0, "darts": 900.0}  # per trial
RESOURCES = {"ce": (2.0, 0.0), "mwnet": (1.0, 0.5), "darts": (4.0, 1.0)}  # cpus, gpus


def _log_sweeps(uri: str) -> None:
    """One sweep (parent run) per skill, one finished trial per seed, plus a worse second trial
    on seed 0 that counts towards the cost but not the accuracy."""
    from mlflow.tracking import MlflowClient

    from skillearn.platform.tags import PARENT_RUN_TAG, ROLE_TAG

    client = MlflowClient(uri)
    experiment = client.create_experiment("skillearn")
    for skill, accs in ACCS.items():
        cpus, gpus = RESOURCES[skill]
        parent = client.create_run(experiment, tags={ROLE_TAG: "sweep", "skill": skill})
        client.log_param(parent.info.run_id, "cpus_per_trial", str(cpus))
        client.log_param(parent.info.run_id, "gpus_per_trial", str(gpus))
        trials = [(seed, acc) for seed, acc in enumerate(accs)] + [(0, 0.1)]
        for seed, acc in trials:
            run = client.create_run(experiment, tags={
                ROLE_TAG: "trial", "skill": skill, PARENT_RUN_TAG: parent.info.run_id,
                "hardware": f"Test CPU ({int(cpus)} CPUs)"})
            run_id = run.info.run_id
            client.log_param(run_id, "seed", str(seed))
            client.log_param(run_id, "dataset", "digits")
            for key, value in (("val_acc", acc), ("test_acc", acc),
                               ("search_time_s", SEARCH_S[skill])):
                client.log_metric(run_id, key, value)
            client.set_terminated(run_id, "FINISHED")


def _by_hand(sample: list[float], base: list[float]) -> tuple[float, float, float]:
    """The Welch–Satterthwaite interval of the mean difference, from the textbook formula."""
    import numpy as np
    from scipy import stats

    a, b = np.asarray(sample), np.asarray(base)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    diff, half = a.mean() - b.mean(), stats.t.ppf(0.975, df) * np.sqrt(va + vb)
    return diff, diff - half, diff + half


def test_welch_p_value_and_interval_against_the_baseline(tmp_path: Path) -> None:
    from scipy import stats

    from skillearn.platform.compare import trial_table

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _log_sweeps(uri)
    table = compare(trial_table(uri, "skillearn"), dataset="digits").set_index("skill")
    assert table.attrs["baseline"] == "ce"  # the default baseline when ce is compared
    assert pd.isna(table.loc["ce", "p_value_vs_baseline"])
    for skill in ("mwnet", "darts"):
        row = table.loc[skill]
        expected_p = stats.ttest_ind(ACCS[skill], ACCS["ce"], equal_var=False).pvalue
        assert row["p_value_vs_baseline"] == pytest.approx(expected_p, rel=1e-9)
        diff, low, high = _by_hand(ACCS[skill], ACCS["ce"])
        assert row["diff_vs_baseline"] == pytest.approx(diff)
        assert (row["low_vs_baseline"], row["high_vs_baseline"]) == pytest.approx((low, high))
    # mwnet's gain is clear; darts' two seeds disagree too much to tell it from ce
    assert table.loc["mwnet", "p_value_vs_baseline"] < 0.05 < table.loc["darts",
                                                                       "p_value_vs_baseline"]
    assert table.loc["darts", "low_vs_baseline"] < 0 < table.loc["darts", "high_vs_baseline"]


def test_search_cost_counts_every_trial_of_a_seed_with_its_resources(tmp_path: Path) -> None:
    from skillearn.platform.compare import trial_table

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _log_sweeps(uri)
    table = compare(trial_table(uri, "skillearn")).set_index("skill")
    for skill, accs in ACCS.items():
        cpus, gpus = RESOURCES[skill]
        trials = len(accs) + 1  # seed 0 ran two trials
        hours = SEARCH_S[skill] / 3600 * trials / len(accs)  # per seed, mean over seeds
        assert table.loc[skill, "search_cpu_h"] == pytest.approx(hours * cpus)
        assert table.loc[skill, "search_gpu_h"] == pytest.approx(hours * gpus)
        assert table.loc[skill, "hardware"] == f"Test CPU ({int(cpus)} CPUs)"


def test_compare_cli_names_the_baseline_and_prints_the_tests(tmp_path: Path, capsys,
                                                            monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _log_sweeps(uri)
    monkeypatch.chdir(tmp_path)
    code = main(["compare", "mwnet", "--baseline", "darts", "--tracking-uri", uri])
    out = capsys.readouterr().out
    assert code == 0
    assert "test_acc - darts [95% CI]" in out and "Welch p" in out and "baseline" in out
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["mwnet", "darts"]  # no ce row
    assert lines[3].startswith("hardware of")
    assert "search CPU-h" in out and "hardware of mwnet: Test CPU (1 CPUs)" in out
    code = main(["compare", "mwnet", "--baseline", "lfm", "--tracking-uri", uri])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "baseline 'lfm' has no finished trials" in err[0]
    assert main(["compare", "--baseline", "nosuchskill", "--tracking-uri", uri]) == 2


def test_the_parser_offers_the_compared_metrics() -> None:
    from skillearn.platform.cli import COMPARED_METRICS
    from skillearn.platform.compare import COMPARED

    assert COMPARED_METRICS == COMPARED


def test_trials_record_their_hardware_as_a_tag(tmp_path: Path) -> None:
    """What a trial reports (`sweep.trial_location`) reaches its MLflow run as the tag that
    `compare` prints beside the search cost."""
    from types import SimpleNamespace

    from mlflow.tracking import MlflowClient

    from skillearn.platform.hardware import cpu_model, describe_hardware
    from skillearn.platform.tracking import MlflowTracker

    hardware = describe_hardware()
    assert hardware.startswith(cpu_model()) and "CPUs)" in hardware
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = MlflowTracker(uri, "exp", "sweep", str(tmp_path / "sweep"), params={"samples": 1})
    trial = SimpleNamespace(trial_id="t1", config={"_skill": "ce"}, last_result={},
                            error_file=None)
    tracker.setup()
    tracker.on_trial_start(iteration=0, trials=[trial], trial=trial)
    result = {"epoch": 1, "val_acc": 0.5, "node_id": "abc", "node_ip": "127.0.0.1",
              "hardware": hardware}
    trial.last_result = result
    tracker.on_trial_result(iteration=1, trials=[trial], trial=trial, result=result)
    tracker.on_trial_complete(iteration=1, trials=[trial], trial=trial)
    tracker.on_experiment_end(trials=[trial])
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id],
                              filter_string="tags.`skillearn.role` = 'trial'")
    assert runs[0].data.tags["hardware"] == hardware
