"""Training-set corruptions: long-tail class imbalance and label noise.

Both act on the train split only, so validation, test and meta data measure clean, balanced
performance, which is what data-reweighting methods are judged on.
"""

from __future__ import annotations

import numpy as np

from .splits import take_per_class


def long_tail_counts(n_max: int, num_classes: int, imbalance: float) -> list[int]:
    """Cui et al. (2019) exponential profile: class c keeps round(n_max * (1/imb)^(c/(C-1)))."""
    if num_classes == 1:
        return [n_max]
    return [
        int(np.floor(n_max * (1.0 / imbalance) ** (c / (num_classes - 1)) + 0.5))
        for c in range(num_classes)
    ]


def apply_imbalance(
    idx: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    imbalance: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int, list[int]]:
    """Subsample `idx` to the long-tail profile; returns (kept idx, n_max, target counts).

    n_max is the smallest class count present, so every class can meet its target exactly and
    the achieved largest/smallest ratio equals `imbalance` up to rounding.
    """
    counts = np.bincount(labels, minlength=num_classes)
    n_max = int(counts.min())
    targets = long_tail_counts(n_max, num_classes, imbalance)
    kept, _ = take_per_class(idx, labels, dict(enumerate(targets)), rng)
    return kept, n_max, targets


def random_flip_map(num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """For each class c a seeded random target c' != c (the fixed 'flip' noise map)."""
    if num_classes < 2:
        raise ValueError("flip noise needs at least 2 classes")
    offsets = rng.integers(1, num_classes, size=num_classes)  # 1..C-1, never 0
    return (np.arange(num_classes) + offsets) % num_classes


def two_target_map(num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """For each class c two seeded, distinct targets != c, shape (C, 2): the 'flip2' noise map.

    As the GLC / MW-Net / LFM code's `flip_labels_C_two`: a corrupted label goes to either
    target with probability 1/2 each, so each target receives rate/2 of the class.
    """
    if num_classes < 3:
        raise ValueError("flip2 noise needs at least 3 classes")
    others = [rng.permutation(np.delete(np.arange(num_classes), c))[:2] for c in range(num_classes)]
    return np.stack(others).astype(np.int64)


def pair_flip_map(num_classes: int) -> np.ndarray:
    """c -> (c + 1) mod C: Co-teaching's 'pair' flip, a fixed permutation (each class sends to
    and receives from exactly one other class), the same for every seed."""
    if num_classes < 2:
        raise ValueError("pair noise needs at least 2 classes")
    return (np.arange(num_classes) + 1) % num_classes


def uniform_noise(
    labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """MW-Net 'unif': with prob. rate, relabel with a class drawn from ALL classes.

    The draw may hit the true class, so the expected changed fraction is rate*(C-1)/C.
    """
    hit = rng.random(len(labels)) < rate
    draws = rng.integers(0, num_classes, size=len(labels))
    return np.where(hit, draws, labels).astype(np.int64)


def flip_noise(
    labels: np.ndarray, flip_map: np.ndarray, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """With prob. rate, replace label c by flip_map[c] (always a different class)."""
    hit = rng.random(len(labels)) < rate
    return np.where(hit, flip_map[labels], labels).astype(np.int64)


def flip2_noise(
    labels: np.ndarray, targets: np.ndarray, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """With prob. rate, replace label c by targets[c, 0] or targets[c, 1] (p/2 each)."""
    hit = rng.random(len(labels)) < rate
    which = rng.integers(0, 2, size=len(labels))
    return np.where(hit, targets[labels, which], labels).astype(np.int64)
