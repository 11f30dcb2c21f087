"""The Optuna study's database storage, with its password kept out of every pickle.

Ray pickles the searcher, and so the study's storage, into the sweep's `tuner.pkl` and searcher
state (on a cluster: a shared bucket). Optuna's RDBStorage pickles its URL; `EnvRDBStorage`
pickles the URL with its `${VAR}` password placeholder instead and reads the password from the
environment again when it is unpickled (see `skillearn.platform.secrets`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from skillearn.platform.secrets import expand_secrets


class EnvRDBStorage(optuna.storages.RDBStorage):
    """An RDBStorage whose pickled state holds `url_template` (placeholder), never the password."""

    def __init__(self, template: str, **kwargs: Any) -> None:
        self.url_template = template
        super().__init__(expand_secrets(template), **kwargs)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["url"] = self.url_template
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        state = dict(state)
        state["url"] = expand_secrets(state["url_template"])
        super().__setstate__(state)


def study_storage(url: str | None) -> EnvRDBStorage | None:
    """The study's storage for `url` (its folder created for SQLite); None keeps it in memory."""
    if not url:
        return None
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return EnvRDBStorage(url)
