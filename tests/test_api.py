"""The public Python API: a light `import skillearn`, `trainable`/`search_space`/`sweep`, and
skill plugins from a real installed distribution (entry-point group `skillearn.skills`).

The plugin is the README's own example module, written with its `*.dist-info` (METADATA and
entry_points.txt) into a folder that is put on sys.path — the layout pip gives an installed
package, read by importlib.metadata like any other. The slow tests run the README's API block
and sweep the plugin on one module-scoped local Ray (2 CPUs), shut down after.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import skillearn
from skillearn.errors import SkillearnError

README = Path(__file__).resolve().parents[1] / "README.md"
PLUGIN_MODULE = "skillearn_smooth"
PLUGIN_SKILL = "label_smoothing"


def readme_block(marker: str) -> str:
    """The fenced code block right after the README comment `<!-- tested: ...marker... -->`."""
    found = re.search(r"<!-- tested:[^>]*" + re.escape(marker) + r"[^>]*-->\s*```\w*\n(.*?)```",
                      README.read_text(), re.S)
    assert found, f"README has no tested block marked {marker!r}"
    return found.group(1)


def install_distribution(site: Path, module: str, code: str, entry_points: str) -> None:
    """What `pip install` leaves in site-packages: the module and its dist-info."""
    (site / f"{module}.py").write_text(code)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[skillearn.skills]\n{entry_points}\n")


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory):
    """The README's plugin installed in a folder on sys.path (and on PYTHONPATH, as
    site-packages is, so Ray's worker processes find it too)."""
    site = tmp_path_factory.mktemp("site-packages")
    install_distribution(site, PLUGIN_MODULE, readme_block(PLUGIN_MODULE),
                         f"{PLUGIN_SKILL} = {PLUGIN_MODULE}")
    old_path, old_env = list(sys.path), os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), old_env]))
    try:
        yield site
    finally:
        sys.path[:] = old_path
        sys.modules.pop(PLUGIN_MODULE, None)
        if old_env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_env


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(README.parent)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


def test_import_is_light_and_bad_input_fails_before_ray(tmp_path: Path) -> None:
    """No torch/Ray/MLflow at import; the API's names are loaded on first use; bad input
    raises a SkillearnError without importing Ray."""
    code = f"""
import json, sys
import skillearn
heavy = lambda: sorted(m for m in ("torch", "ray", "mlflow", "pandas") if m in sys.modules)
out = {{"at_import": heavy(), "listed": [n for n in ("trainable", "sweep", "search_space")
                                          if n in dir(skillearn)]}}
errors = []
for call in (lambda: skillearn.trainable("nope"),
             lambda: skillearn.trainable("lfm", epochs=0),
             lambda: skillearn.trainable("lfm", dataset="no_such_set"),
             lambda: skillearn.trainable("lfm", not_a_knob=1),
             lambda: skillearn.sweep("lfm", samples=0, storage={str(tmp_path)!r},
                                     tracking_uri="sqlite:///{tmp_path}/mlflow.db"),
             lambda: skillearn.sweep("lfm", epochs="two", storage={str(tmp_path)!r},
                                     tracking_uri="sqlite:///{tmp_path}/mlflow.db")):
    try:
        call()
    except skillearn.SkillearnError as err:
        errors.append(str(err))
out["errors"], out["after_errors"] = errors, heavy()
print(json.dumps(out))
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["at_import"] == []
    assert out["listed"] == ["trainable", "sweep", "search_space"]
    assert len(out["errors"]) == 6, out["errors"]
    assert "unknown skill 'nope'" in out["errors"][0]
    assert "epochs=0" in out["errors"][1]
    assert "no_such_set" in out["errors"][2]
    assert "not_a_knob" in out["errors"][3]
    assert "samples" in out["errors"][4]
    assert "epochs" in out["errors"][5]
    assert "ray" not in out["after_errors"]
    assert not any(tmp_path.iterdir())  # nothing created for a refused sweep


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        skillearn.nope  # noqa: B018


def test_sweep_options_do_not_shadow_knobs() -> None:
    """`sweep`'s knobs come as keyword arguments beside its options: no name may be both."""
    options = {name for name, p in inspect.signature(skillearn.sweep).parameters.items()
               if p.kind is not inspect.Parameter.VAR_KEYWORD}
    from skillearn.trainables.registry import all_knobs

    for name in skillearn.available_skills():
        assert not options & set(all_knobs(skillearn.get_skill(name))), name


def test_search_space_is_the_sweeps_ranges() -> None:
    pytest.importorskip("ray")
    from ray.tune.search.sample import Categorical, Float

    skill = skillearn.get_skill("lfm")
    space = skillearn.search_space("lfm", arch_lr=0.01)
    expected = {n for n, k in skill.tuned_knobs().items() if not k.when} - {"arch_lr"}
    assert set(space) == expected
    low, high = skill.knobs["w_lr"].search_range()
    assert isinstance(space["w_lr"], Float)
    assert (space["w_lr"].lower, space["w_lr"].upper) == (low, high)
    assert isinstance(space["encoder_dim"], Categorical)
    with pytest.raises(SkillearnError, match="not_a_knob"):
        skillearn.search_space("lfm", not_a_knob=1)


def test_trainable_pins_settings_and_is_named_after_the_skill() -> None:
    trainable = skillearn.trainable("darts", dataset="digits", epochs=1)
    assert trainable.__name__ == "skillearn_darts"
    assert callable(trainable)


def test_plugin_from_an_installed_distribution(plugin_site: Path, capsys) -> None:
    """The README's plugin, installed, is a skill like the built-in ones."""
    from skillearn.platform.cli import main

    assert PLUGIN_SKILL in skillearn.available_skills()
    skill = skillearn.get_skill(PLUGIN_SKILL)
    assert skill.name == PLUGIN_SKILL and "smoothing" in skill.tuned_knobs()
    assert sys.modules[PLUGIN_MODULE].__file__.startswith(str(plugin_site))
    assert main(["skills"]) == 0
    assert re.search(rf"^{PLUGIN_SKILL}\s+Baseline: cross-entropy with label smoothing",
                     capsys.readouterr().out, re.M)
    trainable = skillearn.trainable(PLUGIN_SKILL, dataset="digits", smoothing=0.2)
    assert trainable.__name__ == f"skillearn_{PLUGIN_SKILL}"
    with pytest.raises(SkillearnError, match="smoothing=0.9 is above its maximum"):
        skillearn.trainable(PLUGIN_SKILL, smoothing=0.9)


def test_broken_plugins_fail_in_one_line(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_distribution(site, "broken_a", "raise ImportError('needs a missing library')",
                         "broken_import = broken_a")
    install_distribution(site, "broken_b", "SKILL = 3", "not_a_skill = broken_b")
    install_distribution(site, "broken_c", "from skillearn.trainables.baselines import CE as SKILL",
                         "renamed = broken_c")
    install_distribution(site, "broken_d", "SKILL = None", "lfm = broken_d")
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(UserWarning, match="'lfm' is a built-in skill"):
        for name, message in (("broken_import", "cannot be loaded: ImportError: needs a missing"),
                              ("not_a_skill", "is not a skillearn Skill"),
                              ("renamed", "holds the skill 'ce'")):
            with pytest.raises(SkillearnError, match=message):
                skillearn.get_skill(name)
        assert skillearn.available_skills().count("lfm") == 1
    assert skillearn.get_skill("lfm").name == "lfm"  # the built-in, not the plugin


@pytest.fixture(scope="module")
def local_ray(plugin_site: Path):
    """One local Ray for the slow tests, started after the plugin is on PYTHONPATH."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_readme_python_api_block_runs(local_ray, tmp_path: Path, monkeypatch, capsys) -> None:
    """The README's block as written: a user's Tuner with OptunaSearch + ASHA over
    `skillearn.trainable`, then `skillearn.sweep` returning the trials."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_block("runs this block"), "README.md", "exec"), namespace)
    best, trials = namespace["best"], namespace["trials"]
    assert 0.0 <= best.metrics["val_acc"] <= 1.0 and best.metrics["epoch"] >= 1
    assert len(trials) == 2 and trials["val_acc"].is_monotonic_decreasing
    assert {"val_acc", "test_acc", "config/w_lr", "config/dataset"} <= set(trials.columns)
    assert "config/_skill" not in trials.columns
    assert (tmp_path / "tune_runs").is_dir() and (tmp_path / "mlflow.db").is_file()
    assert Path(trials.attrs["path"]).parent == tmp_path / "skillearn_runs"
    assert local_ray.is_initialized()  # the caller's Ray is left running


@pytest.mark.slow
def test_plugin_skill_sweeps(local_ray, plugin_site: Path, tmp_path: Path) -> None:
    """The installed plugin, swept like a built-in skill: its trial runs in a Ray worker (which
    finds the plugin by its entry point) and its tuned knob is searched."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    trials = skillearn.sweep(PLUGIN_SKILL, dataset="digits", epochs=1, steps_per_epoch=2,
                             samples=1, storage=str(tmp_path / "runs"), tracking_uri=uri,
                             name="plugin")
    assert len(trials) == 1
    row = trials.iloc[0]
    assert row["epoch"] == 1 and 0.0 <= row["val_acc"] <= 1.0
    low, high = skillearn.get_skill(PLUGIN_SKILL).knobs["smoothing"].search_range()
    assert low <= row["config/smoothing"] <= high
    assert trials.attrs["skill"] == PLUGIN_SKILL and trials.attrs["path"].endswith("/plugin")
    assert trials.attrs["unsent_writes"] == 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("skillearn")
    runs = client.search_runs([experiment.experiment_id], "tags.`skillearn.role` = 'trial'")
    assert [r.data.tags["skill"] for r in runs] == [PLUGIN_SKILL]
