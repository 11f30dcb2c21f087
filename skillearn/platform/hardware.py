"""What a trial ran on, in words: the CPU model and core count, and the GPU names it can see.

Search cost in CPU- or GPU-hours means little without the hardware: each trial reports this
string beside its node and process (`sweep.trial_location`), the tracker tags the trial's MLflow
run `hardware` with it, and `skillearn compare` prints it next to the cost.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

HARDWARE_TAG = "hardware"
MAX_HARDWARE_CHARS = 250


def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo's `model name`), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_names() -> list[str]:
    """Names of the CUDA devices visible to this process (a Ray trial sees only its own)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not fail the trial over a label
        return []


def describe_hardware() -> str:
    """`AMD EPYC 7B13 (2 CPUs)`, plus `; GPU: NVIDIA H200` for each visible GPU."""
    text = f"{cpu_model()} ({os.cpu_count() or 0} CPUs)"
    gpus = gpu_names()
    if gpus:
        text += "; GPU: " + ", ".join(gpus)
    return text[:MAX_HARDWARE_CHARS]
