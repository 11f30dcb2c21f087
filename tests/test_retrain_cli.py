"""`skillearn retrain`: a genotype retrained with several seeds, logged to MLflow."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from skillearn.platform.cli import main
from skillearn.search_spaces.darts import Genotype

GENOTYPE = Genotype(
    normal=(("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 0), ("sep_conv_3x3", 2)),
    normal_concat=(2, 3),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0)),
    reduce_concat=(2, 3),
)


def test_retrain_a_genotype_file_with_two_seeds(tmp_path: Path, capsys) -> None:
    path = tmp_path / "genotype.json"
    path.write_text(GENOTYPE.to_json())
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code = main(["retrain", "--genotype", str(path), "--seeds", "0", "1", "--epochs", "1",
                 "--channels", "8", "--cells", "2", "--tracking-uri", uri])
    assert code == 0
    out = capsys.readouterr().out
    assert "over 2 seeds" in out
    assert "recipe fast (auto: 8 px inputs" in out  # digits keep the short recipe, and say why
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("skillearn").experiment_id])
    assert 0.0 <= run.data.metrics["retrain_test_acc_mean"] <= 1.0
    assert Genotype.from_json(run.data.tags["genotype"]) == GENOTYPE
    history = client.get_metric_history(run.info.run_id, "retrain_test_acc_seed")
    assert sorted(m.step for m in history) == [0, 1]


def test_retrain_refuses_a_file_without_a_genotype(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"normal": 3}')
    code = main(["retrain", "--genotype", str(path), "--tracking-uri",
                 f"sqlite:///{tmp_path}/mlflow.db"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not hold a valid genotype" in err[0]
