"""Declared artifacts: the vocabulary round-trips through JSON (as it travels in a Tune result),
the driver renders each kind with its registered renderer, a new kind needs no edit of the Tune
callback, and the tracker's parts (write queue, runs) work on their own."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from skillearn.artifacts import (
    ARTIFACT_KINDS,
    ARTIFACTS_KEY,
    ArchitectureWeights,
    Artifact,
    Curve,
    GenotypeArtifact,
    Image,
    Table,
    WeightHistogram,
    WeightTrends,
    artifact_from_dict,
    artifact_kind,
    artifacts_of,
    artifacts_payload,
    find_artifact,
)
from skillearn.platform.renderers import RENDERERS, ArtifactStager, Renderer, register_renderer
from skillearn.search_spaces.darts import DARTS_V2


def _png(width: int = 2, height: int = 2) -> bytes:
    """A real (grey) PNG, built by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


EXAMPLES: list[Artifact] = [
    GenotypeArtifact(DARTS_V2.to_dict()),
    ArchitectureWeights({"alpha_normal": [[0.1, -0.2], [0.3, 0.0]], "alpha_reduce": [[1.0, 0.0]]},
                        ["skip_connect", "none"]),
    ArchitectureWeights({"alpha_reduce": [[0.4, 0.6]]}, ["a", "b"], logits=False, name="probs"),
    Curve("weight_function", [0.0, 1.0], [0.9, 0.2], "loss", "weight", [0.0, 1.0], True),
    WeightHistogram([0.9, 0.1, 0.5], [0, 1, 0]),
    WeightTrends({"r_mean": 1.0, "r_std": 0.1}),
    Table("per_class_acc", ["class", "test_acc"], [[0, 0.5], [1, float("nan")]]),
    Image.from_png("grid", _png()),
]


@pytest.mark.parametrize("artifact", EXAMPLES, ids=lambda a: f"{a.kind}:{a.name}")
def test_every_kind_round_trips_through_json(artifact: Artifact) -> None:
    data = json.loads(json.dumps(artifact.to_dict()))  # what Ray stores and hands back
    assert data["kind"] == artifact.kind
    back = artifact_from_dict(data)
    assert type(back) is type(artifact)
    assert json.dumps(back.to_dict()) == json.dumps(artifact.to_dict())
    assert artifact.kind in RENDERERS, "every built-in kind has a renderer on the driver"


def test_a_result_carries_artifacts_under_one_key() -> None:
    result = {"val_acc": 0.5, ARTIFACTS_KEY: artifacts_payload(EXAMPLES)}
    assert [type(a) for a in artifacts_of(result)] == [type(a) for a in EXAMPLES]
    assert find_artifact(result, ArchitectureWeights, "probs").logits is False
    assert find_artifact(result, ArchitectureWeights).name == "probs"  # the last one
    assert find_artifact({"val_acc": 0.5}, Table) is None
    assert Image.from_png("x", _png()).png() == _png()


def test_malformed_artifacts_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="unknown artifact kind 'hologram'"):
        artifact_from_dict({"kind": "hologram"})
    with pytest.raises(ValueError, match="one value per op"):
        ArchitectureWeights({"alpha_normal": [[0.1, 0.2, 0.3]]}, ["a", "b"])
    with pytest.raises(ValueError, match="x has 2 points, y 1"):
        Curve("c", [0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        Table("t", ["a", "b"], [[1]])
    with pytest.raises(ValueError, match="already GenotypeArtifact"):

        @artifact_kind
        @dataclass(frozen=True)
        class Impostor(Artifact):
            kind: ClassVar[str] = "genotype"
            name: str = "x"


class Stager:
    """An ArtifactStager over a temp folder, recording what it queues for upload."""

    def __init__(self, tmp_path: Path, registry=None) -> None:
        self.queued: list[tuple[str, dict[str, Any]]] = []
        self.count = 0
        self.tmp = tmp_path
        self.stager = ArtifactStager(self._stage, lambda key, op: self.queued.append((key, op)),
                                     registry)

    def _stage(self) -> Path:
        self.count += 1
        folder = self.tmp / f"stage{self.count}"
        folder.mkdir()
        return folder

    def files(self) -> dict[str, Path]:
        """Uploaded path -> staged file, later uploads winning."""
        found = {}
        for _, op in self.queued:
            if op["op"] == "artifacts":
                for file in Path(op["dir"]).iterdir():
                    found[f"{op['path']}/{file.name}" if "path" in op else file.name] = file
        return found


def test_each_built_in_kind_renders_todays_files(tmp_path: Path) -> None:
    stage = Stager(tmp_path)
    for epoch in (1, 2):
        stage.stager.on_result("t1", epoch, {ARTIFACTS_KEY: artifacts_payload(EXAMPLES)})
    stage.stager.on_trial_end("t1")
    files = stage.files()
    assert {"genotype.json", "cell_normal.png", "cell_reduce.png", "alphas/epoch_0001.json",
            "alphas/epoch_0002.json", "alpha_evolution.png", "alpha_evolution_reduce.png",
            "weight_function.png", "weight_histogram.png", "learned_weights.png",
            "per_class_acc.csv", "grid.png"} <= set(files)
    assert {"probs/epoch_0001.json", "probs_alpha_evolution_reduce.png"} <= set(files)
    assert json.loads(files["genotype.json"].read_text()) == DARTS_V2.to_dict()
    record = json.loads(files["alphas/epoch_0002.json"].read_text())
    assert record["epoch"] == 2 and record["ops"] == ["skip_connect", "none"]
    assert files["per_class_acc.csv"].read_text().splitlines() == [
        "class,test_acc", "0,0.5", "1,nan"]
    assert files["grid.png"].read_bytes() == _png()
    tags = [op["tags"] for _, op in stage.queued if op["op"] == "tags"]
    assert tags == [{"genotype": DARTS_V2.to_json()}]  # drawn once: it did not change


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite store for the module (creating its schema takes seconds); tests use their
    own experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def test_a_new_kind_is_one_dataclass_and_one_renderer(tmp_path: Path, mlflow_uri: str) -> None:
    """Registered here, in the test: the Tune callback renders and uploads it unchanged."""

    @artifact_kind
    @dataclass(frozen=True)
    class ParetoFront(Artifact):
        kind: ClassVar[str] = "test_pareto_front"
        points: list[list[float]]
        name: str = "pareto"

    def render(artifact: ParetoFront, ctx) -> None:
        rows = "\n".join(f"{x},{y}" for x, y in artifact.points)
        Path(ctx.folder("fronts"), f"{artifact.name}_{ctx.epoch}.csv").write_text(rows)
        ctx.tags["front_size"] = str(len(artifact.points))

    register_renderer(ParetoFront, render)
    try:
        _track_one_result(tmp_path, mlflow_uri, ParetoFront(points=[[0.1, 0.9], [0.5, 0.5]]))
    finally:
        del ARTIFACT_KINDS[ParetoFront.kind], RENDERERS[ParetoFront.kind]


def _track_one_result(tmp_path: Path, uri: str, artifact: Artifact) -> None:
    from mlflow.tracking import MlflowClient

    from skillearn.platform.tracking import MlflowTracker


    tracker = MlflowTracker(uri, "new-kind", "s", str(tmp_path / "runs" / "s"), flush_timeout_s=5.0)
    trial = SimpleNamespace(trial_id="t1", config={"_skill": "x"}, last_result={},
                            error_file=None)
    tracker.setup()
    tracker.on_trial_start(iteration=0, trials=[trial], trial=trial)
    tracker.on_trial_result(iteration=1, trials=[trial], trial=trial,
                            result={"epoch": 1, "val_acc": 0.5,
                                    ARTIFACTS_KEY: artifacts_payload([artifact])})
    tracker.on_trial_complete(iteration=1, trials=[trial], trial=trial)
    tracker.on_experiment_end(trials=[trial])

    client = MlflowClient(uri)
    run = client.get_run(tracker.runs.child_runs["t1"])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "fronts")] == [
        "fronts/pareto_1.csv"]
    assert run.data.tags["front_size"] == "2" and run.data.metrics["val_acc"] == 0.5


def test_a_failing_or_unknown_artifact_is_a_warning_not_a_stop(tmp_path: Path, caplog) -> None:
    def broken(artifact, ctx) -> None:
        Path(ctx.folder(), "half.txt").write_text("x")
        raise RuntimeError("no ink")

    stage = Stager(tmp_path, registry={"table": Renderer(broken)})
    stage.stager.on_result("t1", 1, {ARTIFACTS_KEY: [
        {"kind": "hologram", "name": "h"}, Table("t", ["a"], [[1]]).to_dict()]})
    assert "unknown artifact kind 'hologram'" in caplog.text and "no ink" in caplog.text
    # what a failed renderer staged is still queued, so the staging folder is cleaned up
    assert [op["op"] for _, op in stage.queued] == ["artifacts"]


# --- the tracker's parts on their own ------------------------------------------------------------


class FakeRuns:
    """A RunWriter that records writes and fails while `down` is set."""

    def __init__(self) -> None:
        self.info: dict[str, dict[str, Any]] = {}
        self.written: list[tuple[str, dict[str, Any]]] = []
        self.down = False

    def resolve(self, key: str) -> str:
        if self.down:
            raise ConnectionError("store is down")
        return f"run-{key}"

    def apply(self, key: str, run_id: str, op: dict[str, Any]) -> None:
        self.written.append((run_id, op))


def test_write_queue_keeps_order_across_an_outage_and_a_restart(tmp_path: Path) -> None:
    from skillearn.platform.mlflow_queue import BACKLOG_FILE, WriteQueue
    from skillearn.platform.mlflow_runs import SWEEP_KEY

    runs = FakeRuns()
    queue = WriteQueue("sqlite:///x.db", "exp", "s", str(tmp_path), runs, flush_timeout_s=0.0)
    runs.down = True
    queue.put("t1", {"op": "metrics", "step": 1})
    queue.put(SWEEP_KEY, {"op": "params"})
    assert not queue.flush()
    assert (tmp_path / BACKLOG_FILE).is_file() and queue.pending_count() == 2
    queue.put("t1", {"op": "metrics", "step": 2})
    assert not queue.flush()  # backing off: not even tried, but persisted
    assert queue.pending_count() == 3 and not queue.pending

    runs.down = False  # a fresh driver (as after a crash) sends the backlog, parent first
    again = WriteQueue("sqlite:///x.db", "exp", "s", str(tmp_path), runs)
    assert again.flush(force=True)
    assert runs.written == [("run-__sweep__", {"op": "params"}),
                            ("run-t1", {"op": "metrics", "step": 1}),
                            ("run-t1", {"op": "metrics", "step": 2})]
    assert again.pending_count() == 0 and not (tmp_path / BACKLOG_FILE).exists()


def test_write_queue_does_not_retry_a_store_that_refuses(tmp_path: Path, capsys) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    from skillearn.platform.mlflow_queue import WriteQueue

    class Refusing(FakeRuns):
        def resolve(self, key: str) -> str:
            raise MlflowException("permission denied", error_code=PERMISSION_DENIED)

    queue = WriteQueue("sqlite:///x.db", "exp", "s", str(tmp_path), Refusing(),
                       flush_timeout_s=30.0)
    queue.put("t1", {"op": "reopen"})
    assert not queue.drain()  # at once, not after 30 s of retries
    assert queue.refused and "permission denied" in queue.refused
    assert queue.pending_count() == 1 and "refused the sweep's runs" in capsys.readouterr().err


def test_sweep_runs_are_created_once_and_found_again(tmp_path: Path, mlflow_uri: str) -> None:
    from skillearn.platform.mlflow_runs import SweepRuns

    uri = mlflow_uri
    path = str(tmp_path / "runs" / "s")
    found: list[tuple[str, str]] = []
    trial = SimpleNamespace(trial_id="t1", config={"_skill": "darts", "seed": 3, "w_lr": 0.1},
                            experiment_tag="1_w_lr=0.1")
    first = SweepRuns(uri, "runs", "s", path, name_knobs=["w_lr"])
    parent, child = first.ensure_parent(), first.ensure_child(trial)
    run = first.client.get_run(child)
    assert run.info.run_name == "darts #1 w_lr=0.1" and run.data.params["w_lr"] == "0.1"
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["seed"] == "3"

    again = SweepRuns(uri, "runs", "s", path, on_child_found=lambda *ids: found.append(ids))
    assert again.ensure_parent() == parent and again.ensure_child(trial) == child
    assert found == [("t1", child)]
    assert len(again.client.search_runs([again.ensure_experiment()])) == 2
