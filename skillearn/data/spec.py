"""DataSpec: the complete, hashable description of which data a run sees."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class DataSpec:
    """Everything that determines a DataBundle; equal specs give identical data (it is seeded).

    Frozen so it can be used as a cache key and logged verbatim as run parameters.
    """

    name: str = "digits"
    root: str | None = None
    download: bool = False
    seed: int = 0
    val_fraction: float = 0.5
    test_fraction: float = 0.2
    noise_rate: float = 0.0
    noise_type: str = "uniform"
    imbalance: float = 1.0
    meta_per_class: int = 0
    limit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of the fields (for records and run parameters).

        numpy scalars (as sweeps may pass) become Python numbers so json.dumps never fails.
        """
        return {k: v.item() if hasattr(v, "item") else v for k, v in asdict(self).items()}
