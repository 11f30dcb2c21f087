"""Per-level time and peak memory (search diagnostics `time_<level>_s`, `mem_<level>_mb`)."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from skillearn.mlo.timing import LevelTimer, process_peak_mb

CPU = torch.device("cpu")
# the CPU peak counter is reset through /proc/self/clear_refs (Linux; a sandbox may forbid it)
RESETTABLE = sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK)
linux_only = pytest.mark.skipif(not RESETTABLE, reason="no writable /proc/self/clear_refs")


def _touch(megabytes: int) -> float:
    block = torch.ones(megabytes * 2**18)  # float32: 4 bytes each, every page written
    return float(block[-1])


@linux_only
def test_each_level_gets_the_peak_of_its_own_step() -> None:
    timer = LevelTimer()
    with timer("small", CPU):
        _touch(1)
    with timer("big", CPU):
        _touch(300)
    with timer("small", CPU):
        _touch(1)
    memory = timer.collect_memory()
    assert memory["big"] > memory["small"] + 200  # the 300 MB block shows in its level only
    assert timer.collect_memory() == {}  # collected once per epoch
    assert set(timer.collect()) == {"small", "big"}


@linux_only
def test_the_runs_peak_survives_the_per_level_resets() -> None:
    timer = LevelTimer()
    with timer("big", CPU):
        _touch(400)
    peak = timer.collect_memory()["big"]
    with timer("after", CPU):  # resets the process counter to today's (lower) usage
        _touch(1)
    assert process_peak_mb(CPU) >= peak
