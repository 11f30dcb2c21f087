"""Fast platform tests: bad requests fail up front, the Optuna space, the MLflow callback.

No Ray cluster is started here (each CLI case asserts that); the end-to-end sweeps are in
test_platform_e2e.py.
"""

from __future__ import annotations

import json
import pickle
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from skillearn.artifacts import ArchitectureWeights, GenotypeArtifact, Table, artifacts_payload
from skillearn.knobs import ConfigError, Knob, Skill
from skillearn.platform.cli import main
from skillearn.platform.report import best_trials, short_genotype
from skillearn.platform.search_space import define_by_run
from skillearn.platform.validate import UsageError, check_tracking_uri, parse_sets
from skillearn.trainables.registry import get_skill


def _closed_port() -> int:
    """A local port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD_SWEEPS = [
    (["sweep", "nosuchskill"], "unknown skill"),
    (["sweep", "darts", "--dataset", "nosuchdata"], "unknown dataset"),
    (["sweep", "darts", "--noise-rate", "2.0"], "noise_rate"),
    (["sweep", "darts", "--imbalance", "0.5"], "imbalance"),
    (["sweep", "darts", "--epochs", "0"], "epochs"),
    (["sweep", "darts", "--method", "newton"], "method"),
    (["sweep", "darts", "--set", "nosuchknob=1"], "nosuchknob"),
    (["sweep", "darts", "--set", "w_lr=5.0"], "w_lr"),
    (["sweep", "darts", "--set", "batch_size"], "KEY=VALUE"),
    (["sweep", "darts", "--set", "download=maybe"], "true or false"),
    (["sweep", "darts", "--samples", "0"], "--samples"),
    (["sweep", "darts", "--samples", "many"], "--samples"),
    (["sweep", "darts", "--concurrency", "0"], "--concurrency"),
    (["sweep", "darts", "--gpus-per-trial", "9"], "--gpus-per-trial"),
    (["sweep", "darts", "--gpus-per-trial", "-1"], "--gpus-per-trial"),
    (["sweep", "darts", "--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["sweep", "darts", "--cpus-per-trial", "4096"], "--cpus-per-trial"),
    (["sweep", "darts", "--data-root", "/nonexistent/skillearn-data"], "data root"),
    (["sweep", "darts", "--dataset", "cifar10"], "cifar"),
    (["sweep", "darts", "--address", "127.0.0.1:{port}"], "cannot reach the Ray cluster"),
    (["sweep", "darts", "--address", "ray://127.0.0.1:{port}"], "SQLite store"),
    (["sweep", "darts", "--address", "not-an-address"], "host:port"),
    (["sweep", "darts", "--tracking-uri", "file:///tmp/mlruns"], "sqlite:///"),
    (["sweep", "darts", "--tracking-uri", "./mlruns"], "sqlite:///"),
    (["sweep", "darts", "--tracking-uri", "http://127.0.0.1:{port}"], "tracking server"),
    (["sweep", "darts", "--tracking-uri", "sqlite:///{tmp}/a-file/mlflow.db"], "writable"),
    (["sweep", "darts", "--resume"], "--resume"),
    (["sweep", "darts", "--resume", "--name", "never-ran"], "never-ran"),
    (["sweep", "darts", "--name", "a/b"], "--name"),
    (["sweep"], "skill"),
    (["nosuchcommand"], "invalid choice"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD_SWEEPS, ids=[" ".join(a) for a, _ in BAD_SWEEPS])
def test_bad_sweep_fails_up_front(
    argv: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import ray

    monkeypatch.chdir(tmp_path)
    port = _closed_port()
    (tmp_path / "a-file").write_text("not a directory")
    argv = [a.replace("{port}", str(port)).replace("{tmp}", str(tmp_path)) for a in argv]
    storage = tmp_path / "runs"
    if argv[0] == "sweep":
        argv = [*argv, "--storage", str(storage)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("skillearn: error: ")
    assert needle.lower() in lines[0].lower()
    assert "Traceback" not in err
    assert not ray.is_initialized()
    assert not storage.exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_existing_sweep_name_needs_resume(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    code = main(["sweep", "darts", "--storage", str(tmp_path / "runs"), "--name", "taken"])
    assert code == 2
    assert "--resume" in capsys.readouterr().err


def test_report_without_store_is_a_usage_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 2
    assert "no MLflow database" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_listing_commands(capsys) -> None:
    assert main(["skills"]) == 0
    assert "darts" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    assert "digits" in capsys.readouterr().out


def test_sqlite_uri_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_tracking_uri("sqlite:///sub/mlflow.db") == f"sqlite:///{tmp_path}/sub/mlflow.db"
    with pytest.raises(UsageError, match="sqlite:///"):
        check_tracking_uri("mlruns")


def test_set_values_take_the_knob_type() -> None:
    skill = get_skill("darts")
    got = parse_sets(["batch_size=32", "w_lr=0.01", "download=true", "ops=skip_connect"], skill)
    assert got == {"batch_size": 32, "w_lr": 0.01, "download": True, "ops": "skip_connect"}


# --- the Optuna space ------------------------------------------------------------------------


@dataclass(frozen=True)
class WhenKnob(Knob):
    """A knob with the (future) `when` condition, to show conditional spaces work."""

    when: Mapping[str, Any] | None = None


def _toy_skill() -> Skill:
    knobs = {
        "lr": Knob(0.01, low=1e-4, high=1.0, log=True, tune=True),
        "depth": Knob(3, low=1, high=6, tune=True),
        "opt": Knob("sgd", choices=("sgd", "adam"), tune=True),
        "nesterov": WhenKnob(False, tune=True, when={"opt": "sgd"}),
        "fixed_thing": Knob(1.0, low=0.0, high=2.0),
    }
    return Skill("toy", "toy skill", knobs, build=lambda setup: None)


def _study(space, n: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3))
    returned = []

    def objective(trial):
        returned.append(space(trial))
        return random.random()

    study.optimize(objective, n_trials=n)
    return study, returned


def test_define_by_run_stays_in_knob_ranges() -> None:
    skill = _toy_skill()
    space = define_by_run(skill, {"depth": 2, "fixed_thing": 1.5})
    study, returned = _study(pickle.loads(pickle.dumps(space)), 12)  # Ray pickles it
    assert all(r == {"depth": 2, "fixed_thing": 1.5} for r in returned)
    for trial in study.trials:
        p = trial.params
        assert "depth" not in p  # pinned, so not searched
        assert 1e-4 <= p["lr"] <= 1.0
        assert p["opt"] in ("sgd", "adam")
        assert ("nesterov" in p) == (p["opt"] == "sgd")  # conditional knob
    assert {t.params["opt"] for t in study.trials} == {"sgd", "adam"}


def test_define_by_run_on_a_real_skill() -> None:
    skill = get_skill("darts")
    tuned = skill.tuned_knobs()
    assert tuned, "darts should declare tuned knobs"
    study, _ = _study(define_by_run(skill, {}), 6)
    for trial in study.trials:
        assert set(trial.params) == set(tuned)
        for name, value in trial.params.items():
            knob = tuned[name]
            if knob.choices is None and knob.low is not None:
                assert knob.low <= value <= knob.high
            knob.check(name, value)


def test_define_by_run_rejects_a_tuned_knob_without_range() -> None:
    skill = Skill("bad", "", {"x": Knob(1.0, tune=True)}, build=lambda s: None)
    with pytest.raises(ConfigError, match="low/high"):
        define_by_run(skill, {})


# --- the MLflow callback ---------------------------------------------------------------------


def _genotype_json() -> str:
    from skillearn.search_spaces.darts import DARTS_V2

    return DARTS_V2.to_json()


def _result(trial_id: str, epoch: int, val_acc: float) -> dict[str, Any]:
    from skillearn.search_spaces.darts import PRIMITIVES

    rng = random.Random(epoch)
    alpha = [[rng.gauss(0, 1) for _ in range(8)] for _ in range(14)]
    artifacts = [
        GenotypeArtifact(json.loads(_genotype_json())),
        ArchitectureWeights({"alpha_normal": alpha, "alpha_reduce": alpha}, list(PRIMITIVES)),
        Table("per_class_acc", ["class", "test_acc"], [[0, 0.1], [1, 0.2]]),
    ]
    return {
        "epoch": epoch, "val_acc": val_acc, "test_acc": val_acc - 0.1, "train_loss": 1.0 / epoch,
        "worst_class_acc": 0.2, "params": 1000, "artifacts": artifacts_payload(artifacts),
        # what Ray adds
        "training_iteration": epoch, "trial_id": trial_id, "pid": 123, "done": False,
        "timestamp": 1700000000, "config": {"w_lr": 0.1}, "time_total_s": 1.5,
    }


def _trial(trial_id: str, tmp: Path, error: str | None = None) -> SimpleNamespace:
    error_file = None
    if error:
        error_file = tmp / f"{trial_id}.txt"
        error_file.write_text(f"Traceback (most recent call last):\n  ...\n{error}\n")
    number = int(trial_id.rsplit("_", 1)[-1]) + 1  # Ray's counter, as in its experiment_tag
    return SimpleNamespace(
        trial_id=trial_id, config={"_skill": "darts", "dataset": "digits", "seed": 0,
                                   "w_lr": 0.1 / number, "ops": ""},
        experiment_tag=f"{number}_w_lr={0.1 / number}",
        last_result={}, error_file=str(error_file) if error_file else None,
    )


def _feed(tracker, trial, epochs, start=1) -> None:
    for epoch in range(start, start + epochs):
        result = _result(trial.trial_id, epoch, 0.5 + 0.1 * epoch)
        trial.last_result = result
        tracker.on_trial_result(iteration=epoch, trials=[trial], trial=trial, result=result)


def _runs(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_mlflow_callback_parent_children_metrics_artifacts_and_resume(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from skillearn.platform.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = MlflowTracker(uri, "exp", "sweep1", str(tmp_path / "runs" / "sweep1"),
                            tags={"skill": "darts", "dataset": "digits", "seed": 0},
                            params={"epochs": 2, "samples": 2}, name_knobs=["w_lr", "beta"])
    tracker.setup(num_samples=2)
    ok, bad = _trial("t_00000", tmp_path), _trial("t_00001", tmp_path, "ValueError: boom")
    for t in (ok, bad):
        tracker.on_trial_start(iteration=0, trials=[ok, bad], trial=t)
    _feed(tracker, ok, 2)
    _feed(tracker, bad, 1)
    tracker.on_trial_complete(iteration=3, trials=[ok, bad], trial=ok)
    tracker.on_trial_error(iteration=3, trials=[ok, bad], trial=bad)
    pickled = pickle.dumps(tracker)  # Ray stores callbacks in tuner.pkl
    tracker.on_experiment_end(trials=[ok, bad])

    client = MlflowClient(uri)
    runs = _runs(client, "exp")
    parents = [r for r in runs if r.data.tags.get("skillearn.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("skillearn.role") == "trial"]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.data.tags["skill"] == "darts" and parent.data.params["epochs"] == "2"
    by_trial = {r.data.tags["trial_id"]: r for r in children}
    for r in children:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["skill"] == "darts" and r.data.tags["dataset"] == "digits"
        assert r.data.params["w_lr"] in ("0.1", "0.05") and "_skill" not in r.data.params
        assert "pid" not in r.data.metrics and "timestamp" not in r.data.metrics
    run_ok, run_bad = by_trial["t_00000"], by_trial["t_00001"]
    # a row of the runs table says what it is: skill, trial number, the searched knobs
    assert (run_ok.info.run_name, run_bad.info.run_name) == ("darts #1 w_lr=0.1",
                                                             "darts #2 w_lr=0.05")
    # MLflow 3 opens the experiment in its model-training mode (not GenAI)
    assert client.get_experiment_by_name("exp").tags["mlflow.experimentKind"] == \
        "custom_model_development"
    # the sweep's metric is the run's first metric: the compare view's default plot axis
    assert next(iter(client.get_run(run_ok.info.run_id).data.metrics)) == "val_acc"
    assert run_ok.info.status == "FINISHED"
    assert run_bad.info.status == "FAILED" and run_bad.data.tags["error"] == "ValueError: boom"
    history = client.get_metric_history(run_ok.info.run_id, "val_acc")
    assert [(m.step, round(m.value, 3)) for m in history] == [(1, 0.6), (2, 0.7)]
    assert json.loads(run_ok.data.tags["genotype"]) == json.loads(_genotype_json())
    artifacts = Path(run_ok.info.artifact_uri.removeprefix("file://"))
    for name in ("genotype.json", "cell_normal.png", "cell_reduce.png", "alpha_evolution.png",
                 "per_class_acc.csv"):
        assert (artifacts / name).stat().st_size > 0, name
    assert str(artifacts).startswith(str(tmp_path))  # artifacts live beside the database
    assert "best_val_acc" in client.get_run(parent.info.run_id).data.metrics

    # Resume: a fresh driver unpickles the callback; the errored trial runs again, a new one
    # starts. No duplicate parent or child runs; the old alpha history is continued.
    resumed = pickle.loads(pickled)
    resumed.setup(num_samples=3)
    new = _trial("t_00002", tmp_path)
    bad.error_file = None
    for t in (ok, bad, new):
        resumed.on_trial_start(iteration=0, trials=[ok, bad, new], trial=t)
    _feed(resumed, ok, 1, start=2)  # restored from an older snapshot: repeats epoch 2
    _feed(resumed, bad, 1, start=2)
    _feed(resumed, new, 1)
    resumed.on_trial_complete(iteration=5, trials=[ok, bad, new], trial=ok)
    resumed.on_trial_complete(iteration=5, trials=[ok, bad, new], trial=bad)
    resumed.on_trial_complete(iteration=5, trials=[ok, bad, new], trial=new)
    resumed.on_experiment_end(trials=[ok, bad, new])

    runs = _runs(client, "exp")
    assert sum(r.data.tags.get("skillearn.role") == "sweep" for r in runs) == 1
    children = [r for r in runs if r.data.tags.get("skillearn.role") == "trial"]
    assert sorted(r.data.tags["trial_id"] for r in children) == ["t_00000", "t_00001", "t_00002"]
    again = client.get_run(run_bad.info.run_id)
    assert again.info.status == "FINISHED"
    for run in (run_ok, run_bad):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == [1, 2]
    alpha_files = client.list_artifacts(run_bad.info.run_id, "alphas")
    assert len(alpha_files) == 2
    history = resumed.artifacts.history("t_00001", "architecture_weights", "alphas")
    assert history.keys() == {1, 2}

    table = best_trials(uri, "exp", top=2)
    assert set(table["run"]) == {"darts #1 w_lr=0.1", "darts #2 w_lr=0.05"}  # both 0.7
    assert set(table["sweep"]) == {"sweep1"}
    assert {"skill", "val_acc", "test_acc", "worst_class_acc", "genotype"} <= set(table.columns)
    assert table["genotype"][0].startswith("N: sep3/0")


def test_short_genotype() -> None:
    text = short_genotype(_genotype_json())
    assert text.startswith("N: sep3/0 sep3/1") and " | R: max3/0" in text
    assert short_genotype(None) == ""


def test_resume_without_name_picks_the_latest_sweep(tmp_path: Path, monkeypatch) -> None:
    from skillearn.platform.validate import SweepRequest, validate_sweep

    monkeypatch.chdir(tmp_path)
    for name in ("darts-digits-20260101-000000", "darts-digits-20260102-000000"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "tuner.pkl").write_bytes(b"")
    spec = validate_sweep(SweepRequest("darts", samples=2, storage=str(tmp_path / "runs"),
                                       resume=True))
    assert spec.name == "darts-digits-20260102-000000"
    assert spec.path == f"{tmp_path}/runs/darts-digits-20260102-000000"
    assert spec.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
