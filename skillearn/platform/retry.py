"""Which failed trials a sweep retries: not those whose error would simply recur.

Ray 2.x retries every trial failure up to `FailureConfig.max_failures` and has no per-exception
policy. A bad config or bad data (a deterministic `SkillearnError`) fails the same way on every
attempt, so retrying it only multiplies the time and the console lines; a killed worker, a lost
node or an I/O hiccup may well pass on the next attempt and keeps Ray's retries.

`RetryPolicy` is a Tune callback that, as each trial starts, gives it the two methods of
`NoRetryOnDeterministicError` (Ray's Trial, extended where it counts a failure and decides on a
retry). The trial's saved state is unchanged: the flag lives in Ray's temporary trial state,
which is never saved, and a restored sweep's trials get the class again as they start.
Imports Ray: load it only where a sweep is built.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from skillearn.errors import SkillearnError

MAX_CAUSE_DEPTH = 5


def is_deterministic(error: BaseException | None) -> bool:
    """Whether a trial's error would recur on a retry: a SkillearnError that says so, also when
    Ray wrapped it (a RayTaskError carries the original exception as `cause`)."""
    for _ in range(MAX_CAUSE_DEPTH):
        if error is None:
            return False
        if isinstance(error, SkillearnError):
            return error.deterministic
        error = getattr(error, "cause", None) or error.__cause__
    return False


class NoRetryOnDeterministicError(Trial):
    """A Tune trial that is not retried after a deterministic error."""

    def handle_error(self, exc: Any = None) -> None:
        super().handle_error(exc)
        self.temporary_state.skillearn_no_retry = is_deterministic(exc)

    def should_recover(self) -> bool:
        if getattr(self.temporary_state, "skillearn_no_retry", False):
            return False
        return super().should_recover()


class RetryPolicy(Callback):
    """Gives every trial, as it starts, the retry policy of NoRetryOnDeterministicError."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if type(trial) is Trial:
            trial.__class__ = NoRetryOnDeterministicError
