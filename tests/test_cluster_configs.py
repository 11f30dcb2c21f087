"""The cluster configs in clusters/: Ray launcher YAMLs against Ray's own JSON schema, the KubeRay
manifest by structure, and the MLflow server set-up (PostgreSQL, object store, basic auth)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import stat
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
    # the MLflow password is read from a mounted file, never written into the config; the file
    # is private on the nodes, and the tracking server is reached over TLS only
    assert "MLFLOW_TRACKING_PASSWORD=$(cat ~/.mlflow_password)" in setup
    assert "chmod 600 ~/.mlflow_password" in setup
    assert "MLFLOW_TRACKING_URI=https://" in setup and "MLFLOW_TRACKING_URI=http://" not in setup


def _kuberay_documents() -> dict[str, dict]:
    docs = yaml.safe_load_all((CLUSTERS / "kuberay.yaml").read_text())
    return {doc["kind"]: doc for doc in docs}


def _kuberay() -> dict:
    return _kuberay_documents()["RayCluster"]


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
        assert env["MLFLOW_TRACKING_URI"]["value"].startswith("https://")  # basic auth over TLS
        assert "secretKeyRef" in env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]
        # a pinned image: a version tag or a digest, never :latest or no tag at all
        image = container["image"]
        assert "@sha256:" in image or re.search(r":\d+(\.\d+)*$", image), image


def test_kuberay_network_policy_admits_only_the_clusters_own_pods() -> None:
    docs = _kuberay_documents()
    policy = docs["NetworkPolicy"]
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    spec = policy["spec"]
    ray_pods = {"ray.io/cluster": docs["RayCluster"]["metadata"]["name"]}
    assert spec["podSelector"]["matchLabels"] == ray_pods
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    # ingress: from this cluster's pods only (no ipBlock, no namespace-wide rule)
    for rule in spec["ingress"]:
        assert [peer["podSelector"]["matchLabels"] for peer in rule["from"]] == [ray_pods]
    # egress: this cluster's pods, DNS, and HTTPS; no other port is open
    ports = {(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule.get("ports", [])}
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 443)}
    unrestricted = [rule for rule in spec["egress"] if "ports" not in rule]
    assert all(rule["to"] == [{"podSelector": {"matchLabels": ray_pods}}] for rule in unrestricted)


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
    assert {"postgres", "mlflow", "tls"} <= set(compose["services"])
    assert compose["services"]["mlflow"]["ports"] == ["127.0.0.1:5000:5000"]
    if shutil.which("bash"):
        check = subprocess.run(["bash", "-n", str(CLUSTERS / "mlflow" / "start-server.sh")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_compose_pins_every_image_and_installs_nothing_at_start() -> None:
    compose = yaml.safe_load((CLUSTERS / "mlflow" / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert "@sha256:" in image or re.fullmatch(r"v?\d+\.\d+(\.\d+)?(-[\w.]+)?", tag), \
            (name, image)
        command = " ".join(service.get("command") or []) if isinstance(
            service.get("command"), list) else str(service.get("command") or "")
        assert "pip install" not in command and "apt-get" not in command, name
    # the server image is built once, from a Dockerfile whose every package has a version
    assert compose["services"]["mlflow"]["build"] == "."
    dockerfile = (CLUSTERS / "mlflow" / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert re.search(r":v?\d+\.\d+\.\d+$", base), base
    run = next(line for line in dockerfile.replace("\\\n", " ").splitlines()
               if "pip install" in line)
    packages = [w for w in run.split("pip install", 1)[1].split() if not w.startswith("-")]
    assert packages and all(re.fullmatch(r"[\w.\-\[\]]+==[\w.]+", p) for p in packages), packages


def test_compose_puts_basic_auth_behind_tls() -> None:
    compose = yaml.safe_load((CLUSTERS / "mlflow" / "compose.yaml").read_text())
    tls = compose["services"]["tls"]
    assert tls["image"].startswith("caddy:")
    assert any(str(p).endswith(":443") for p in tls["ports"])
    # by default published on 127.0.0.1 only (the private address is opted into)
    assert all(str(p).startswith("${MLFLOW_TLS_BIND:-127.0.0.1}") for p in tls["ports"])
    caddyfile = (CLUSTERS / "mlflow" / "Caddyfile").read_text()
    assert re.search(r"^https://", caddyfile, re.M) and "reverse_proxy mlflow:5000" in caddyfile
    assert "tls " in caddyfile


def _run_start_script(tmp_path: Path, env: dict[str, str]) -> dict:
    """start-server.sh with a stand-in `mlflow` that records what the real one would get."""
    record = tmp_path / "record"
    fake = tmp_path / "mlflow"
    fake.write_text(f"""#!/usr/bin/env bash
set -eu
out={record}
mkdir -p "$out"
printf '%s\\n' "$@" > "$out/argv"
env > "$out/env"
cp "$PGPASSFILE" "$out/pgpass"; stat -c %a "$PGPASSFILE" > "$out/pgpass_mode"
ini="$MLFLOW_AUTH_CONFIG_PATH"
cp "$ini" "$out/auth.ini"; stat -c %a "$ini" > "$out/ini_mode"
echo "$PGPASSFILE $MLFLOW_AUTH_CONFIG_PATH" > "$out/paths"
""")
    fake.chmod(0o755)
    base = {"PATH": os.environ["PATH"], "MLFLOW_BIN": str(fake), "MLFLOW_ARTIFACTS": "s3://b/m",
            "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(CLUSTERS / "mlflow" / "start-server.sh")],
                            env={**base, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    files = {p.name: p.read_text() for p in record.iterdir()}
    files["stdout"] = result.stdout + result.stderr
    return files


NASTY_PASSWORD = "p&#@/?:x\\y'\"$(id) %20"


def test_start_script_keeps_the_database_password_off_command_lines(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    got = _run_start_script(tmp_path, {"MLFLOW_DB_PASSWORD": NASTY_PASSWORD,
                                       "MLFLOW_DB_HOST": "db.internal"})
    for place in ("argv", "env", "auth.ini", "stdout"):
        assert NASTY_PASSWORD not in got[place], place
        assert "p&#@" not in got[place], place
    assert "postgresql://mlflow@db.internal:5432/mlflow" in got["argv"].splitlines()
    assert "database_uri = postgresql://mlflow@db.internal:5432/mlflow_auth" in got["auth.ini"]
    # the pgpass line, with `\` and `:` escaped as libpq wants, in files only this user reads
    escaped = NASTY_PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
    assert got["pgpass"] == f"db.internal:5432:*:mlflow:{escaped}\n"
    assert got["pgpass_mode"].strip() == "600" and got["ini_mode"].strip() == "600"
    for path in got["paths"].split():  # removed when the server stops
        assert not Path(path).exists()


def test_start_script_pgpass_really_logs_in(tmp_path: Path) -> None:
    """With SKILLEARN_TEST_POSTGRES: libpq reads the pgpass file the script writes (its escaping
    of the password is right), with the URI the server gets."""
    url = os.environ.get("SKILLEARN_TEST_POSTGRES")
    if not url or shutil.which("bash") is None:
        pytest.skip("SKILLEARN_TEST_POSTGRES is not set")
    psycopg = pytest.importorskip("psycopg")
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    got = _run_start_script(tmp_path, {
        "MLFLOW_DB_PASSWORD": urllib.parse.unquote(parts.password or ""),
        "MLFLOW_DB_HOST": parts.hostname, "MLFLOW_DB_PORT": str(parts.port or 5432),
        "MLFLOW_DB_USER": urllib.parse.unquote(parts.username or ""),
        "MLFLOW_DB_NAME": parts.path.lstrip("/")})
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(got["pgpass"])
    pgpass.chmod(stat.S_IRUSR | stat.S_IWUSR)
    backend = next(a for a in got["argv"].splitlines() if a.startswith("postgresql://"))
    with psycopg.connect(backend, passfile=str(pgpass), connect_timeout=5) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def _kuberay_start_resources(params: dict) -> dict:
    """KubeRay's rayStartParams `resources` value: a JSON object, itself quoted for the shell."""
    raw = params.get("resources", "{}")
    return json.loads(json.loads(raw) if raw.startswith('"') else raw)


def test_cloud_configs_agree_with_the_autoscaling_rehearsal() -> None:
    """aws.yaml, gcp.yaml and kuberay.yaml declare what tests/test_autoscaling.py rehearses: a
    head without trial resources, workers carrying the rehearsal's resource (one each) that
    scale from 0, the same idle timeout and worker bound, and bucket storage in their commands."""
    from autoscaling_cluster import TRIAL_RESOURCE

    seen = {}
    for cloud, path in LAUNCHERS.items():
        config = yaml.safe_load(path.read_text())
        types = config["available_node_types"]
        head = types[config["head_node_type"]]["resources"]
        workers = [t for name, t in types.items() if name != config["head_node_type"]]
        assert head.get("CPU") == 0 and TRIAL_RESOURCE not in head, cloud
        assert [w["resources"].get(TRIAL_RESOURCE) for w in workers] == [1], cloud
        assert [w["min_workers"] for w in workers] == [0], cloud
        seen[cloud] = (config["idle_timeout_minutes"] * 60, workers[0]["max_workers"])
        text = path.read_text()
        assert f"--trial-resource {TRIAL_RESOURCE}=1" in text
        assert re.search(r"--storage (s3|gs)://", text), cloud
    spec = _kuberay()["spec"]
    assert _kuberay_start_resources(spec["headGroupSpec"]["rayStartParams"]) == {}
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = spec["workerGroupSpecs"]
    assert _kuberay_start_resources(group["rayStartParams"]) == {TRIAL_RESOURCE: 1}
    assert group["minReplicas"] == 0
    seen["kuberay"] = (spec["autoscalerOptions"]["idleTimeoutSeconds"], group["maxReplicas"])
    kuberay_text = (CLUSTERS / "kuberay.yaml").read_text()
    assert f"--trial-resource {TRIAL_RESOURCE}=1" in kuberay_text
    assert re.search(r"--storage (s3|gs)://", kuberay_text)
    assert len(set(seen.values())) == 1, seen  # same idle timeout (s) and worker bound
