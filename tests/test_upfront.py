"""Checked up front, said plainly: the sweep's dry run, strict knob types, the retry policy and
the small lies of issue 20 (class 3 and 5), each with the words the user sees. No Ray starts."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from skillearn.knobs import ConfigError, Knob
from skillearn.platform import cli, sweep
from skillearn.platform.validate import SWEEP_RECORD, write_sweep_record
from skillearn.trainables.registry import get_skill, resolve_config

REFUSED = [
    (["sweep", "darts", "--set", "ops=skip_connect,nosuchop"], "unknown op"),
    (["sweep", "darts", "--set", "ops=skip_connect,skip_connect"], "must not repeat"),
    (["sweep", "darts", "--set", "epochs=1.0"], "must be an integer"),
    (["sweep", "darts", "--set", "_skill=lfm"], "unknown setting '_skill'"),
    (["sweep", "darts", "--seeds", "0", "2147483648"], "at most 2147483647"),
    (["sweep", "mwnet", "--set", "meta_per_class=500"], "train split has only"),
    (["sweep", "darts", "--storage", "ftp://host/runs"], "unknown scheme"),
    (["sweep", "darts", "--storage", "{tmp}/a-file/runs"], "not a writable directory"),
    (["sweep", "darts", "--name", "n" * 101], "keep it to 100"),
    (["sweep", "darts", "--config", "{tmp}/on.yaml"], "quote the word"),
    (["sweep", "darts", "--config", "{tmp}/list.yaml"], "ops must be text"),
    (["sweep", "darts", "--config", "{tmp}/latin1.yaml"], "not UTF-8"),
    (["sweep", "darts", "--set", "device=cuda", "--gpus-per-trial", "0"], "device=cuda"),
    (["retrain", "--genotype", "{tmp}/geno.json", "--seeds", "-1"], "--seeds"),
    (["retrain", "--genotype", "{tmp}/bad_geno.json"], "reads state 7"),
    (["compare", "nosuchskill"], "unknown skill"),
    (["sweep", "nosuchskill"], "unknown skill 'nosuchskill'; available: ce, "),
    # the data layer's DataError reaches the CLI's one line as itself (no translation)
    (["sweep", "darts", "--dataset", "cifar10", "--data-root", "{tmp}"],
     "lacks cifar-10-batches-py/data_batch_1"),
    (["retrain", "--genotype", "{tmp}/geno.json", "--dataset", "cifar10", "--data-root", "{tmp}"],
     "pass --download to fetch them"),
    (["ui", "--tracking-uri", "foo://bar"], "foo://"),
    (["report", "--tracking-uri", "sqlite:///{tmp}/latin1.yaml"], "not an SQLite database"),
]


@pytest.mark.parametrize(("argv", "needle"), REFUSED, ids=[" ".join(a)[:50] for a, _ in REFUSED])
def test_refused_in_one_line_before_ray(argv, needle, tmp_path, monkeypatch, capsys) -> None:
    import ray

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep, "run_sweep", lambda spec: pytest.fail("the sweep would run"))
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "on.yaml").write_text("fused_cells: on\n")
    (tmp_path / "list.yaml").write_text("ops: [skip_connect, max_pool_3x3]\n")
    (tmp_path / "latin1.yaml").write_bytes("ops: caf\xe9\n".encode("latin-1"))
    genotype = {"normal": [["skip_connect", 0], ["skip_connect", 1]], "normal_concat": [2],
                "reduce": [["skip_connect", 0], ["skip_connect", 1]], "reduce_concat": [2]}
    (tmp_path / "geno.json").write_text(json.dumps(genotype))
    (tmp_path / "bad_geno.json").write_text(json.dumps({**genotype, "reduce": [
        ["skip_connect", 0], ["skip_connect", 7]]}))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "sweep" and "--storage" not in argv:
        argv += ["--storage", str(tmp_path / "runs")]
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("skillearn: error: "), err
    assert needle in lines[0]
    assert not ray.is_initialized()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_knob_coerce_gives_exactly_the_knob_type() -> None:
    assert Knob(4, low=1).coerce("epochs", 3) == 3
    assert type(Knob(0.1).coerce("lr", 1)) is float
    for bad in (1.0, True, "3", [3], None):
        with pytest.raises(ConfigError):
            Knob(4, low=1).coerce("epochs", bad)
    for bad in (3, 1.5, ["a"], {"a": 1}, None, "x" * 2000, "tab\tbed"):
        with pytest.raises(ConfigError):
            Knob("").coerce("ops", bad)
    with pytest.raises(ConfigError, match="must be true or false"):
        Knob(False).coerce("download", 1)
    with pytest.raises(ConfigError, match="finite"):
        Knob(0.1).coerce("lr", 10**400)
    with pytest.raises(ConfigError, match="is not one of"):
        Knob(32, choices=(16, 32, 64)).coerce("encoder_dim", 48)


def test_underscore_keys_are_checked_like_any_other() -> None:
    with pytest.raises(ConfigError, match="unknown setting '_anything'"):
        resolve_config(get_skill("darts"), {"_anything": 1})


def test_dry_run_creates_the_storage_and_the_sweep_records_its_skill(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sweep, "run_sweep", lambda spec: seen.append(spec) or {})
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", "darts", "--storage", str(tmp_path / "runs"), "--name", "a"]) == 0
    assert (tmp_path / "runs" / "a").is_dir()  # created by the dry run
    assert seen[0].config["epochs"] == 4 and type(seen[0].config["epochs"]) is int
    write_sweep_record(seen[0].path, "darts", "a", "digits")
    assert json.loads((tmp_path / "runs" / "a" / SWEEP_RECORD).read_text())["skill"] == "darts"


def test_resume_refuses_another_skills_sweep(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep, "run_sweep", lambda spec: pytest.fail("the sweep would run"))
    folder = tmp_path / "runs" / "mine"
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"")  # what sweep_exists looks for
    write_sweep_record(str(folder), "lfm", "mine", "digits")
    code = cli.main(["sweep", "darts", "--resume", "--name", "mine", "--storage",
                     str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "is a lfm sweep, not darts" in err


def test_ui_on_a_busy_port_says_so(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.subprocess, "call", lambda *a, **k: pytest.fail("UI launched"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = cli.main(["ui", "--port", str(busy.getsockname()[1])])
    err = capsys.readouterr()
    assert code == 2 and "another program uses it" in err.err
    assert "MLflow UI on" not in err.out


def test_compare_with_no_trials_of_a_named_skill_is_not_a_success(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).create_experiment("skillearn")
    code = cli.main(["compare", "lfm", "--tracking-uri", uri])
    captured = capsys.readouterr()
    assert code == 1
    assert "no finished trials of lfm" in captured.err


def test_retry_policy_keeps_retries_for_crashes_only(tmp_path) -> None:
    from ray.exceptions import RayTaskError
    from ray.tune.experiment import Trial

    from skillearn.data import DataError
    from skillearn.platform.retry import NoRetryOnDeterministicError, RetryPolicy

    class Offline(NoRetryOnDeterministicError):
        local_path = None  # no Ray session: no error file

    def failed(error: Exception) -> Trial:
        trial = Trial("skillearn_trial", stub=True, max_failures=2)
        RetryPolicy().on_trial_start(0, [trial], trial)
        assert type(trial) is NoRetryOnDeterministicError
        trial.__class__ = Offline
        try:
            raise error
        except Exception as raised:
            trial.handle_error(RayTaskError("skillearn_trial", "traceback", raised))
        return trial

    assert not failed(DataError("no images")).should_recover()
    assert not failed(ConfigError("bad knob")).should_recover()
    assert failed(RuntimeError("worker hiccup")).should_recover()
    assert failed(OSError("disk full")).should_recover()


def test_non_utf8_config_names_the_file(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_bytes(b"epochs: \xff\n")
    assert cli.main(["sweep", "darts", "--config", "spec.yaml"]) == 2
    assert "spec.yaml is not UTF-8 text" in capsys.readouterr().err
