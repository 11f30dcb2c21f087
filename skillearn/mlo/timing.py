"""Wall time spent in each level's step, summed over an epoch, without syncing every step.

On CUDA the start and end of a level's step are recorded as events and read once when the
epoch's times are collected; on CPU a monotonic clock is exact because the work is synchronous.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class LevelTimer:
    """`with timer(name): ...` around a level's step; `collect()` returns and resets the sums."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = defaultdict(float)
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def __call__(self, name: str, device: torch.device | None = None) -> Iterator[None]:
        if device is not None and device.type == "cuda":
            start, end = (torch.cuda.Event(enable_timing=True),
                          torch.cuda.Event(enable_timing=True))
            start.record()
            yield
            end.record()
            self._events.append((name, start, end))
            return
        started = time.perf_counter()
        yield
        self._seconds[name] += time.perf_counter() - started

    def collect(self) -> dict[str, float]:
        """Seconds per level since the last call."""
        if self._events:
            torch.cuda.synchronize()
            for name, start, end in self._events:
                self._seconds[name] += start.elapsed_time(end) / 1000.0
            self._events.clear()
        out = dict(self._seconds)
        self._seconds.clear()
        return out
