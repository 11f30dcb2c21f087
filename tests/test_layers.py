"""The package's layering, as import-linter contracts (pyproject.toml's [tool.importlinter]).

platform above trainables above the skill vocabulary (`skillearn.knobs`) above the engine,
search spaces, data and reweighting; those import neither Ray nor MLflow. The contracts are
checked on the package itself, and on a copy with one upward import added, which must fail —
so a contract that cannot fail would be noticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import skillearn

pytest.importorskip("importlinter")

REPO = Path(skillearn.__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run `lint-imports` on the package under `root` with `root`'s pyproject.toml contracts
    (import-linter puts the working directory first on sys.path, so `root`'s copy is read)."""
    if not LINT_IMPORTS.is_file():
        pytest.skip(f"no lint-imports next to {sys.executable}")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True, text=True, timeout=120,
    )


def _copy_of_package(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "skillearn", tmp_path / "skillearn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_its_layers() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "added", "broken", "shown"),
    [
        # the engine reaching up into a skill, lazily inside a function: still an upward import
        ("mlo/level.py", "def _peek():\n    from skillearn.trainables import get_skill\n",
         "platform above skills", "skillearn.mlo.level -> skillearn.trainables"),
        # a skill reaching up into the driver
        ("trainables/darts.py", "from skillearn.platform.redact import redact\n",
         "platform above skills", "skillearn.trainables.darts -> skillearn.platform.redact"),
        # the vocabulary reaching up into the skills (the old search_spaces <-> trainables cycle)
        ("search_spaces/darts/space.py", "from skillearn.knobs import Knob\n",
         "platform above skills", "skillearn.search_spaces.darts.space -> skillearn.knobs"),
        # data importing MLflow
        ("data/spec.py", "import mlflow\n",
         "import neither Ray nor MLflow", "skillearn.data.spec -> mlflow"),
    ],
)
def test_an_added_upward_import_breaks_a_contract(
    tmp_path: Path, module: str, added: str, broken: str, shown: str
) -> None:
    root = _copy_of_package(tmp_path)
    assert _lint_imports(root).returncode == 0  # the copy alone is clean
    target = root / "skillearn" / module
    target.write_text(target.read_text() + "\n\n" + added)

    result = _lint_imports(root)

    assert result.returncode != 0
    text = " ".join(result.stdout.split())  # the report wraps long lines
    assert f"{broken}" in text and "BROKEN" in text, text
    assert shown in text, text
