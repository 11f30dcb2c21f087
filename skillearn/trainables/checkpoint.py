"""Save and restore a trial: level parameters, optimizer/scheduler state, extra tensors, epoch.

Loaded with `weights_only=True` so a checkpoint cannot run code; a file that cannot be read is
reported by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from skillearn.trainables.setup import Built

CHECKPOINT_FILE = "trial.pt"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt or from a different program."""


def save_checkpoint(directory: str | Path, built: Built, progress: dict[str, Any]) -> Path:
    """Write everything needed to continue after `progress["epoch"]` into `directory`."""
    program = built.program
    payload = {
        "progress": progress,
        "iteration": program.iteration,
        "levels": {
            name: {
                "params": {k: t.detach().cpu() for k, t in level.params.items()},
                "optimizer": level.optimizer.state_dict(),
                "scheduler": level.scheduler.state_dict() if level.scheduler else None,
            }
            for name, level in program.levels.items()
        },
        "state": {k: t.detach().cpu() for k, t in built.state.items()},
        "modules": [m.state_dict() for m in built.modules],
    }
    path = Path(directory) / CHECKPOINT_FILE
    torch.save(payload, path)
    return path


def load_checkpoint(directory: str | Path, built: Built) -> dict[str, Any]:
    """Restore `built` in place from `directory`; returns the saved progress dict."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        program = built.program
        for module, state in zip(built.modules, payload["modules"], strict=True):
            module.load_state_dict(state)
        with torch.no_grad():
            for name, saved in payload["levels"].items():
                level = program.levels[name]
                for k, t in saved["params"].items():
                    level.params[k].copy_(t)
                level.optimizer.load_state_dict(saved["optimizer"])
                if level.scheduler is not None and saved["scheduler"] is not None:
                    level.scheduler.load_state_dict(saved["scheduler"])
            for k, t in payload["state"].items():
                built.state[k].copy_(t)
        program.iteration = int(payload["iteration"])
        return dict(payload["progress"])
    except CheckpointError:
        raise
    except Exception as exc:  # any unpickling/shape/key problem means the file is unusable
        raise CheckpointError(
            f"checkpoint {path} is corrupt or does not match this trial's program: {exc}"
        ) from exc
