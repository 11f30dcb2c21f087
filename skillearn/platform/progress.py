"""One line per trial event on the console, instead of Ray's per-trial config tables.

A sweep of dozens of trials should be readable as it runs: which trial, which epoch, the
metric, the best so far, and how many trials are done.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import Callback


class ProgressPrinter(Callback):
    """Prints `[done/total] trial epoch/epochs metric=… best=…` lines from the driver."""

    def __init__(self, metric: str, mode: str, total: int, epochs: int) -> None:
        self.metric, self.mode, self.total, self.epochs = metric, mode, total, epochs
        self.best: float | None = None
        self.done = 0
        self.started = time.monotonic()

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _line(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.0f} s | {self.done}/{self.total} done] {text}", flush=True,
              file=sys.stdout)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(f"trial {trial.trial_id} started")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        value = result.get(self.metric)
        if not isinstance(value, int | float):
            return
        if self._better(value):
            self.best = float(value)
        extra = "".join(f" {k}={result[k]:.4f}" for k in ("test_acc", "worst_class_acc")
                        if isinstance(result.get(k), int | float))
        step = result.get("ms_per_step")
        speed = f" ({step:.0f} ms/step)" if isinstance(step, int | float) else ""
        self._line(f"trial {trial.trial_id} epoch {result.get('epoch', '?')}/{self.epochs} "
                   f"{self.metric}={value:.4f}{extra} best={self.best:.4f}{speed}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        self._line(f"trial {trial.trial_id} finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        self._line(f"trial {trial.trial_id} failed (reason in MLflow tag `error`)")
