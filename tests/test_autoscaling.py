"""Autoscaling and preemption, rehearsed on one machine with Ray's fake multi-node provider.

The head has no trial resources; the `accel_worker` type (min 0, max 3) carries `accel`, which
every trial asks for (`--trial-resource accel=1`), as on clusters/aws.yaml, gcp.yaml and
kuberay.yaml. One sweep (3 darts trials at once) must make the autoscaler launch workers and run
its trials on them (node ids in MLflow); one worker node is removed mid-trial (every process of
that node killed, as a spot preemption does) and its trial resumes from its last checkpoint on
another node; the workers go after the idle timeout. The figures and the node-count plot land on
the sweep's MLflow parent run, as `clusters/rehearse_autoscaling.py` does.

Cost: one cluster start (~10 s) and one sweep with its scale-down; measured 137-152 s on the
2-core box at a load average of 13-18 from other jobs (less on a quiet box); the fixture prints
its timings.
"""

from __future__ import annotations

import json
import time

import pytest
from autoscaling_cluster import fake_autoscaling_cluster, rehearse

pytestmark = pytest.mark.slow
MAX_WORKERS = 3
IDLE_TIMEOUT_S = 5.0
TRIALS = 3
EPOCHS = 3
# darts (~0.3-1 s a step here): the epochs after the first checkpoint outlast the moments the
# preemption needs to see it; --no-asha so every trial runs to its last epoch
SWEEP = ["darts", "--samples", str(TRIALS), "--concurrency", str(TRIALS), "--no-asha",
         "--epochs", str(EPOCHS), "--set", "steps_per_epoch=4", "--set", "fd_gap_every=0"]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    pytest.importorskip("ray")
    workdir = tmp_path_factory.mktemp("autoscaling")
    started = time.perf_counter()
    with fake_autoscaling_cluster(max_workers=MAX_WORKERS, idle_timeout_s=IDLE_TIMEOUT_S) as c:
        up = time.perf_counter() - started
        assert c.worker_nodes() == []  # min_workers 0: nothing runs before the sweep asks
        result = rehearse(c, workdir, SWEEP, name="rehearsal", preempt=True)
        print(f"\nhead up in {up:.1f} s; first worker {result.first_worker_s:.1f} s, sweep done "
              f"{result.sweep_done_s:.1f} s, peak {result.peak_workers} workers, all released "
              f"{result.released_s:.1f} s after; preempted: {result.preempted}")
        yield result


def _trial_runs(result) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(result.tracking_uri)
    exp = client.get_experiment_by_name(result.experiment)
    return client.search_runs([exp.experiment_id], "tags.`skillearn.role` = 'trial'")


def test_sweep_makes_the_autoscaler_launch_and_release_workers(rehearsal) -> None:
    assert rehearsal.exit_code == 0
    assert rehearsal.first_worker_s is not None
    assert 2 <= rehearsal.peak_workers <= MAX_WORKERS, rehearsal.samples
    assert rehearsal.samples[-1][1] == 0  # released after the idle timeout
    runs = _trial_runs(rehearsal)
    assert len(runs) == TRIALS and {r.info.status for r in runs} == {"FINISHED"}
    nodes = {r.data.tags["node_id"] for r in runs}
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    assert FAKE_HEAD_NODE_ID not in nodes  # the head has no accel: every trial ran on a worker
    assert len(nodes) >= 2, f"{TRIALS} trials at once ran on {len(nodes)} worker(s)"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(rehearsal.tracking_uri)
    parent = client.get_run(rehearsal.parent_run_id)
    assert "node_count.png" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert parent.data.metrics["peak_workers"] == rehearsal.peak_workers
    assert parent.data.params["trial_resources"] == "accel=1"


def test_preempted_trial_resumes_from_its_checkpoint_on_another_node(rehearsal) -> None:
    import optuna

    removed = rehearsal.preempted
    assert removed, "no trial reached its first checkpoint"
    assert removed["processes"] > 0
    # the preempted trial reported from the removed node, then from another one, continuing
    # after its checkpointed epoch (not from epoch 1 again)
    rows = [json.loads(line) for line in
            (rehearsal.sweep_dir / removed["trial"] / "result.json").read_text().splitlines()]
    before = [r for r in rows if r["node_id"] == removed["node"]]
    after = [r for r in rows if r["node_id"] != removed["node"]]
    assert before and after, rows
    assert after[0]["epoch"] == before[-1]["epoch"] + 1 and rows[-1]["epoch"] == EPOCHS

    runs = _trial_runs(rehearsal)  # nothing lost: every trial FINISHED in MLflow...
    assert len(runs) == TRIALS and {r.info.status for r in runs} == {"FINISHED"}
    resumed = next(r for r in runs if removed["trial"].endswith(r.data.tags["trial_id"]))
    assert resumed.data.tags["node_id"] not in (removed["node"], "")  # where it finished
    study = optuna.load_study(study_name=rehearsal.experiment,  # ...and once in the study
                              storage=f"sqlite:///{rehearsal.sweep_dir / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * TRIALS
    assert sorted(t.number for t in study.trials) == list(range(TRIALS))

