"""Rehearse cluster mode on one machine: a two-node local Ray cluster and a PostgreSQL-backed
MLflow tracking server, a small darts sweep with --address and --tracking-uri, then where each
trial ran and what reached MLflow.

    python clusters/rehearse_local.py postgresql://user:password@127.0.0.1:5432/db

(`.ci/run` sets such a database up as SKILLEARN_TEST_POSTGRES.)
"""
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import mlflow_server
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from skillearn.platform.cli import main

pg = sys.argv[1]
tmp = Path(tempfile.mkdtemp(prefix="skillearn-rehearsal-"))
cluster = Cluster(initialize_head=True, connect=False,
                  head_node_args={"num_cpus": 1, "include_dashboard": False})
try:
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    with mlflow_server(pg, tmp / "artifacts", tmp / "server.log") as (url, _):
        started = time.perf_counter()
        code = main(["sweep", "darts", "--samples", "4", "--concurrency", "2", "--epochs", "2",
                     "--set", "steps_per_epoch=5", "--address", cluster.address,
                     "--storage", str(tmp / "runs"), "--tracking-uri", url,
                     "--experiment", f"combo-{int(time.time())}",
                     "--name", f"combo-{int(time.time())}"])
        print("exit", code, "in", round(time.perf_counter() - started, 1), "s")
        client = MlflowClient(url)
        exps = [e for e in client.search_experiments() if e.name.startswith("combo-")]
        exp = max(exps, key=lambda e: e.creation_time)
        runs = client.search_runs([exp.experiment_id], "tags.`skillearn.role` = 'trial'")
        for r in runs:
            arts = [a.path for a in client.list_artifacts(r.info.run_id)]
            print(r.data.tags["trial_id"], r.info.status, r.data.tags.get("node_id", "")[:8],
                  round(r.data.metrics.get("val_acc", -1), 3), "genotype.json" in arts,
                  "cell_normal.png" in arts)
        print("nodes used:", len({r.data.tags["node_id"] for r in runs}))
finally:
    cluster.shutdown()
