"""load_data: spec -> DataBundle (split, limit, carve meta, imbalance, noise, normalise)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import splits as S
from .bundle import DataBundle, Split
from .check import check_data_spec
from .corruption import (
    apply_imbalance,
    flip2_noise,
    flip_noise,
    pair_flip_map,
    random_flip_map,
    two_target_map,
    uniform_noise,
)
from .errors import DataError
from .raw import RawData
from .registry import LOADERS
from .spec import DataSpec


def _counts(labels: np.ndarray, num_classes: int) -> list[int]:
    return [int(c) for c in np.bincount(labels, minlength=num_classes)]


def _to_float(x: np.ndarray, scale: float) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)
    return t.div_(scale) if scale != 1.0 else t


def _split(x: torch.Tensor, y: np.ndarray, clean_y: np.ndarray, ids: np.ndarray,
           sensitive: np.ndarray | None = None) -> Split:
    return Split(
        x=x,
        y=torch.from_numpy(np.asarray(y, dtype=np.int64).copy()),
        clean_y=torch.from_numpy(np.asarray(clean_y, dtype=np.int64).copy()),
        index=torch.from_numpy(np.asarray(ids, dtype=np.int64).copy()),
        sensitive=None if sensitive is None else torch.from_numpy(
            np.asarray(sensitive, dtype=np.int64).copy()),
    )


def load_data(spec: DataSpec) -> DataBundle:
    """Load, split and corrupt a dataset exactly as `spec` says; same spec, same tensors.

    Pipeline (each stage has its own seeded random stream, so e.g. changing the noise never
    changes which examples are in which split):
      1. test split: the official one (CIFAR) or a stratified `test_fraction` of the data;
      2. `limit`: stratified cap on the remaining (non-test) pool;
      3. val split: stratified `val_fraction` of the pool; the rest is train;
      4. meta: `meta_per_class` clean examples per class moved out of train (before any
         corruption), as MW-Net's code carves its meta set from the training images;
      5. train only: long-tail imbalance, then label noise (counts use clean labels);
         noise `uniform`, `flip` (one seeded target per class), `flip2` (two seeded targets,
         rate/2 each) or `pair` (c -> c+1, a fixed permutation);
      6. normalise every split with the train split's per-channel mean/std.
    Example ids (`Split.index`) are positions in the dataset's own training array; official test
    examples get ids len(train array) + position, so ids are unique across all splits.
    """
    check_data_spec(spec)
    raw = LOADERS[spec.name](spec)
    C = len(raw.classes)
    _validate_raw(spec, raw, C)

    def rng(stage: int) -> np.random.Generator:
        return S.stage_rng(spec.seed, stage)

    n_source = len(raw.y)
    all_idx = np.arange(n_source, dtype=np.int64)

    if raw.has_official_test:
        pool = all_idx
    else:
        test_idx, pool = S.stratified_split(all_idx, raw.y, spec.test_fraction, rng(S.STAGE_TEST))
    pool_size_before_limit = len(pool)
    if spec.limit is not None and spec.limit < len(pool):
        pool, _ = S.stratified_take(pool, raw.y[pool], spec.limit, rng(S.STAGE_LIMIT))
    val_idx, train_idx = S.stratified_split(pool, raw.y[pool], spec.val_fraction, rng(S.STAGE_VAL))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise DataError(
            f"dataset {spec.name!r}: a pool of {len(pool)} examples leaves an empty train or val "
            f"split at val_fraction={spec.val_fraction}; raise limit or adjust val_fraction"
        )

    meta_idx = None
    if spec.meta_per_class > 0:
        have = np.bincount(raw.y[train_idx], minlength=C)
        if have.min() < spec.meta_per_class:
            raise DataError(
                f"meta_per_class={spec.meta_per_class} but the train split has only "
                f"{int(have.min())} examples of class {int(have.argmin())}; "
                f"lower meta_per_class or val_fraction"
            )
        meta_idx, train_idx = S.take_per_class(
            train_idx, raw.y[train_idx], dict.fromkeys(range(C), spec.meta_per_class),
            rng(S.STAGE_META),
        )
        if len(train_idx) == 0:
            raise DataError(
                f"meta_per_class={spec.meta_per_class} takes every training example; lower it"
            )

    counts_before = _counts(raw.y[train_idx], C)
    n_max, targets = None, None
    if spec.imbalance > 1.0:
        train_idx, n_max, targets = apply_imbalance(
            train_idx, raw.y[train_idx], C, spec.imbalance, rng(S.STAGE_IMBALANCE)
        )
    clean_train_y = raw.y[train_idx]

    flip_map, flip2_map = None, None
    if spec.noise_rate > 0 and spec.noise_type in ("flip", "pair"):
        flip_map = (random_flip_map(C, rng(S.STAGE_FLIP_MAP)) if spec.noise_type == "flip"
                    else pair_flip_map(C))
        train_y = flip_noise(clean_train_y, flip_map, spec.noise_rate, rng(S.STAGE_NOISE))
    elif spec.noise_rate > 0 and spec.noise_type == "flip2":
        flip2_map = two_target_map(C, rng(S.STAGE_FLIP_MAP))
        train_y = flip2_noise(clean_train_y, flip2_map, spec.noise_rate, rng(S.STAGE_NOISE))
    elif spec.noise_rate > 0:
        train_y = uniform_noise(clean_train_y, C, spec.noise_rate, rng(S.STAGE_NOISE))
    else:
        train_y = clean_train_y.copy()

    train_x = _to_float(raw.x[train_idx], raw.scale)
    mean, std = _channel_stats(train_x)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))

    def groups(ids: np.ndarray) -> np.ndarray | None:
        return None if raw.sensitive is None else raw.sensitive[ids]

    def clean_split(ids: np.ndarray) -> Split:
        return _split(norm(_to_float(raw.x[ids], raw.scale)), raw.y[ids], raw.y[ids], ids,
                      groups(ids))

    train = _split(norm(train_x), train_y, clean_train_y, train_idx, groups(train_idx))
    val = clean_split(val_idx)
    meta = clean_split(meta_idx) if meta_idx is not None else None
    if raw.has_official_test:
        assert raw.test_x is not None and raw.test_y is not None
        test_ids = n_source + np.arange(len(raw.test_y), dtype=np.int64)
        tx = norm(_to_float(raw.test_x, raw.scale))
        test = _split(tx, raw.test_y, raw.test_y, test_ids, raw.test_sensitive)
    else:
        test = clean_split(test_idx)

    train_counts = _counts(clean_train_y, C)
    n_noisy = int((train_y != clean_train_y).sum())
    record: dict[str, Any] = {
        **spec.to_dict(),  # includes seed, noise_type, noise_rate, imbalance, ...
        "dataset": spec.name,
        "num_classes": C,
        "input_shape": list(raw.x.shape[1:]),
        "source_size": n_source,
        "official_test": raw.has_official_test,
        "pool_size_before_limit": pool_size_before_limit,
        "sizes": {
            "train": len(train),
            "val": len(val),
            "test": len(test),
            "meta": len(meta) if meta is not None else 0,
        },
        "train_class_counts_before_imbalance": counts_before,
        "train_class_counts": train_counts,
        "imbalance_n_max": n_max,
        "imbalance_target_counts": targets,
        "imbalance_achieved": max(train_counts) / max(min(train_counts), 1),
        "actual_noise_rate": n_noisy / max(len(train_y), 1),
        "num_noisy": n_noisy,
        "flip_map": [int(c) for c in flip_map] if flip_map is not None else None,
        "flip2_map": flip2_map.tolist() if flip2_map is not None else None,
        "val_class_counts": _counts(raw.y[val_idx], C),
        "norm_mean": [float(v) for v in mean],
        "norm_std": [float(v) for v in std],
    }
    if raw.sensitive is not None:
        record["sensitive_attribute"] = raw.sensitive_name
        record["sensitive_groups"] = list(raw.sensitive_groups)
        record["group_counts"] = {
            name: _counts(split.sensitive.numpy(), len(raw.sensitive_groups))
            for name, split in (("train", train), ("val", val), ("test", test))
            if split.sensitive is not None
        }
    return DataBundle(
        name=spec.name,
        train=train,
        val=val,
        test=test,
        meta=meta,
        num_classes=C,
        input_shape=tuple(int(d) for d in raw.x.shape[1:]),  # type: ignore[arg-type]
        classes=list(raw.classes),
        record=record,
        sensitive_name=raw.sensitive_name,
        sensitive_groups=tuple(raw.sensitive_groups),
    )


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std over (N, H, W); std floored so constant channels do not blow up."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)  # float32: torch sums pairwise
    std, mean = torch.std_mean(flat, dim=1, correction=0)
    return mean, std.clamp_min(1e-6)


def _validate_raw(spec: DataSpec, raw: RawData, num_classes: int) -> None:
    """Loaders are trusted but files are not: fail clearly on impossible labels."""
    if raw.has_official_test and (raw.sensitive is None) != (raw.test_sensitive is None):
        raise DataError(f"dataset {spec.name!r}: the protected attribute must be given for both "
                        "the data and its official test split, or for neither")
    labels = [raw.y] + ([raw.test_y] if raw.test_y is not None else [])
    for y in labels:
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(
                f"dataset {spec.name!r}: labels outside 0..{num_classes - 1}; the files do not "
                f"match their class list"
            )
    needs = {"flip": 2, "pair": 2, "flip2": 3}.get(spec.noise_type, 0)
    if spec.noise_rate > 0 and num_classes < needs:
        raise DataError(f"dataset {spec.name!r} has {num_classes} classes; "
                        f"{spec.noise_type} noise needs at least {needs}")
