"""Hostile and careless input, generated per knob type and driven through the `skillearn` CLI.

Property-style: for every knob of every skill, values drawn (seeded) from pools of hostile
numbers, strings, lists, mappings, YAML oddities, over-long and non-UTF-8 text, quotes and shell
metacharacters, given through `--set` and through `--config` files; then the other flags and
subcommands. The promise checked on each input:

- refused: exit 2, one or two stderr lines ending in `skillearn: error: ...`, no traceback, the
  sweep never reaches Ray (`run_sweep` is never called, Ray is not initialised) and nothing is
  written in the working, storage or tracking folders — and no shell metacharacter ever runs
  (the marker file they would create never appears);
- accepted: every resolved setting has its knob's exact type, range and choices (a trial gets
  exactly that), and the dry run passed.

Most inputs run in-process against a stubbed `run_sweep` (fast); a few run as real processes
(argv bytes that are not UTF-8, Ray's session folder checked). The two tests that start Ray (a
valid but odd name runs and lands in MLflow; a deterministic trial error is not retried) are
marked slow. The count of inputs tried and held is printed (`pytest -s`) and recorded as a
test property.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillearn.knobs import Knob
from skillearn.platform import cli, sweep
from skillearn.trainables.registry import all_knobs, available_skills, get_skill

MARKER = "HOSTILE_MARKER"
SEED = 20
SET_DRAWS = 7  # --set values drawn per knob
YAML_DRAWS = 5  # --config values drawn per knob

# What a careless or hostile user types after KEY= (the marker commands must never run).
SET_POOL = [
    "", " ", "'", '"', "it's", '"; rm -rf / #', f"$(touch {MARKER})", f"`touch {MARKER}`",
    f"| touch {MARKER}", f"; touch {MARKER}", "a" * 5000, "ünïcødé ☃", "\u202egnp.exe", "%s%n%x",
    "../../../etc/passwd", "--help", "-1", "0", "1.0", "1.5", "1e309", "-1e309", "nan", "inf",
    "-inf", "0x10", "1_000", "9" * 40, "9" * 5000, "true", "on", "yes", "None", "[1, 2]",
    "{a: 1}", "\udcff\udcfe", "tab\there", "１２",
]
# Typed values a YAML spec can hold (on/off unquoted become booleans).
YAML_POOL: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 1.5, 2**64, 10**400, float("nan"), float("inf"), "",
    "on", "text", "'quoted'", f"$(touch {MARKER})", [1, 2], [], {"a": 1}, {"nested": [{}]},
    "x" * 5000, [[[[["deep"]]]]],
]
# Whole spec files a careless user points --config at.
BAD_SPEC_FILES: dict[str, bytes] = {
    "latin1.yaml": "epochs: 1\nops: caf\xe9\n".encode("latin-1"),
    "binary.yaml": bytes(range(256)),
    "bom_utf16.yaml": "epochs: 1\n".encode("utf-16"),
    "list.yaml": b"- epochs\n- 1\n",
    "scalar.yaml": b"just text\n",
    "int_keys.yaml": b"1: 2\n",
    "python_tag.yaml": f"epochs: !!python/object/apply:os.system ['touch {MARKER}']\n".encode(),
    "bad_syntax.yaml": b"epochs: [1, 2\n",
    "alias_bomb.yaml": (b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                        b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nops: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"),
    "deep.yaml": b"ops: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "huge.yaml": b"# " + b"x" * 200_000 + b"\nepochs: 1\n",
    "on_off.yaml": b"fused_cells: on\nchannels_last: off\n",
    "underscore.yaml": b"_skill: lfm\n",
    "dup_types.yaml": b"epochs: '1'\n",
}
HOSTILE_FLAGS: list[list[str]] = [
    ["--samples", "0"], ["--samples", "-5"], ["--samples", "1e3"], ["--samples", "nan"],
    ["--epochs", "1.0"], ["--epochs", "0"], ["--seed", "-1"], ["--seed", "99999999999"],
    ["--seeds", "-1"], ["--seeds", "0", "0"], ["--seeds", "3000000000"], ["--seeds", "x"],
    ["--concurrency", "0"], ["--cpus-per-trial", "nan"], ["--cpus-per-trial", "inf"],
    ["--cpus-per-trial", "-0"], ["--gpus-per-trial", "nan"], ["--gpus-per-trial", "1e9"],
    ["--noise-rate", "nan"], ["--noise-rate", "inf"], ["--imbalance", "-inf"],
    ["--name", ""], ["--name", " "], ["--name", ".."], ["--name", "a/b"], ["--name", "a\\b"],
    ["--name", "n" * 300], ["--name", "new\nline"], ["--name", "\udcff"],
    ["--storage", "ftp://host/x"], ["--storage", "file:///tmp/x"], ["--storage", "memory://x"],
    ["--storage", "/proc/version/x"], ["--storage", "s" * 5000], ["--storage", "bad\x01char"],
    ["--experiment", ""], ["--experiment", "e" * 300], ["--experiment", "tab\tbed"],
    ["--tracking-uri", "javascript:alert(1)"], ["--tracking-uri", "foo://bar"],
    ["--tracking-uri", "sqlite://"], ["--tracking-uri", "sqlite:///:memory:"],
    ["--tracking-uri", "./mlruns"], ["--tracking-uri", "sqlite:///{work}/notadb.db"],
    ["--tracking-uri", "sqlite:///{work}/adir"], ["--tracking-uri", "http://127.0.0.1:1"],
    ["--optuna-storage", "redis://x"], ["--optuna-storage", "sqlite:///{work}/notadb.db/x"],
    ["--address", "not-an-address"], ["--address", "ray://:"], ["--address", "h:99999999"],
    ["--data-root", "/nonexistent/\"$(touch HOSTILE_MARKER)\""], ["--dataset", "../digits"],
    ["--config", "/nonexistent.yaml"], ["--config", "{work}"],
    ["--resume", "--name", "never-ran"], ["--method", "; ls"], ["--noise-type", "both"],
]
OTHER_COMMANDS: list[list[str]] = [
    ["compare", "nosuchskill"], ["compare", "darts", "'; DROP TABLE runs; --"],
    ["compare", "--noise-rate", "nan", "--tracking-uri", "foo://x"],
    ["compare", "--tracking-uri", "sqlite:///{work}/notadb.db"],
    ["report", "--tracking-uri", "sqlite:///{work}/notadb.db"],
    ["report", "--tracking-uri", "javascript:alert(1)"], ["report", "--top", "many"],
    ["report"],
    ["retrain", "--genotype", "/nonexistent.json"], ["retrain", "--genotype", "{work}/bad.json"],
    ["retrain", "--genotype", "{work}/binary.json"], ["retrain", "--genotype", "{work}"],
    ["retrain", "--genotype", "{work}/geno.json", "--seeds", "-1"],
    ["retrain", "--genotype", "{work}/geno.json", "--seeds", "0", "0"],
    ["retrain", "--genotype", "{work}/geno.json", "--epochs", "0"],
    ["retrain", "--genotype", "{work}/geno.json", "--channels", "-3"],
    ["retrain", "--genotype", "{work}/geno.json", "--cells", "1000"],
    ["retrain", "--genotype", "{work}/geno.json", "--dataset", "nosuchdata"],
    ["retrain", "--run-id", "'\"; --", "--tracking-uri", "sqlite:///{work}/notadb.db"],
    ["export"], ["export", "--run-id", "'\"; --"], ["export", "--run-id", "../../etc"],
    ["export", "--run-id", "abc", "--tracking-uri", "sqlite:///{work}/notadb.db"],
    ["export", "--run-id", "abc", "--out", "{work}/notadb.db/x"],
    ["export", "--run-id", "abc", "--seed", "first"],
    ["compare", "--baseline", "; ls"], ["compare", "--metric", "val_acc"],
    ["sync", "/nonexistent"], ["sync", "{work}/notadb.db"], ["sync", "{work}", "--tracking-uri",
                                                             "foo://bar"],
    ["ui", "--port", "0"], ["ui", "--port", "70000"], ["ui", "--port", "-1"],
    ["ui", "--tracking-uri", "foo://bar"], ["ui", "--tracking-uri", "sqlite:///{work}/notadb.db"],
    ["ui", "--port", "{busy}"],
    ["dashboard", "/nonexistent"], ["dashboard", "{work}"], ["dashboard", "../../etc"],
    ["dashboard", "{work}", "--port", "0"],
    ["dashboard", "x", "--optuna-storage", "sqlite:///{work}/notadb.db"],
    ["dashboard", "x", "--optuna-storage", "postgresql://u:plain@127.0.0.1:1/db"],
    ["nosuchcommand"], ["sweep"], [],
]
BAD_GENOTYPES = [
    {"normal": [["sep_conv_3x3", 5]], "normal_concat": [2], "reduce": [], "reduce_concat": []},
    {"normal": [["nosuchop", 0], ["skip_connect", 1]], "normal_concat": [2],
     "reduce": [["skip_connect", 0], ["skip_connect", 1]], "reduce_concat": [2]},
    {"normal": [["skip_connect", 0], ["skip_connect", 1.5]], "normal_concat": [2],
     "reduce": [["skip_connect", 0], ["skip_connect", 1]], "reduce_concat": [2]},
    {"normal": [["skip_connect", 0], ["skip_connect", 1]], "normal_concat": [7],
     "reduce": [["skip_connect", 0], ["skip_connect", 1]], "reduce_concat": [2]},
    [1, 2, 3],
]
GOOD_GENOTYPE = {"normal": [["skip_connect", 0], ["max_pool_3x3", 1]], "normal_concat": [2],
                 "reduce": [["skip_connect", 0], ["max_pool_3x3", 1]], "reduce_concat": [2]}


class Tally:
    """Inputs tried and held, over the whole module."""

    def __init__(self) -> None:
        self.tried = 0
        self.held = 0
        self.broken: list[str] = []
        self.reported = 0  # broken inputs already asserted on by an earlier group
        self.accepted = 0  # held by being accepted with exact types (the rest were refused)

    def add(self, label: str, problem: str | None) -> None:
        self.tried += 1
        if problem is None:
            self.held += 1
        else:
            self.broken.append(f"{label}: {problem}")

    def assert_all_held(self, group: str) -> None:
        print(f"\nhostile CLI, {group}: {self.tried} inputs tried so far, {self.held} held")
        broken, self.reported = self.broken[self.reported:], len(self.broken)
        assert not broken, "\n".join(broken[:15])


@pytest.fixture(scope="module")
def tally(request) -> Tally:
    counts = Tally()
    yield counts
    print(f"\nhostile CLI: {counts.tried} inputs tried, {counts.held} held "
          f"({counts.accepted} accepted with their knobs' exact types, the rest refused)")


@pytest.fixture
def stubs(monkeypatch):
    """run_sweep and the retraining loop recorded instead of run; the UI never launched."""
    calls: dict[str, list] = {"sweep": [], "retrain": [], "ui": []}

    def fake_sweep(spec):
        calls["sweep"].append(spec)
        return {}

    def fake_retrain(*args, **kwargs):
        calls["retrain"].append(args)
        raise SystemExit(0)  # nothing to log: stop here, as a finished command

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    import skillearn.platform.retrain_command as retrain

    monkeypatch.setattr(retrain, "retrain_seeds", fake_retrain)
    monkeypatch.setattr(cli.subprocess, "call", lambda *a, **k: calls["ui"].append(a) or 0)
    return calls


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _run(argv: list[str], work: Path, monkeypatch) -> tuple[int, str]:
    monkeypatch.chdir(work)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(argv)
    return code, err.getvalue()


def _refusal_problem(code: int, err: str, before: set[str], work: Path, calls: dict) -> str | None:
    """None when the input was refused as promised, else what went wrong."""
    import ray

    lines = err.strip().splitlines()
    if code != 2:
        return f"exit {code}, stderr {err[-300:]!r}"
    if not 1 <= len(lines) <= 2 or not lines[-1].startswith("skillearn: error: "):
        return f"stderr is not one or two skillearn lines: {err[-400:]!r}"
    if "Traceback" in err:
        return "traceback printed"
    if calls["sweep"] or ray.is_initialized():
        return "Ray would have started"
    written = _files(work) - before
    if written:
        return f"wrote {sorted(written)[:5]}"
    return None


def _accepted_problem(skill_name: str, spec: Any) -> str | None:
    """None when every resolved setting has its knob's type, range and choices."""
    for key, knob in all_knobs(get_skill(skill_name)).items():
        value = spec.config[key]
        if type(value) is not type(knob.default):
            return f"{key}={value!r} accepted as {type(value).__name__}"
        if knob.choices is not None and value not in knob.choices:
            return f"{key}={value!r} not among its choices"
        if not isinstance(value, bool) and isinstance(value, int | float):
            if (knob.low is not None and value < knob.low) or (
                    knob.high is not None and value > knob.high):
                return f"{key}={value!r} out of range"
    return None


def _check(label: str, argv: list[str], work: Path, monkeypatch, stubs: dict, tally: Tally,
           skill: str | None = None) -> None:
    for calls in stubs.values():
        calls.clear()
    before = _files(work)
    try:
        code, err = _run(argv, work, monkeypatch)
    except BaseException as exc:  # anything escaping main() breaks the promise
        tally.add(label, f"{type(exc).__name__} escaped main(): {str(exc)[:200]}")
        return
    if (work / MARKER).exists() or Path(MARKER).exists():
        tally.add(label, "a shell metacharacter ran a command")
    elif code == 2:
        tally.add(label, _refusal_problem(code, err, before, work, stubs))
    elif stubs["sweep"] and code == 0:
        tally.accepted += 1
        tally.add(label, _accepted_problem(skill or argv[1], stubs["sweep"][0]))
    else:
        tally.add(label, f"exit {code} without a sweep: {err[-300:]!r}")


def _knob_cases() -> list[tuple[str, str, Knob]]:
    """(skill, knob name, knob) for every knob of every skill (common ones once, on darts)."""
    cases, seen = [], set()
    for skill_name in ["darts", *[s for s in available_skills() if s != "darts"]]:
        for name, knob in all_knobs(get_skill(skill_name)).items():
            if name not in seen:
                seen.add(name)
                cases.append((skill_name, name, knob))
    return cases


def _write_yaml(path: Path, mapping: dict[str, Any]) -> None:
    text = yaml.safe_dump(mapping, allow_unicode=True)
    path.write_text(text, encoding="utf-8")


def test_every_knob_with_hostile_set_and_config_values(tmp_path, monkeypatch, stubs, tally):
    rng = random.Random(SEED)
    specs = tmp_path / "specs"
    specs.mkdir()
    for i, (skill_name, name, _knob) in enumerate(_knob_cases()):
        for j, raw in enumerate(rng.sample(SET_POOL, SET_DRAWS)):
            work = tmp_path / f"set{i}_{j}"
            work.mkdir()
            argv = ["sweep", skill_name, "--set", f"{name}={raw}", "--storage",
                    str(work / "runs"), "--samples", "2"]
            _check(f"--set {name}={raw[:30]!r}", argv, work, monkeypatch, stubs, tally,
                   skill_name)
        for j, value in enumerate(rng.sample(YAML_POOL, YAML_DRAWS)):
            work = tmp_path / f"yaml{i}_{j}"
            work.mkdir()
            spec = specs / f"{i}_{j}.yaml"
            _write_yaml(spec, {name: value})
            argv = ["sweep", skill_name, "--config", str(spec), "--storage", str(work / "runs"),
                    "--samples", "2"]
            _check(f"--config {{{name}: {str(value)[:30]!r}}}", argv, work, monkeypatch, stubs,
                   tally, skill_name)
    tally.assert_all_held("knob values")


def test_hostile_spec_files_and_flags(tmp_path, monkeypatch, stubs, tally):
    specs = tmp_path / "specs"
    specs.mkdir()
    for i, (filename, content) in enumerate(BAD_SPEC_FILES.items()):
        (specs / filename).write_bytes(content)
        work = tmp_path / f"file{i}"
        work.mkdir()
        argv = ["sweep", "darts", "--config", str(specs / filename), "--storage",
                str(work / "runs")]
        _check(f"--config {filename}", argv, work, monkeypatch, stubs, tally, "darts")
    for i, flags in enumerate(HOSTILE_FLAGS):
        work = tmp_path / f"flag{i}"
        work.mkdir()
        (work / "notadb.db").write_text("not a database")
        (work / "adir").mkdir()
        flags = [f.replace("{work}", str(work)) for f in flags]
        argv = ["sweep", "darts", *flags]
        if "--storage" not in flags:
            argv += ["--storage", str(work / "runs")]
        _check(" ".join(flags)[:60], argv, work, monkeypatch, stubs, tally, "darts")
    tally.assert_all_held("spec files and flags")


def test_other_subcommands_refuse_in_one_line(tmp_path, monkeypatch, stubs, tally):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for i, argv in enumerate(OTHER_COMMANDS):
            work = tmp_path / f"cmd{i}"
            work.mkdir()
            (work / "notadb.db").write_text("not a database")
            (work / "binary.json").write_bytes(b"\xff\xfe\x00{")
            (work / "bad.json").write_text(json.dumps(BAD_GENOTYPES[i % len(BAD_GENOTYPES)]))
            (work / "geno.json").write_text(json.dumps(GOOD_GENOTYPE))
            argv = [a.replace("{work}", str(work)).replace("{busy}", str(port)) for a in argv]
            before = _files(work)
            for calls in stubs.values():
                calls.clear()
            try:
                code, err = _run(argv, work, monkeypatch)
            except BaseException as exc:
                tally.add(" ".join(argv), f"{type(exc).__name__} escaped main()")
                continue
            tally.add(" ".join(argv)[:60], _refusal_problem(code, err, before, work, stubs))
    for i, genotype in enumerate(BAD_GENOTYPES):
        work = tmp_path / f"geno{i}"
        work.mkdir()
        (work / "g.json").write_text(json.dumps(genotype))
        before = _files(work)
        code, err = _run(["retrain", "--genotype", str(work / "g.json")], work, monkeypatch)
        problem = _refusal_problem(code, err, before, work, stubs)
        if problem is None and "genotype" not in err:
            problem = f"refused without naming the genotype: {err!r}"
        tally.add(f"genotype {i}", problem)
    tally.assert_all_held("other subcommands")


def _cli_process(args: list, cwd: Path, ray_tmp: Path,
                 timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "skillearn.platform.cli", *args], cwd=cwd,
                          env=env, capture_output=True, timeout=timeout)


def test_real_processes_refuse_non_utf8_argv_without_starting_ray(tmp_path, tally):
    ray_tmp = tmp_path / "ray"
    ray_tmp.mkdir()
    cases = [
        ["sweep", "darts", "--name", b"\xff\xfe-sweep", "--storage", b"runs"],
        ["sweep", "darts", "--set", b"ops=\xe9\xe9", "--storage", b"runs"],
    ]
    for args in cases:
        result = _cli_process(args, tmp_path, ray_tmp)
        err = result.stderr.decode("utf-8", "replace")
        lines = err.strip().splitlines()
        problem = None
        if result.returncode != 2 or len(lines) != 1 or "Traceback" in err:
            problem = f"exit {result.returncode}: {err[-400:]!r}"
        elif not lines[0].startswith("skillearn: error: "):
            problem = f"not a skillearn line: {lines[0]!r}"
        elif any(ray_tmp.iterdir()) or (tmp_path / "runs").exists():
            problem = "Ray started or the storage was written"
        tally.add(f"process {args!r}"[:60], problem)
    tally.assert_all_held("real processes")


# --- the two that start Ray ---------------------------------------------------------------------


def _clean_ray(ray_tmp: Path) -> None:
    """Kill whatever Ray left running under this test's own RAY_TMPDIR, then remove it."""
    import shutil

    from conftest import kill_marked

    kill_marked(str(ray_tmp))
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_odd_but_valid_name_and_storage_run_and_reach_mlflow(tmp_path, tally):
    """Quotes, unicode and shell metacharacters in the sweep name and storage path are valid:
    the sweep runs and MLflow holds its parent run and its trial."""
    from mlflow.tracking import MlflowClient

    name = 'odd "sweep" it\'s ünï $(touch HOSTILE_MARKER);&|'
    storage = tmp_path / 'o\'brien "x" ☃'
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ray_tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"skh{os.getpid()}"
    ray_tmp.mkdir(exist_ok=True)
    try:
        result = _cli_process(
            ["sweep", "darts", "--seeds", "0", "--epochs", "1", "--set", "steps_per_epoch=2",
             "--set", "fd_gap_every=0", "--name", name, "--storage", str(storage),
             "--tracking-uri", uri], tmp_path, ray_tmp, timeout=900)
    finally:
        _clean_ray(ray_tmp)
    log = result.stderr.decode(errors="replace")[-3000:]
    assert result.returncode == 0, log
    assert not (tmp_path / MARKER).exists()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("skillearn").experiment_id])
    roles = sorted(r.data.tags.get("skillearn.role", "") for r in runs)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert roles == ["sweep", "trial"] and len(finished) == 2, (roles, log)
    record = json.loads((storage / name / "skillearn_sweep.json").read_text())
    assert record["skill"] == "darts" and record["name"] == name
    tally.add("odd name end to end", None)


@pytest.mark.slow
def test_deterministic_trial_error_is_not_retried(tmp_path, tally):
    """Class folders without images pass the cheap root check but fail in the trial with a
    DataError: the trial fails once (Ray's error file has one failure), not three times."""
    data = tmp_path / "images"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        (data / cls / "notes.txt").write_text("no images here")
    ray_tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"skr{os.getpid()}"
    ray_tmp.mkdir(exist_ok=True)
    try:
        result = _cli_process(
            ["sweep", "darts", "--dataset", "imagefolder", "--data-root", str(data), "--seeds",
             "0", "--epochs", "1", "--storage", str(tmp_path / "runs"), "--name", "empty",
             "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"], tmp_path, ray_tmp,
            timeout=900)
    finally:
        _clean_ray(ray_tmp)
    log = result.stderr.decode(errors="replace")
    assert result.returncode == 1, log[-3000:]
    errors = list((tmp_path / "runs" / "empty").glob("trial_*/error.txt"))
    assert len(errors) == 1, log[-3000:]
    failures = errors[0].read_text().count("Failure # ")
    assert failures == 1, errors[0].read_text()[-2000:]
    assert "DataError" in log
    tally.add("deterministic error not retried", None)
