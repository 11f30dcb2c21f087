"""Timing, peak-memory and environment helpers shared by the benchmarks.

Timing: CPU steps are timed with ``time.perf_counter`` (CPU ops are synchronous); CUDA steps
with a pair of ``torch.cuda.Event(enable_timing=True)`` and a synchronize after each step.
``SKILLEARN_BENCH_CLOCK=process`` times CPU steps by the process's CPU time
(``time.process_time``) instead: on a box shared with other jobs a wall-clock step also counts
the time slices the scheduler gave to them (steps of a few ms come out in multiples of ~4.5 ms
at a load of 8 on 2 cores), while CPU time does not. With one torch thread and an idle box the
two agree; with several threads CPU time sums them, so use it with `--threads 1`.
Methods under comparison are interleaved round-robin, one step each per round, with the
starting method rotated every round, because CPU step times drift by +-20% over a run and
other processes share the cores; a ratio of medians taken in the same rounds cancels most of
that drift.

Peak memory of one step:
- CUDA: in process, ``max_memory_allocated`` after ``reset_peak_memory_stats`` minus the memory
  allocated just before the step (the models of the other methods stay resident; they are
  subtracted out);
- CPU: in a fresh subprocess per measured method, started with glibc's dynamic mmap threshold
  pinned (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``) so freed activations go back
  to the OS. It builds the model, takes one warm-up step, resets the kernel's resident-set
  high-water mark (``/proc/self/clear_refs`` <- 5), and reports ``VmHWM - VmRSS`` over one more
  step: the step's peak working set above what was live before it. Where that reset is not
  available (not Linux) it falls back to ``ru_maxrss`` growth, which misses peaks below the
  build's high-water mark; the JSON records which method was used.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
StepFn = Callable[[], Any]


# --------------------------------------------------------------------------------------------
# device and environment
def resolve_device(name: str) -> torch.device:
    """`cuda` without a GPU is an error (a benchmark must not silently fall back to CPU)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was requested but torch.cuda.is_available() is False")
    if name not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda, got {name!r}")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """Human-readable accelerator / processor name for the results table."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    """What a reader needs to compare two result files."""
    return {
        "device": device.type,
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------
# timing
@dataclass(frozen=True)
class TimingSummary:
    """Median and interquartile range of per-step times, in milliseconds."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    iqr_ms: float
    steps: int
    samples_ms: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["samples_ms"] = list(self.samples_ms)
        return data


def summarize(samples_s: Sequence[float]) -> TimingSummary:
    """Median/IQR of step times given in seconds (quartiles need >= 2 samples)."""
    ms = [1000.0 * s for s in samples_s]
    median = statistics.median(ms)
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    else:
        q1 = q3 = median
    return TimingSummary(median, q1, q3, q3 - q1, len(ms), tuple(ms))


def cpu_clock() -> Callable[[], float]:
    """The clock CPU steps are timed with: wall time, or the process's CPU time when
    ``SKILLEARN_BENCH_CLOCK=process`` (see the module docstring)."""
    import time

    return time.process_time if os.environ.get("SKILLEARN_BENCH_CLOCK") == "process" else (
        time.perf_counter)


def time_one(step: StepFn, device: torch.device) -> float:
    """Seconds taken by one call of `step`, device work included."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000.0
    clock = cpu_clock()
    started = clock()
    step()
    return clock() - started


def time_interleaved(
    steps: Mapping[str, StepFn],
    device: torch.device,
    warmup: int,
    timed: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, TimingSummary]:
    """Round-robin timing: each round runs every step function once, rotating who goes first.

    The first `warmup` rounds are discarded (allocator warm-up, cuDNN/oneDNN autotuning,
    optimizer state creation).
    """
    labels = list(steps)
    samples: dict[str, list[float]] = {label: [] for label in labels}
    for round_index in range(warmup + timed):
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            synchronize(device)
            seconds = time_one(steps[label], device)
            if round_index >= warmup:
                samples[label].append(seconds)
            if progress is not None:
                kind = "warm-up" if round_index < warmup else "timed"
                progress(f"  round {round_index + 1}/{warmup + timed} ({kind}) "
                         f"{label}: {1000 * seconds:.1f} ms")
    return {label: summarize(values) for label, values in samples.items()}


# --------------------------------------------------------------------------------------------
# memory
def release_memory() -> None:
    """Collect garbage and hand glibc's free heap back to the OS (Linux; a no-op elsewhere)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc (musl): nothing to trim
            pass


MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _proc_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _ru_maxrss_kb() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss


def peak_step_memory_mb(step: StepFn, device: torch.device) -> tuple[float, str]:
    """Peak memory one call of `step` needs above what was live before it, and the method.

    Call it after a warm-up step. On CPU the result is only meaningful in a process that
    measures one method (see the module docstring and `run_probe_subprocess`).
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return (peak - before) / 2**20, "cuda.max_memory_allocated"
    if _reset_rss_high_water_mark():
        before = _proc_status_kb("VmRSS")
        step()
        peak = _proc_status_kb("VmHWM")
        if before is not None and peak is not None:
            return (peak - before) / 1024, "linux VmHWM after clear_refs, fresh process"
    before = _ru_maxrss_kb()
    step()
    return (_ru_maxrss_kb() - before) / 1024, "ru_maxrss growth, fresh process"


def run_probe_subprocess(module: str, args: Sequence[str], threads: int) -> dict[str, Any]:
    """Run `python -m module *args` in a fresh process (glibc tuned, see MALLOC_ENV) and parse
    the JSON object it prints on its last stdout line."""
    env = dict(os.environ)
    env.update(MALLOC_ENV)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"memory probe `{module} {' '.join(args)}` failed:\n{completed.stderr[-4000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# output
def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table (also valid GitHub markdown)."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def write_json(path: str | Path, payload: Mapping[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
