"""Data files never run code: a crafted CIFAR pickle is refused, and the payload never executes.

Each hostile file would create a marker file if anything unpickled it with the standard
unpickler; the tests assert the one-line DataError (or CLI error) and that the marker is absent.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from skillearn.data import DataError, DataSpec, check_data_spec, load_data
from skillearn.data.safe_pickle import load_restricted
from tests.test_data import _write_cifar10, _write_cifar100


class _TouchViaSystem:
    """Unpickling this calls os.system('touch MARKER')."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _TouchViaOpen:
    """Unpickling this calls builtins.open(MARKER, 'w') (creates the file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _TouchViaExec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


PAYLOADS = {"os.system": _TouchViaSystem, "open": _TouchViaOpen, "exec": _TouchViaExec}


def _hostile_batch(marker: Path, payload: str, protocol: int) -> bytes:
    """A dict shaped like a CIFAR batch whose labels hide the payload (not at the top level)."""
    evil = PAYLOADS[payload](marker)
    batch = {"batch_label": "x", "data": np.zeros((2, 3072), np.uint8), "labels": [0, evil]}
    return pickle.dumps(batch, protocol=protocol)


def test_the_payloads_really_run_under_the_standard_unpickler(tmp_path):
    """The control: without the restriction each crafted file would create its marker."""
    for payload in PAYLOADS:
        marker = tmp_path / f"ran-{payload.replace('.', '_')}"
        pickle.loads(_hostile_batch(marker, payload, protocol=2))
        assert marker.exists(), payload


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_restricted_unpickler_refuses_and_never_runs(tmp_path, payload, protocol):
    marker = tmp_path / "ran"
    path = tmp_path / "data_batch_1"
    path.write_bytes(_hostile_batch(marker, payload, protocol))
    with pytest.raises(DataError) as err:
        load_restricted(path, "cifar10")
    assert not marker.exists()
    message = str(err.value)
    assert str(path) in message and "could run code" in message and "\n" not in message


@pytest.mark.parametrize(
    ("dataset", "victim"),
    [("cifar10", "data_batch_3"), ("cifar10", "test_batch"), ("cifar10", "batches.meta"),
     ("cifar100", "train"), ("cifar100", "test"), ("cifar100", "meta")],
)
def test_crafted_cifar_file_is_one_data_error_up_front(tmp_path, dataset, victim):
    """Any of the files a loader reads, replaced by a hostile one: refused by the cheap check that
    runs before Ray starts and by the loader itself; the payload never runs."""
    writer = _write_cifar10 if dataset == "cifar10" else _write_cifar100
    writer(tmp_path)
    folder = "cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"
    marker = tmp_path / "ran"
    (tmp_path / folder / victim).write_bytes(_hostile_batch(marker, "os.system", protocol=2))
    spec = DataSpec(name=dataset, root=str(tmp_path))
    with pytest.raises(DataError, match=rf"{victim} is not a CIFAR file: it names posix\.system"):
        check_data_spec(spec)
    with pytest.raises(DataError, match="could run code"):
        load_data(spec)
    with pytest.raises(DataError, match="could run code"):  # the download path reads the same way
        load_data(DataSpec(name=dataset, root=str(tmp_path), download=True))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "not a CIFAR pickle"),
     (b"not a pickle at all", "not a CIFAR pickle"),
     (pickle.dumps([1, 2, 3], protocol=2), "holds a list"),
     (pickle.dumps({"data": [1, 2], "labels": [0, 1]}, protocol=2), "no 'data' array"),
     (pickle.dumps({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, protocol=2),
      "no 'data' array"),
     (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, protocol=2),
      "one label per image"),
     (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 99]}, protocol=2),
      "outside the 10 classes")],
)
def test_malformed_cifar_files_are_one_clear_error(tmp_path, content, match):
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        check_data_spec(DataSpec(name="cifar10", root=str(tmp_path)))
    assert "\n" not in str(err.value)


def test_real_layout_written_by_a_modern_numpy_still_loads(tmp_path):
    """Stand-in files pickled by today's numpy (numpy._core names, protocol 5 buffers, numpy
    integer labels) are the real format too."""
    _write_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    x = np.arange(4 * 3072, dtype=np.uint64).astype(np.uint8).reshape(4, 3072)
    for protocol in (2, 5):
        buf = io.BytesIO()
        pickle.dump({"data": x, "labels": list(np.arange(4, dtype=np.int64))}, buf,
                    protocol=protocol)
        (base / "data_batch_1").write_bytes(buf.getvalue())
        batch = load_restricted(base / "data_batch_1", "cifar10")
        assert np.array_equal(batch["data"], x)
    check_data_spec(DataSpec(name="cifar10", root=str(tmp_path)))


def test_cli_refuses_a_crafted_cifar_folder_before_ray(tmp_path, capsys, monkeypatch):
    """`skillearn sweep` over a hostile --data-root: exit 2, one line, no Ray, nothing ran."""
    ray = pytest.importorskip("ray")
    from skillearn.platform.cli import main

    _write_cifar10(tmp_path / "data")
    marker = tmp_path / "ran"
    hostile = _hostile_batch(marker, "open", protocol=2)
    (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1").write_bytes(hostile)
    monkeypatch.chdir(tmp_path)
    code = main(["sweep", "darts", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"),
                 "--samples", "1", "--epochs", "1", "--storage", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("skillearn: error:") and "data_batch_1" in err[0]
    assert not marker.exists()
    assert not ray.is_initialized()
    assert not (tmp_path / "runs").exists()


def test_fake_cifar_helper_still_matches(tmp_path):
    """The restricted reader gives back exactly what the fake writer stored."""
    x, y, tx, ty, names = _write_cifar10(tmp_path)
    from skillearn.data.cifar import read_cifar_files

    raw = read_cifar_files("cifar10", str(tmp_path))
    assert raw.classes == names
    assert np.array_equal(raw.x.reshape(len(x), -1), x) and np.array_equal(raw.y, y)
    assert np.array_equal(raw.test_x.reshape(len(tx), -1), tx) and np.array_equal(raw.test_y, ty)


# --- `skillearn export`: generated code never carries text from a run ----------------------

INJECTED_OP = "sep_conv_3x3', 0),); __import__('os').system('touch {marker}'); X = (('"


def _generated(genotype, **sizes):
    from skillearn.search_spaces.darts.export import standalone_source

    return standalone_source(genotype, **{"channels": 8, "cells": 3, "num_classes": 10,
                                          "in_channels": 1, **sizes})


def test_export_refuses_unknown_ops_and_odd_sizes_instead_of_writing_them(tmp_path):
    from skillearn.search_spaces.darts import Genotype
    from tests.test_retrain_cli import GENOTYPE

    marker = tmp_path / "ran"
    hostile = Genotype(normal=((INJECTED_OP.format(marker=marker), 0), *GENOTYPE.normal[1:]),
                       normal_concat=GENOTYPE.normal_concat, reduce=GENOTYPE.reduce,
                       reduce_concat=GENOTYPE.reduce_concat)
    with pytest.raises(ValueError, match="unknown op"):
        _generated(hostile)
    for bad in ({"channels": "8); import os; (1"}, {"channels": True}, {"cells": 0},
                {"num_classes": 2.5}, {"in_channels": 10**9}):
        with pytest.raises(ValueError, match="must be an integer"):
            _generated(GENOTYPE, **bad)
    assert not marker.exists()


def test_generated_module_differs_only_in_checked_constants():
    """Two genotypes and sizes give the same code but for the constant lines, and every string
    in the module is the template's own or a known op name."""
    import ast

    from skillearn.search_spaces.darts import DARTS_V2
    from skillearn.search_spaces.darts.export import EXPORTABLE_OPS
    from skillearn.search_spaces.darts.ops import PRIMITIVES
    from tests.test_retrain_cli import GENOTYPE

    assert set(PRIMITIVES) <= set(EXPORTABLE_OPS)  # every op a search can pick is exportable
    small, large = _generated(GENOTYPE), _generated(DARTS_V2, channels=36, cells=20)
    constants = ("NORMAL =", "NORMAL_CONCAT =", "REDUCE =", "REDUCE_CONCAT =", "CHANNELS =",
                 "CELLS =")
    changed = [(a, b) for a, b in zip(small.splitlines(), large.splitlines(), strict=True)
               if a != b]
    assert changed and all(a.startswith(constants) for a, _ in changed)

    def strings(source):
        tree = ast.parse(source)
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}
        return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                and isinstance(node.value, str) and id(node) not in docstrings}

    template_own = strings(_generated(GENOTYPE))
    assert strings(large) <= template_own | set(EXPORTABLE_OPS)
    ops = {op for op, _ in DARTS_V2.normal + DARTS_V2.reduce}
    assert ops <= template_own | set(EXPORTABLE_OPS)


def _retrain_run_with(tmp_path, files: dict[str, bytes]) -> tuple[str, str]:
    """A run that looks like `skillearn retrain`'s, with the given `network/` artifacts."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    store = (tmp_path / "mlartifacts").as_uri()  # not ./mlruns wherever pytest runs
    run = client.create_run(client.create_experiment("skillearn", artifact_location=store),
                            tags={"skillearn.kind": "retrain"})
    folder = tmp_path / "artifacts"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)
    client.log_artifacts(run.info.run_id, str(folder), "network")
    return uri, run.info.run_id


def _network_record(op: str) -> bytes:
    from tests.test_retrain_cli import GENOTYPE

    genotype = GENOTYPE.to_dict()
    genotype["normal"][0][0] = op
    return json.dumps({"genotype": genotype, "channels": 8, "cells": 3, "num_classes": 10,
                       "in_channels": 1, "stem_multiplier": 3, "input_shape": [1, 8, 8],
                       "seeds": [0]}).encode()


def _export_refused(uri, run_id, out, capsys) -> str:
    from skillearn.platform.cli import main

    capsys.readouterr()
    code = main(["export", "--run-id", run_id, "--out", str(out), "--tracking-uri", uri])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("skillearn: error:"), err
    assert not (out / "network.py").exists()
    return err[0]


def test_export_of_a_run_with_a_crafted_genotype_writes_no_code(tmp_path, capsys):
    marker = tmp_path / "ran"
    uri, run_id = _retrain_run_with(tmp_path, {
        "network.json": _network_record(INJECTED_OP.format(marker=marker))})
    assert "unknown op" in _export_refused(uri, run_id, tmp_path / "out", capsys)
    assert not marker.exists()


@pytest.mark.parametrize("as_torch_file", [False, True])
def test_export_refuses_weights_that_would_run_code(tmp_path, capsys, as_torch_file):
    import torch

    marker = tmp_path / "ran"
    payload = _TouchViaSystem(marker)
    if as_torch_file:
        buffer = io.BytesIO()
        torch.save({"stem.0.weight": payload}, buffer)
        weights = buffer.getvalue()
    else:
        weights = pickle.dumps(payload, protocol=2)
    control = tmp_path / "control.pt"  # the control: an unrestricted load runs the payload
    control.write_bytes(weights)
    with contextlib.suppress(RuntimeError):  # a bare pickle runs, then fails the magic number
        torch.load(control, weights_only=False)
    assert marker.exists()
    marker.unlink()
    uri, run_id = _retrain_run_with(tmp_path, {
        "network.json": _network_record("sep_conv_3x3"), "seed_0.pt": weights})
    assert "is not a weights file" in _export_refused(uri, run_id, tmp_path / "out", capsys)
    assert not marker.exists()
