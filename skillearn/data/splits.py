"""Seeded stratified splitting on index arrays (no data is copied until the very end)."""

from __future__ import annotations

import numpy as np

# Independent random streams per stage: changing e.g. the noise settings never changes the split.
STAGE_TEST, STAGE_LIMIT, STAGE_VAL, STAGE_META, STAGE_IMBALANCE, STAGE_NOISE, STAGE_FLIP_MAP = (
    range(1, 8)
)


def stage_rng(seed: int, stage: int) -> np.random.Generator:
    """Generator for one stage of the pipeline, derived from the spec seed."""
    return np.random.default_rng([int(seed), int(stage)])


def stratified_counts(labels: np.ndarray, n_take: int) -> dict[int, int]:
    """How many of each class to take so the total is n_take and each class is proportional.

    Largest-remainder rounding: every class gets floor or ceil of its exact share.
    """
    classes, counts = np.unique(labels, return_counts=True)
    n = int(counts.sum())
    if not 0 <= n_take <= n:
        raise ValueError(f"cannot take {n_take} of {n} examples")
    exact = counts * (n_take / n) if n else counts.astype(float)
    base = np.floor(exact).astype(np.int64)
    extra = n_take - int(base.sum())
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:extra]] += 1
    return {int(c): int(k) for c, k in zip(classes, base, strict=True)}


def stratified_split(
    idx: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split `idx` (with matching `labels`) into (taken, rest); taken has round(fraction*N) items.

    Both outputs are sorted, so the order of examples in a split never depends on the seed.
    """
    n_take = int(np.floor(fraction * len(idx) + 0.5))
    return stratified_take(idx, labels, n_take, rng)


def stratified_take(
    idx: np.ndarray, labels: np.ndarray, n_take: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Like stratified_split but with an absolute count (used for the train-pool limit)."""
    idx = np.asarray(idx, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    return take_per_class(idx, labels, stratified_counts(labels, n_take), rng)


def take_per_class(
    idx: np.ndarray, labels: np.ndarray, per_class: dict[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random subset with exactly per_class[c] examples of class c; returns (taken, rest)."""
    taken = []
    for c in sorted(per_class):
        members = idx[labels == c]
        k = per_class[c]
        if k > len(members):
            raise ValueError(f"class {c} has {len(members)} examples, {k} requested")
        taken.append(rng.permutation(members)[:k])
    taken_arr = np.sort(np.concatenate(taken)) if taken else np.empty(0, dtype=np.int64)
    rest = np.setdiff1d(idx, taken_arr, assume_unique=True)
    return taken_arr.astype(np.int64), rest.astype(np.int64)
