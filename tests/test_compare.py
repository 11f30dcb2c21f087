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
