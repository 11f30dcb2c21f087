"""scikit-learn's bundled 8x8 digits: the default dataset because it needs no files at all."""

from __future__ import annotations

import numpy as np

from .raw import RawData
from .spec import DataSpec


def load_digits_raw(spec: DataSpec) -> RawData:
    """1797 grey 8x8 images, 10 classes, pixel values 0..16 (scaled by 1/16)."""
    from sklearn.datasets import load_digits  # lazy: sklearn import is slow

    d = load_digits()
    x = np.asarray(d.images, dtype=np.float32)[:, None, :, :]  # (N, 1, 8, 8)
    return RawData(x=x, y=d.target, classes=[str(c) for c in d.target_names], scale=16.0)
