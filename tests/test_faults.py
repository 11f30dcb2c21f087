"""Fault injection on real sweeps, each with its figures printed (what was lost, time to recover):

- a trial's worker process SIGKILLed mid-trial -> it restarts from its last checkpoint;
- a corrupt checkpoint -> the trial fails with a one-line CheckpointError naming the file;
- a non-finite loss (weights poisoned with NaN in the checkpoint a restarted trial loads; no
  in-range learning rate makes the embedded supernet diverge) -> the trial errors with the
  NonFiniteError reason in MLflow, the sweep goes on;
- the driver SIGKILLed -> `skillearn sweep --resume` keeps every finished trial and the TPE
  history (the Optuna study in the sweep's optuna.db);
- the tracking server stopped (SIGSTOP) for 30 s mid-sweep -> the sweep finishes and every
  trial's metrics and artifacts arrive once it is back (PostgreSQL-backed when
  SKILLEARN_TEST_POSTGRES is set, else SQLite-backed).

Slow (a few minutes in all); budgets are tiny. Every process started here is killed by group.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import POSTGRES_ENV, mlflow_server, sweep_subprocess, wait_for_finished_trials

from skillearn.platform.cli import main

pytestmark = pytest.mark.slow

FAST = ["--set", "fd_gap_every=0"]


def _results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return rows


def _child_runs(uri: str, experiment: str = "skillearn") -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], "tags.`skillearn.role` = 'trial'")
    return {r.data.tags["trial_id"]: r for r in runs}


def _poison(checkpoint: Path, how: str) -> None:
    """Corrupt a checkpoint file, or keep it loadable but fill its weights with NaN."""
    import torch

    if how == "corrupt":
        checkpoint.write_bytes(b"this is not a checkpoint\n" * 4)
        return
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)

    def nan(value):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return torch.full_like(value, float("nan"))
        if isinstance(value, dict):
            return {k: nan(v) for k, v in value.items()}
        if isinstance(value, list):
            return [nan(v) for v in value]
        return value

    payload["levels"] = nan(payload["levels"])
    payload["modules"] = nan(payload["modules"])
    torch.save(payload, checkpoint)


# --- worker kill, corrupt checkpoint, NaN: one sweep, three trials ------------------------------


@pytest.fixture(scope="module")
def faulty_sweep(tmp_path_factory):
    """Three trials; as each reports its first epoch its worker is frozen, its checkpoints are
    left alone (kill) / corrupted / NaN-poisoned, and the worker is SIGKILLed."""
    pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("faults")
    uri = f"sqlite:///{root}/mlflow.db"
    sweep_dir = root / "runs" / "faults"
    args = ["sweep", "darts", "--samples", "3", "--concurrency", "3", "--cpus-per-trial", "0.5",
            "--no-asha", "--epochs", "3", "--set", "steps_per_epoch=3", *FAST,
            "--storage", str(root / "runs"), "--tracking-uri", uri, "--name", "faults"]
    roles = ["kill", "corrupt", "nan"]
    events: dict[str, dict] = {}  # trial_id -> what was done, when
    seen: dict[str, list[tuple[float, dict]]] = {}  # trial_id -> (time seen, result)
    started = time.perf_counter()
    with sweep_subprocess(args, root / "driver.log") as proc:
        deadline = time.time() + 420
        while proc.poll() is None and time.time() < deadline:
            for trial_dir in sorted(sweep_dir.glob("trial_*")):
                trial_id = trial_dir.name.removeprefix("trial_")
                rows = _results(trial_dir)
                known = seen.setdefault(trial_id, [])
                now = time.perf_counter()
                known.extend((now, row) for row in rows[len(known):])
                if not rows or trial_id in events or not roles:
                    continue
                role, pid = roles.pop(0), int(rows[-1]["pid"])
                os.kill(pid, signal.SIGSTOP)  # no new checkpoint while we work
                checkpoints = sorted(trial_dir.glob("checkpoint_*/trial.pt"))
                if role != "kill":
                    for checkpoint in checkpoints:
                        _poison(checkpoint, role)
                os.kill(pid, signal.SIGKILL)
                events[trial_id] = {"role": role, "pid": pid, "killed_at": time.perf_counter(),
                                    "epoch_at_kill": int(rows[-1]["epoch"]),
                                    "checkpoints": [str(c) for c in checkpoints]}
            time.sleep(0.25)
        assert proc.poll() is not None, "the faulty sweep did not finish in time"
    for trial_dir in sorted(sweep_dir.glob("trial_*")):  # the results written at the end
        known = seen.setdefault(trial_dir.name.removeprefix("trial_"), [])
        known.extend((time.perf_counter(), r) for r in _results(trial_dir)[len(known):])
    log = (root / "driver.log").read_text()
    by_role = {e["role"]: (trial_id, e) for trial_id, e in events.items()}
    assert set(by_role) == {"kill", "corrupt", "nan"}, (events, log[-3000:])
    return {"uri": uri, "log": log, "code": proc.returncode, "by_role": by_role, "seen": seen,
            "took": time.perf_counter() - started}


def test_killed_worker_restarts_from_its_last_checkpoint(faulty_sweep) -> None:
    trial_id, event = faulty_sweep["by_role"]["kill"]
    rows = faulty_sweep["seen"][trial_id]
    before = [(t, r) for t, r in rows if int(r["pid"]) == event["pid"]]
    after = [(t, r) for t, r in rows if int(r["pid"]) != event["pid"]]
    assert after, "the killed trial never reported again"
    checkpoint_epoch = int(before[-1][1]["epoch"])
    first_time, first = after[0]
    assert int(first["epoch"]) == checkpoint_epoch + 1  # continued, not restarted from scratch
    epochs = [int(r["epoch"]) for _, r in rows]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 3, epochs
    lost = event["epoch_at_kill"] + 1 - (int(first["epoch"]))  # epochs redone after the restart
    assert lost <= 1
    run = _child_runs(faulty_sweep["uri"])[trial_id]
    assert run.info.status == "FINISHED"
    assert "last_error" in run.data.tags  # why it was restarted
    epoch_s = float(first.get("time_this_iter_s", 0.0))
    recovery = first_time - event["killed_at"]
    print(f"\nFAULT worker SIGKILL (pid {event['pid']}, during epoch "
          f"{event['epoch_at_kill'] + 1} of 3): restarted from the epoch-{checkpoint_epoch} "
          f"checkpoint; completed epochs lost 0, partial epochs redone {lost}; next epoch "
          f"reported {recovery:.1f} s after the kill (that epoch itself took {epoch_s:.1f} s, "
          f"restart overhead ~{max(recovery - epoch_s, 0):.1f} s); trial finished all 3 epochs")


def test_corrupt_checkpoint_fails_the_trial_naming_the_file(faulty_sweep) -> None:
    trial_id, event = faulty_sweep["by_role"]["corrupt"]
    run = _child_runs(faulty_sweep["uri"])[trial_id]
    assert run.info.status == "FAILED"
    error = run.data.tags["error"]
    assert error.startswith("CheckpointError: checkpoint ") and "trial.pt" in error
    assert "\n" not in error
    assert trial_id in error  # the path names the trial's own checkpoint
    console = [line for line in faulty_sweep["log"].splitlines()
               if line.startswith(f"skillearn: trial {trial_id} failed: CheckpointError")]
    assert console, faulty_sweep["log"][-3000:]
    print(f"\nFAULT corrupt checkpoint: trial {trial_id} FAILED after Tune's 2 retries; "
          f"MLflow tag error = {error[:160]!r}; console: {console[0][:160]!r}")


def test_non_finite_loss_errors_the_trial_and_the_sweep_goes_on(faulty_sweep) -> None:
    trial_id, _ = faulty_sweep["by_role"]["nan"]
    runs = _child_runs(faulty_sweep["uri"])
    run = runs[trial_id]
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("NonFiniteError: training loss became nan")
    assert faulty_sweep["code"] == 0  # the sweep finished and reported its best trial
    assert sum(r.info.status == "FINISHED" for r in runs.values()) == 1
    print(f"\nFAULT NaN loss: trial {trial_id} FAILED with MLflow tag error = "
          f"{run.data.tags['error'][:120]!r}; the sweep went on and finished "
          f"({faulty_sweep['took']:.0f} s for the three-fault sweep)")


# --- driver kill and resume -----------------------------------------------------------------


def _study(sweep_dir: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def test_killed_driver_resumes_keeping_trials_and_tpe_history(tmp_path: Path) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = tmp_path / "runs"
    args = ["sweep", "darts", "--samples", "3", "--concurrency", "1", "--no-asha",
            "--epochs", "1", "--set", "steps_per_epoch=2", *FAST,
            "--storage", str(storage), "--tracking-uri", uri, "--name", "killed"]
    with sweep_subprocess(args, tmp_path / "driver.log") as proc:
        finished = wait_for_finished_trials(uri, storage / "killed", proc,
                                            tmp_path / "driver.log")
        time.sleep(3.0)  # Tune snapshots its state every second (TUNE_GLOBAL_CHECKPOINT_S)
        killed_at = time.perf_counter()
    complete = optuna.trial.TrialState.COMPLETE
    before = {t.number: t for t in _study(storage / "killed", "killed").trials}
    done_before = {n: t for n, t in before.items() if t.state == complete}
    assert len(done_before) >= 2  # the TPE history of the first part is in the database

    code = main(["sweep", "darts", "--resume", "--name", "killed", "--storage", str(storage),
                 "--tracking-uri", uri])
    recovered = time.perf_counter() - killed_at
    assert code == 0
    runs = _child_runs(uri)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs.values())
    client = MlflowClient(uri)
    for trial_id, run_id in finished.items():
        assert runs[trial_id].info.run_id == run_id  # the same run, not a duplicate
        steps = [m.step for m in client.get_metric_history(run_id, "val_acc")]
        assert steps == [1], f"finished trial {trial_id} was re-run: {steps}"
    after = {t.number: t for t in _study(storage / "killed", "killed").trials}
    for number, trial in done_before.items():  # kept, unchanged
        assert after[number].state == complete
        assert after[number].params == trial.params and after[number].value == trial.value
    done_after = [t for t in after.values() if t.state == complete]
    assert len(done_after) == 3
    stale = [t.number for t in after.values() if t.state == optuna.trial.TrialState.RUNNING]
    print(f"\nFAULT driver SIGKILL: {len(finished)} finished trials kept (same MLflow runs, "
          f"no epoch re-run), Optuna study kept its {len(done_before)} completed trials and "
          f"resumed to {len(done_after)}; stale RUNNING Optuna trials: {stale or 'none'}; "
          f"resume finished the sweep {recovered:.1f} s after the kill")


# --- tracking server outage -----------------------------------------------------------------


def test_tracking_server_outage_loses_no_metrics(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from skillearn.platform.tracking import BACKLOG_FILE

    backend = os.environ.get(POSTGRES_ENV) or f"sqlite:///{tmp_path}/server.db"
    experiment = f"outage-{uuid.uuid4().hex[:8]}"
    sweep_dir = tmp_path / "runs" / "outage"
    outage_s = 30.0
    figures: dict[str, float] = {"peak_backlog": 0}

    def outage(server) -> None:
        while not list(sweep_dir.glob("trial_*/result.json")):
            if stop.wait(0.2):
                return
        os.killpg(server.pid, signal.SIGSTOP)
        figures["stopped"] = time.perf_counter()
        while time.perf_counter() - figures["stopped"] < outage_s:
            backlog = sweep_dir / BACKLOG_FILE
            try:
                saved = json.loads(backlog.read_text())
                count = sum(len(ops) for ops in saved["pending"].values())
                figures["peak_backlog"] = max(figures["peak_backlog"], count)
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        os.killpg(server.pid, signal.SIGCONT)
        figures["resumed"] = time.perf_counter()
        # caught up: every epoch the trials had reported when the server came back is in MLflow
        reported = sum(len(_results(d)) for d in sweep_dir.glob("trial_*"))
        client = MlflowClient(server_url)
        while not stop.is_set() and time.perf_counter() - figures["resumed"] < 120:
            try:
                exp = client.get_experiment_by_name(experiment)
                runs = client.search_runs([exp.experiment_id],
                                          "tags.`skillearn.role` = 'trial'") if exp else []
                logged = sum(len(client.get_metric_history(r.info.run_id, "val_acc"))
                             for r in runs)
            except Exception:
                logged = -1
            if logged >= reported:
                figures["drained"] = time.perf_counter()
                return
            time.sleep(0.5)

    stop = threading.Event()
    server_url = ""
    with mlflow_server(backend, tmp_path / "artifacts", tmp_path / "server.log") as (url, server):
        server_url = url
        worker = threading.Thread(target=outage, args=(server,), daemon=True)
        worker.start()
        started = time.perf_counter()
        try:
            code = main(["sweep", "darts", "--samples", "2", "--concurrency", "2", "--no-asha",
                         "--epochs", "3", "--set", "steps_per_epoch=4", *FAST,
                         "--storage", str(tmp_path / "runs"), "--name", "outage",
                         "--tracking-uri", url, "--experiment", experiment])
            ended = time.perf_counter()
            worker.join(timeout=120)
        finally:
            stop.set()
            os.killpg(server.pid, signal.SIGCONT)
        assert code == 0
        assert "stopped" in figures and "resumed" in figures, "the outage never happened"
        assert not (sweep_dir / BACKLOG_FILE).exists()
        client = MlflowClient(url)
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id])
        children = [r for r in runs if r.data.tags.get("skillearn.role") == "trial"]
        parent = [r for r in runs if r.data.tags.get("skillearn.role") == "sweep"]
        assert len(parent) == 1 and parent[0].info.status == "FINISHED"
        assert len(children) == 2
        for run in children:
            assert run.info.status == "FINISHED"
            for metric in ("val_acc", "train_loss", "test_acc"):
                steps = sorted({m.step for m in client.get_metric_history(run.info.run_id,
                                                                         metric)})
                assert steps == [1, 2, 3], (metric, steps)
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"genotype.json", "cell_normal.png", "alpha_evolution.png"} <= names
    kind = "PostgreSQL" if os.environ.get(POSTGRES_ENV) else "SQLite"
    during = "during" if ended < figures["resumed"] else "after"
    print(f"\nFAULT tracking server ({kind}-backed) stopped for {outage_s:.0f} s mid-sweep: "
          f"sweep exit 0 in {ended - started:.0f} s, ended {during} the outage; peak backlog "
          f"{figures['peak_backlog']:.0f} writes; MLflow held every epoch reported so far "
          f"{figures.get('drained', ended) - figures['resumed']:.1f} s after the server came "
          "back; lost: nothing (2 trials x 3 epochs of metrics, artifacts, statuses present)")
