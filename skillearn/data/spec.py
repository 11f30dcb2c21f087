"""DataSpec: the complete, hashable description of which data a run sees."""

from __future__ import annotations

from collections.abc import Mapping
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
    # datasets with a protected attribute (digits_groups, celeba, isic2018); "" = its default
    target_attribute: str = ""
    sensitive_attribute: str = ""
    group_correlation: float = 0.9  # digits_groups: P(attribute agrees with the label half)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of the fields (for records and run parameters).

        numpy scalars (as sweeps may pass) become Python numbers so json.dumps never fails.
        """
        return {k: v.item() if hasattr(v, "item") else v for k, v in asdict(self).items()}


def data_spec(config: Mapping[str, Any]) -> DataSpec:
    """The DataSpec a config asks for (the trial loads it; the driver checks it up front).

    Skills that train on a clean meta set (MW-Net) have a `meta_per_class` knob; it is carved
    from the training part, after `val_fraction` of the data went to validation.
    """
    return DataSpec(
        name=config["dataset"],
        root=config["data_root"] or None,
        download=bool(config["download"]),
        seed=int(config["seed"]),
        val_fraction=float(config.get("val_fraction", 0.5)),
        noise_rate=float(config["noise_rate"]),
        noise_type=config["noise_type"],
        imbalance=float(config["imbalance"]),
        meta_per_class=int(config.get("meta_per_class", 0)),
        target_attribute=config.get("target_attribute", ""),
        sensitive_attribute=config.get("sensitive_attribute", ""),
        group_correlation=config.get("group_correlation", 0.9),
    )
