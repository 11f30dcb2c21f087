"""A sweep logged to a real MLflow tracking server backed by PostgreSQL, with the Optuna study in
the same database.

Needs SKILLEARN_TEST_POSTGRES=postgresql://user:password@127.0.0.1:5432/db (`.ci/run` installs
and starts PostgreSQL and sets it); skipped with that reason otherwise. Slow (about a minute).
"""

from __future__ import annotations

import os
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from conftest import POSTGRES_ENV, TINY, mlflow_server

from skillearn.platform.cli import main
from skillearn.platform.redact import redact

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set: no PostgreSQL for the tracking server "
                    "(`.ci/run` installs and starts one)")
    pytest.importorskip("psycopg")
    return url


def test_sweep_logs_to_a_postgres_backed_server(postgres_url: str, tmp_path: Path,
                                                capsys, monkeypatch) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    from skillearn.platform.secrets import split_userinfo

    # The study lives in the same database, in its own schema: MLflow and Optuna both keep
    # their schema version in a table named alembic_version. Its password is read from the
    # environment (skillearn refuses one written into the URL).
    scheme, user, password, rest = split_userinfo(postgres_url)
    monkeypatch.setenv("SKL_TEST_DB_PASSWORD", urllib.parse.unquote(password or ""))
    optuna_url = f"{postgres_url}?options=-csearch_path%3Doptuna"
    optuna_template = f"{scheme}{user}:${{SKL_TEST_DB_PASSWORD}}@{rest}" \
        "?options=-csearch_path%3Doptuna"
    experiment = f"server-{uuid.uuid4().hex[:8]}"  # the database outlives test runs
    name = f"pg-{uuid.uuid4().hex[:8]}"
    with mlflow_server(postgres_url, tmp_path / "artifacts", tmp_path / "server.log",
                       start_timeout=300) as (url, _):
        started = time.perf_counter()
        code = main(["sweep", "darts", "--samples", "2", "--no-asha",
                     "--storage", str(tmp_path / "runs"), "--name", name,
                     "--tracking-uri", url, "--experiment", experiment,
                     "--optuna-storage", optuna_template, *TINY])
        took = time.perf_counter() - started
        assert code == 0
        client = MlflowClient(url)
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if r.data.tags.get("skillearn.role") == "sweep"]
        children = [r for r in runs if r.data.tags.get("skillearn.role") == "trial"]
        assert len(parents) == 1 and len(children) == 2
        assert parents[0].data.params["optuna_storage"] == redact(optuna_template)
        assert ":${SKL_TEST_DB_PASSWORD}@" in parents[0].data.params["optuna_storage"]
        for run in children:
            assert run.info.status == "FINISHED"
            assert {"val_acc", "test_acc", "train_loss"} <= set(run.data.metrics)
            assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1]
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"genotype.json", "cell_normal.png", "cell_reduce.png"} <= names
            assert run.data.tags["node_id"] and run.data.tags["node_ip"]
        # the artifacts went through the server into its --artifacts-destination
        assert list((tmp_path / "artifacts").rglob("cell_normal.png"))

    study = optuna.load_study(study_name=name, storage=optuna_url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2
    by_params = {round(float(r.data.params["w_lr"]), 10) for r in children}
    assert {round(t.params["w_lr"], 10) for t in complete} == by_params
    out = capsys.readouterr().out
    assert postgres_url not in out  # the password is never printed
    print(f"\npostgres-backed MLflow server: 2-trial sweep logged in {took:.1f} s")
