"""`skillearn export`: a retrained network as a module that runs with torch alone.

The export is loaded in a fresh interpreter in which skillearn cannot be imported; its logits
must equal those of skillearn's network with the run's weights, and its test accuracy the one
the retrain run logged for that seed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from skillearn.platform.cli import main
from tests.test_retrain_cli import GENOTYPE

# Run by a fresh `python -I` in the export folder: skillearn is blocked (the venv installs it
# editable, so -I alone would not hide it), the module and the weights are imported by path.
FRESH_PROCESS = r"""
import importlib.abc, json, sys

class NoSkillearn(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "skillearn" or name.startswith("skillearn."):
            raise ModuleNotFoundError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, NoSkillearn())
try:
    import skillearn
    raise SystemExit("skillearn was importable")
except ModuleNotFoundError:
    pass
sys.path.insert(0, ".")
import torch
import network

net = network.load_network()
data = torch.load(sys.argv[1], weights_only=True)
with torch.no_grad():
    logits = net(data["x"])
print(json.dumps({
    "max_gap": float((logits - data["expected"]).abs().max()),
    "accuracy": float((logits.argmax(1) == data["y"]).float().mean()),
    "skillearn_loaded": any(m.split(".")[0] == "skillearn" for m in sys.modules),
}))
"""


def _retrain(tmp_path: Path, uri: str) -> str:
    path = tmp_path / "genotype.json"
    path.write_text(GENOTYPE.to_json())
    assert main(["retrain", "--genotype", str(path), "--seeds", "0", "1", "--epochs", "1",
                 "--channels", "8", "--cells", "3", "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("skillearn").experiment_id],
                                "tags.`skillearn.kind` = 'retrain'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    return run.info.run_id


def test_export_runs_without_skillearn_and_reproduces_the_logits(tmp_path: Path,
                                                                capsys) -> None:
    from skillearn.data import data_spec, load_data
    from skillearn.platform.retrain_command import retrain_settings
    from skillearn.search_spaces.darts import DiscreteNetwork

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = _retrain(tmp_path, uri)
    out = tmp_path / "exported"
    assert main(["export", "--run-id", run_id, "--out", str(out), "--seed", "1",
                 "--tracking-uri", uri]) == 0
    printed = capsys.readouterr().out
    assert f"exported run {run_id} (seed 1)" in printed
    assert {"network.py", "network.pt", "export.json"} <= {p.name for p in out.iterdir()}
    assert (tmp_path / "mlartifacts").is_dir()  # the weights sit beside the database
    info = json.loads((out / "export.json").read_text())
    assert info["seed"] == 1 and info["input_shape"] == [1, 8, 8] and info["dataset"] == "digits"

    # skillearn's own network with the weights the retrain run kept for seed 1
    client = MlflowClient(uri)
    weights = client.download_artifacts(run_id, "network/seed_1.pt", str(tmp_path))
    reference = DiscreteNetwork(GENOTYPE, channels=8, cells=3, num_classes=10, in_channels=1)
    reference.load_state_dict(torch.load(weights, weights_only=True))
    data = load_data(data_spec(retrain_settings({}, {})))  # the retrain's data: the defaults
    with torch.no_grad():
        expected = reference.eval()(data.test.x)
    torch.save({"x": data.test.x, "y": data.test.y, "expected": expected}, tmp_path / "in.pt")

    done = subprocess.run([sys.executable, "-I", "-c", FRESH_PROCESS, str(tmp_path / "in.pt")],
                          cwd=out, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert not result["skillearn_loaded"]
    assert result["max_gap"] < 1e-4
    logged = {m.step: m.value for m in client.get_metric_history(run_id,
                                                                  "retrain_test_acc_seed")}
    assert result["accuracy"] == pytest.approx(logged[1], abs=1e-6)


def test_export_from_the_trial_finds_its_retrain_run(tmp_path: Path, capsys) -> None:
    """`--run-id` of a trial: the weights of the latest retrain run of that trial."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    retrain_id = _retrain(tmp_path, uri)
    client = MlflowClient(uri)
    trial = client.create_run(client.get_experiment_by_name("skillearn").experiment_id,
                              tags={"genotype": GENOTYPE.to_json()}).info.run_id
    client.set_tag(retrain_id, "skillearn.source", trial)
    assert main(["export", "--run-id", trial, "--out", str(tmp_path / "e"),
                 "--tracking-uri", uri]) == 0
    assert f"exported run {retrain_id} (seed 0)" in capsys.readouterr().out


def _refused(argv: list[str], capsys) -> str:
    capsys.readouterr()  # MLflow's own set-up lines from the test's client
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("skillearn: error: "), err
    return err[0]


def test_bad_requests_are_one_line_before_any_work(tmp_path: Path, capsys,
                                                   monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("skillearn",
                                          artifact_location=(tmp_path / "mlartifacts").as_uri())
    plain = client.create_run(experiment).info.run_id
    trial = client.create_run(experiment, tags={"genotype": GENOTYPE.to_json()}).info.run_id

    assert "no MLflow run 'f00d'" in _refused(
        ["export", "--run-id", "f00d", "--tracking-uri", uri], capsys)
    assert "has no genotype" in _refused(
        ["export", "--run-id", plain, "--tracking-uri", uri], capsys)
    assert "has no retrained weights" in _refused(
        ["export", "--run-id", trial, "--tracking-uri", uri], capsys)
    assert "is not an MLflow run id" in _refused(
        ["export", "--run-id", "x' or '1'='1", "--tracking-uri", uri], capsys)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    other_store = tmp_path / "untouched" / "mlflow.db"
    assert "is not a directory" in _refused(
        ["export", "--run-id", trial, "--out", str(blocker / "sub"),
         "--tracking-uri", f"sqlite:///{other_store}"], capsys)
    assert not other_store.parent.exists()  # refused before the store was opened
    assert "--seed 7" in _refused(
        ["export", "--run-id", _retrain(tmp_path, uri), "--seed", "7", "--out",
         str(tmp_path / "e"), "--tracking-uri", uri], capsys)
    assert not list(tmp_path.glob("export-*")) and not (tmp_path / "e").exists()


def test_onnx_is_written_or_skipped_with_a_reason(tmp_path: Path, capsys) -> None:
    import importlib.util

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = _retrain(tmp_path, uri)
    out = tmp_path / "e"
    assert main(["export", "--run-id", run_id, "--out", str(out), "--tracking-uri", uri]) == 0
    info = json.loads((out / "export.json").read_text())
    if importlib.util.find_spec("onnx") is None:
        assert not (out / "network.onnx").exists()
        assert "onnx package is not installed" in info["onnx"]
        assert "ONNX skipped" in capsys.readouterr().out
    else:  # the file torch wrote, evaluated by onnx's reference runtime, at another batch size
        import onnx
        from onnx.reference import ReferenceEvaluator

        assert info["onnx"] == "written", info["onnx"]
        model = onnx.load(str(out / "network.onnx"))
        onnx.checker.check_model(model)
        sys.path.insert(0, str(out))
        try:
            import network  # the generated module
        finally:
            sys.path.remove(str(out))
            sys.modules.pop("network", None)
        x = torch.randn(3, 1, 8, 8)
        (logits,) = ReferenceEvaluator(model).run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected = network.load_network(out / "network.pt")(x).numpy()
        assert abs(logits - expected).max() < 1e-4


def test_weights_that_do_not_fit_the_described_network_are_refused(tmp_path: Path,
                                                                   capsys) -> None:
    """A network.json claiming another width than the weights have: one line, nothing written."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    real = _retrain(tmp_path, uri)
    client = MlflowClient(uri)
    folder = Path(client.download_artifacts(real, "network", str(tmp_path / "copy")))
    record = json.loads((folder / "network.json").read_text())
    (folder / "network.json").write_text(json.dumps({**record, "channels": 16}))
    run = client.create_run(client.get_experiment_by_name("skillearn").experiment_id,
                            tags={"skillearn.kind": "retrain"}).info.run_id
    client.log_artifacts(run, str(folder), "network")
    out = tmp_path / "e"
    assert "the weights do not fit the network" in _refused(
        ["export", "--run-id", run, "--out", str(out), "--tracking-uri", uri], capsys)
    assert not out.exists()
