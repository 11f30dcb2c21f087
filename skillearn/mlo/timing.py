"""Wall time and peak memory of each level's step, summed (time) or maxed (memory) over an
epoch, without syncing every step.

On CUDA the start and end of a level's step are recorded as events and read once when the
epoch's times are collected; on CPU a monotonic clock is exact because the work is synchronous.
Memory is the peak while the level steps: CUDA's allocator peak, or on Linux the process's
peak resident set size (VmHWM). Both counters are reset at the start of each level's step, so
`process_peak_mb` keeps the peak over every reset for readers of the whole run's peak.
"""

from __future__ import annotations

import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")
_highest_mb: dict[str, float] = defaultdict(float)  # device type -> peak over every reset


def _counter_mb(device: torch.device) -> float | None:
    """The peak counter as it stands: CUDA's allocator peak, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type != "cpu":
        return None
    if sys.platform.startswith("linux"):
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _reset_counter(device: torch.device) -> bool:
    """Restart the peak counter at the current usage; False where it cannot be reset."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    if device.type == "cpu" and sys.platform.startswith("linux"):
        try:
            _CLEAR_REFS.write_text("5")  # 5: reset the peak RSS (VmHWM) to the current RSS
            return True
        except OSError:
            return False
    return False


def process_peak_mb(device: torch.device) -> float:
    """The run's peak memory on `device`'s counter, including the stretches a LevelTimer
    measured (and reset) on its own."""
    now = _counter_mb(device) or 0.0
    return max(now, _highest_mb[device.type])


class LevelTimer:
    """`with timer(name): ...` around a level's step; `collect()` returns and resets the
    seconds per level, `collect_memory()` the peak MB per level."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = defaultdict(float)
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
        self._peak_mb: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str, device: torch.device | None = None) -> Iterator[None]:
        device = device if device is not None else torch.device("cpu")
        before = _counter_mb(device)
        measured = before is not None and _reset_counter(device)
        if measured:
            _highest_mb[device.type] = max(_highest_mb[device.type], before)
        try:
            if device.type == "cuda":
                start, end = (torch.cuda.Event(enable_timing=True),
                              torch.cuda.Event(enable_timing=True))
                start.record()
                yield
                end.record()
                self._events.append((name, start, end))
            else:
                started = time.perf_counter()
                yield
                self._seconds[name] += time.perf_counter() - started
        finally:
            if measured:
                peak = _counter_mb(device) or 0.0
                self._peak_mb[name] = max(self._peak_mb[name], peak)
                _highest_mb[device.type] = max(_highest_mb[device.type], peak)

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

    def collect_memory(self) -> dict[str, float]:
        """Peak MB while each level stepped since the last call (empty where the counter cannot
        be reset: CPU off Linux)."""
        out = dict(self._peak_mb)
        self._peak_mb.clear()
        return out
