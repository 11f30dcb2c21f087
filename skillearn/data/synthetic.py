"""A tiny deterministic Gaussian-blob image dataset, so tests and smoke runs need no files."""

from __future__ import annotations

import numpy as np

from .raw import RawData
from .spec import DataSpec

NUM_CLASSES = 10
PER_CLASS = 60
SHAPE = (1, 8, 8)
NOISE_STD = 1.0
# The dataset itself is fixed (stable example ids); spec.seed only changes splits and noise.
GENERATOR_SEED = 1234


def make_blobs(
    num_classes: int = NUM_CLASSES,
    per_class: int = PER_CLASS,
    shape: tuple[int, int, int] = SHAPE,
    noise_std: float = NOISE_STD,
    seed: int = GENERATOR_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Class c = a fixed random mean image for c plus isotropic Gaussian noise.

    Means are unit-variance per pixel, so with 64 pixels and noise_std 1 the classes are well
    separated yet not trivially so: a small MLP/CNN learns it in a few hundred steps.
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.0, size=(num_classes, *shape)).astype(np.float32)
    y = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    y = y[rng.permutation(len(y))]
    x = means[y] + rng.normal(0.0, noise_std, size=(len(y), *shape)).astype(np.float32)
    return x.astype(np.float32), y


def load_synthetic_raw(spec: DataSpec) -> RawData:
    """600 examples, 10 classes, 1x8x8 (see make_blobs)."""
    x, y = make_blobs()
    return RawData(x=x, y=y, classes=[f"class_{c}" for c in range(NUM_CLASSES)], scale=1.0)
