"""`digits_groups`: scikit-learn's digits with a synthetic protected attribute and a group shift.

Construction (seeded by the spec's seed, no files):
1. `test_fraction` of the 1797 images, stratified by digit, become the official test split;
2. every image gets a protected attribute s in {plain, inverted}; an inverted image has its
   pixels flipped (16 - p), so s is visible in the image, as gender is in a face;
3. train + validation: s = [digit >= 5] with probability `group_correlation` (0.9 by default),
   else the other value: s is a spurious cue for the label's half, and "inverted 0-4" and
   "plain 5-9" are rare groups;
4. test: s is a fair coin, independent of the digit, so a model that leans on the cue loses
   accuracy on the rare groups and its predictions depend on s.
The attribute is kept for fairness evaluation only (`Split.sensitive`); no skill sees it.
"""

from __future__ import annotations

import numpy as np

from . import splits as S
from .errors import DataError
from .raw import RawData
from .spec import DataSpec

ATTRIBUTE = "inverted"
GROUPS = ("plain", "inverted")
TARGET = "digit"
STAGE_ATTRIBUTE = 101  # own random stream: the split never depends on the attribute
MAX_PIXEL = 16.0


def check_digits_groups(spec: DataSpec) -> None:
    """Only the one target and attribute exist; say so before any data is read."""
    if spec.target_attribute not in ("", TARGET):
        raise DataError(f"digits_groups: target_attribute must be {TARGET!r}, got "
                        f"{spec.target_attribute!r}")
    if spec.sensitive_attribute not in ("", ATTRIBUTE):
        raise DataError(f"digits_groups: sensitive_attribute must be {ATTRIBUTE!r}, got "
                        f"{spec.sensitive_attribute!r}")


def invert(images: np.ndarray, inverted: np.ndarray) -> np.ndarray:
    """Copy of `images` (N, 1, 8, 8, values 0..16) with the rows where `inverted` flipped."""
    out = images.copy()
    out[inverted] = MAX_PIXEL - out[inverted]
    return out


def load_digits_groups_raw(spec: DataSpec) -> RawData:
    """Digits with the attribute `inverted`, correlated with the label half except in test."""
    from sklearn.datasets import load_digits  # lazy: sklearn import is slow

    d = load_digits()
    x = np.asarray(d.images, dtype=np.float32)[:, None, :, :]
    y = np.asarray(d.target, dtype=np.int64)
    test_idx, pool = S.stratified_split(np.arange(len(y)), y, spec.test_fraction,
                                        S.stage_rng(spec.seed, S.STAGE_TEST))
    rng = S.stage_rng(spec.seed, STAGE_ATTRIBUTE)
    agrees = rng.random(len(pool)) < spec.group_correlation
    pool_s = np.where(agrees, y[pool] >= 5, y[pool] < 5).astype(np.int64)
    test_s = (rng.random(len(test_idx)) < 0.5).astype(np.int64)
    return RawData(
        x=invert(x[pool], pool_s.astype(bool)), y=y[pool],
        classes=[str(c) for c in d.target_names], scale=MAX_PIXEL,
        test_x=invert(x[test_idx], test_s.astype(bool)), test_y=y[test_idx],
        sensitive=pool_s, test_sensitive=test_s,
        sensitive_name=ATTRIBUTE, sensitive_groups=GROUPS,
    )
