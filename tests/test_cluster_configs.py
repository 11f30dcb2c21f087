"""The cluster configs in clusters/: Ray launcher YAMLs against Ray's own JSON schema, the KubeRay
manifest by structure, and the MLflow server set-up (PostgreSQL, object store, basic auth)."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
LAUNCHERS = {"aws": CLUSTERS / "aws.yaml", "gcp": CLUSTERS / "gcp.yaml"}


def _ray_schema() -> dict:
    ray = pytest.importorskip("ray")
    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_launcher_config_matches_ray_schema(cloud: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    config = yaml.safe_load(LAUNCHERS[cloud].read_text())
    jsonschema.validate(config, _ray_schema())
    assert config["provider"]["type"] == cloud


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_launcher_config_has_gpu_workers_setup_and_tracking(cloud: str) -> None:
    config = yaml.safe_load(LAUNCHERS[cloud].read_text())
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    gpu = [t for t in workers if t["resources"].get("GPU", 0) >= 1]
    assert gpu, "no GPU worker node type"
    for node_type in gpu:
        assert 0 <= node_type["min_workers"] < node_type["max_workers"] <= config["max_workers"]
    setup = "\n".join(config["setup_commands"])
    assert "pip install" in setup and "~/skillearn" in setup
    assert config["file_mounts"]["~/skillearn"] == "."
    assert "MLFLOW_TRACKING_URI" in setup
    start = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in start  # token authentication stays on
    assert "--dashboard-host=0.0.0.0" not in start
    # the MLflow password is read from a mounted file, never written into the config
    assert "MLFLOW_TRACKING_PASSWORD=$(cat ~/.mlflow_password)" in setup


def _kuberay() -> dict:
    return yaml.safe_load((CLUSTERS / "kuberay.yaml").read_text())


def test_kuberay_manifest_structure() -> None:
    manifest = _kuberay()
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == "RayCluster"
    spec = manifest["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["template"]["spec"]["containers"][0]["image"]
    assert head["rayStartParams"].get("dashboard-host") == "127.0.0.1"
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] > group["minReplicas"]
        worker = group["template"]["spec"]["containers"][0]
        assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    for container in (head["template"]["spec"]["containers"][0], worker):
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http")
        assert "secretKeyRef" in env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]


def _kubectl_cluster() -> bool:
    if shutil.which("kubectl") is None:
        return False
    probe = subprocess.run(["kubectl", "version", "--request-timeout=3s"],
                           capture_output=True, text=True, timeout=20)
    return probe.returncode == 0 and "Server Version" in probe.stdout


def test_kuberay_manifest_kubectl_dry_run() -> None:
    # kubectl needs an API server to resolve the RayCluster CRD even for --dry-run=client.
    if not _kubectl_cluster():
        pytest.skip("kubectl or a reachable Kubernetes API server (with the KubeRay CRDs) is "
                    "absent; the manifest is checked by structure instead")
    result = subprocess.run(
        ["kubectl", "apply", "--dry-run=client", "-f", str(CLUSTERS / "kuberay.yaml")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_mlflow_server_setup() -> None:
    script = (CLUSTERS / "mlflow" / "start-server.sh").read_text()
    assert "--app-name basic-auth" in script
    assert "postgresql://" in script and "--artifacts-destination" in script
    assert "s3://" in script and "gs://" in script
    assert "--host 0.0.0.0" not in script
    auth = configparser.ConfigParser()
    auth.read(CLUSTERS / "mlflow" / "basic_auth.ini")
    assert auth["mlflow"]["authorization_function"].endswith("authenticate_request_basic_auth")
    assert "admin_password" not in auth["mlflow"]  # passwords come from the environment
    compose = yaml.safe_load((CLUSTERS / "mlflow" / "compose.yaml").read_text())
    assert {"postgres", "mlflow"} <= set(compose["services"])
    assert compose["services"]["mlflow"]["ports"] == ["127.0.0.1:5000:5000"]
    if shutil.which("bash"):
        check = subprocess.run(["bash", "-n", str(CLUSTERS / "mlflow" / "start-server.sh")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
