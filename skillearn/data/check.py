"""check_data_spec: validate a DataSpec cheaply, before any data is read."""

from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import DataError
from .registry import ATTRIBUTE_CHECKS, LOADERS, ROOT_CHECKS, available_datasets
from .spec import DataSpec

NOISE_TYPES = ("uniform", "flip", "flip2", "pair")


def _is_int(v: object) -> bool:
    """Any integer type (numpy ints from a sweep included), but not bool."""
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _in_open_unit(v: object) -> bool:
    return _is_real(v) and 0.0 < v < 1.0


def check_data_spec(spec: DataSpec) -> None:
    """Raise DataError (one line: what is wrong and how to fix it) for an unusable spec.

    Only looks at the spec and, for file-backed datasets, at whether the expected files exist,
    so a CLI or sweep launcher can reject bad input in milliseconds instead of inside a worker.
    """
    if spec.name not in LOADERS:
        raise DataError(
            f"unknown dataset {spec.name!r}; choose one of: {', '.join(available_datasets())}"
        )
    if not _is_int(spec.seed):
        raise DataError(f"seed must be an integer, got {spec.seed!r}")
    for field in ("val_fraction", "test_fraction"):
        v = getattr(spec, field)
        if not _in_open_unit(v):
            raise DataError(f"{field} must be strictly between 0 and 1, got {v!r}")
    r = spec.noise_rate
    if not (_is_real(r) and 0.0 <= r < 1.0):
        raise DataError(f"noise_rate must be in [0, 1), got {r!r}")
    if spec.noise_type not in NOISE_TYPES:
        raise DataError(
            f"noise_type must be one of {', '.join(NOISE_TYPES)}, got {spec.noise_type!r}"
        )
    imb = spec.imbalance
    if not (_is_real(imb) and math.isfinite(imb)):
        raise DataError(f"imbalance must be a finite number >= 1, got {imb!r}")
    if imb < 1.0:
        raise DataError(
            f"imbalance is the largest/smallest class ratio and must be >= 1 (1 = balanced), "
            f"got {imb!r}"
        )
    if not _is_int(spec.meta_per_class) or spec.meta_per_class < 0:
        raise DataError(
            f"meta_per_class must be an integer >= 0 (0 = no meta set), got {spec.meta_per_class!r}"
        )
    if spec.limit is not None and (not _is_int(spec.limit) or spec.limit < 2):
        raise DataError(f"limit must be None or an integer >= 2, got {spec.limit!r}")
    for field in ("target_attribute", "sensitive_attribute"):
        if not isinstance(getattr(spec, field), str):
            raise DataError(f"{field} must be a string (a column name), got "
                            f"{getattr(spec, field)!r}")
    c = spec.group_correlation
    if not (_is_real(c) and 0.0 <= c <= 1.0):
        raise DataError(f"group_correlation must be a number in [0, 1], got {c!r}")
    attribute_check = ATTRIBUTE_CHECKS.get(spec.name)
    if attribute_check is not None:
        attribute_check(spec)
    elif spec.target_attribute or spec.sensitive_attribute:
        raise DataError(f"dataset {spec.name!r} has no attribute columns; target_attribute and "
                        f"sensitive_attribute apply to {', '.join(sorted(ATTRIBUTE_CHECKS))}")
    root_check = ROOT_CHECKS.get(spec.name)
    if root_check is not None:
        root_check(spec)
