"""skillearn: learning skills as multilevel optimisation, run as Ray Tune sweeps.

The public Python API (see the README's Layout section):

    skillearn.trainable("lfm", dataset="digits")   # a Ray Tune trainable, for your own Tuner
    skillearn.search_space("lfm")                  # its tuned knobs as a Tune param_space
    skillearn.sweep("lfm", dataset="digits")       # a whole sweep; the trials as a DataFrame
    skillearn.available_skills()                   # built-in skills and installed plugins
    skillearn.get_skill("lfm")                     # a skill's knobs, metric and levels

Importing the package is light (no torch, Ray or MLflow): the names above are loaded on first
use (module `__getattr__`, PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from skillearn.errors import SkillearnError

__version__ = "0.1.0"

_LAZY = {
    "trainable": "skillearn.api",
    "sweep": "skillearn.api",
    "search_space": "skillearn.api",
    "available_skills": "skillearn.trainables.registry",
    "get_skill": "skillearn.trainables.registry",
}

__all__ = [
    "SkillearnError", "__version__", "available_skills", "get_skill", "search_space", "sweep",
    "trainable",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from skillearn.api import search_space, sweep, trainable
    from skillearn.trainables.registry import available_skills, get_skill


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'skillearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
