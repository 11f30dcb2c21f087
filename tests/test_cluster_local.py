"""A real multi-node Ray cluster on this machine: a head and a second node (one CPU each), the
sweep driven from here with `--address` and a local SQLite MLflow store; the trials must run on
both nodes, and each trial's MLflow run is tagged with its node.

Slow (about a minute). Everything is shut down in a `finally`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import TINY

from skillearn.platform.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_node_cluster():
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        print(f"\ntwo-node cluster at {cluster.address} up in "
              f"{time.perf_counter() - started:.1f} s")
        yield cluster
    finally:
        cluster.shutdown()


def test_sweep_runs_trials_on_both_nodes(two_node_cluster, tmp_path: Path) -> None:
    import ray
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    started = time.perf_counter()
    code = main(["sweep", "darts", "--samples", "2", "--concurrency", "2", "--no-asha",
                 "--address", two_node_cluster.address, "--storage", str(tmp_path / "runs"),
                 "--tracking-uri", uri, "--name", "two-nodes", *TINY])
    assert code == 0
    assert not ray.is_initialized()  # the driver disconnected; the cluster is still up
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("skillearn")
    runs = client.search_runs([exp.experiment_id], "tags.`skillearn.role` = 'trial'")
    assert len(runs) == 2
    nodes = {run.data.tags["node_id"] for run in runs}
    cluster_nodes = {node.node_id for node in two_node_cluster.list_all_nodes()}
    assert nodes == cluster_nodes, f"trials ran on {nodes}, the cluster has {cluster_nodes}"
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["node_ip"]
        assert "val_acc" in run.data.metrics
    print(f"2 trials on 2 nodes ({', '.join(sorted(n[:8] for n in nodes))}) in "
          f"{time.perf_counter() - started:.1f} s")
