"""Tests for skillearn.data: splits, corruption, registry loaders and batch streaming (CPU only)."""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skillearn.data import (
    BatchStream,
    DataError,
    DataSpec,
    Split,
    available_datasets,
    check_data_spec,
    iterate_once,
    load_data,
)
from skillearn.data.corruption import long_tail_counts

DIGITS_N, C = 1797, 10


def ids(split: Split) -> set[int]:
    return set(split.index.tolist())


def binomial_tol(p: float, n: int, z: float = 4.5) -> float:
    """Generous (z-sigma) tolerance on an observed fraction of n Bernoulli(p) trials."""
    return z * math.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def digits():
    return load_data(DataSpec())


# ---------------------------------------------------------------- digits splits


def test_digits_default_sizes_add_up_and_are_disjoint(digits):
    b = digits
    assert (len(b.train), len(b.val), len(b.test)) == (719, 719, 359)
    assert len(b.train) + len(b.val) + len(b.test) == DIGITS_N
    assert b.meta is None
    tr, va, te = ids(b.train), ids(b.val), ids(b.test)
    assert len(tr) == len(b.train) and len(va) == len(b.val) and len(te) == len(b.test)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == set(range(DIGITS_N))
    assert b.num_classes == C and b.input_shape == (1, 8, 8) and len(b.classes) == C
    assert b.record["sizes"] == {"train": 719, "val": 719, "test": 359, "meta": 0}


def test_digits_tensors_types_and_normalisation(digits):
    for s in (digits.train, digits.val, digits.test):
        assert s.x.dtype == torch.float32 and s.x.shape[1:] == (1, 8, 8)
        assert s.y.dtype == s.clean_y.dtype == s.index.dtype == torch.int64
        assert torch.equal(s.y, s.clean_y) and not s.is_noisy.any()
    x = digits.train.x
    assert abs(x.mean().item()) < 1e-4 and abs(x.std(unbiased=False).item() - 1) < 1e-4
    # normalisation uses train statistics: un-normalising val recovers the raw pixels / 16
    from sklearn.datasets import load_digits

    raw = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 16
    mean, std = digits.record["norm_mean"][0], digits.record["norm_std"][0]
    torch.testing.assert_close(digits.val.x * std + mean, raw[digits.val.index], atol=1e-5, rtol=0)
    assert torch.equal(digits.val.y, torch.as_tensor(load_digits().target)[digits.val.index])


def test_digits_splits_are_stratified(digits):
    from sklearn.datasets import load_digits

    total = np.bincount(load_digits().target, minlength=C)
    for split, frac in ((digits.test, 359 / DIGITS_N), (digits.val, 719 / DIGITS_N)):
        counts = np.bincount(split.y.numpy(), minlength=C)
        assert np.all(np.abs(counts - total * frac) <= 1.0 + 1e-9), counts


def test_same_seed_same_split_different_seed_different_split():
    a, b = load_data(DataSpec(seed=3)), load_data(DataSpec(seed=3))
    c = load_data(DataSpec(seed=4))
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(a, name).index, getattr(b, name).index)
        assert torch.equal(getattr(a, name).x, getattr(b, name).x)
    assert ids(a.test) != ids(c.test) and ids(a.train) != ids(c.train)


def test_limit_caps_the_train_pool_stratified():
    b = load_data(DataSpec(name="synthetic", limit=100))
    assert len(b.train) + len(b.val) == 100 and len(b.test) == 120
    assert np.bincount(b.train.y.numpy(), minlength=C).tolist() == [5] * C
    assert b.record["pool_size_before_limit"] == 480


# ---------------------------------------------------------------- label noise


@pytest.mark.parametrize("rate", [0.2, 0.45])
def test_flip_noise_rate_and_map(rate):
    clean = load_data(DataSpec())
    b = load_data(DataSpec(noise_rate=rate, noise_type="flip"))
    flip_map = b.record["flip_map"]
    assert len(flip_map) == C and all(flip_map[c] != c for c in range(C))
    n = len(b.train)
    frac = b.train.is_noisy.float().mean().item()
    assert abs(frac - rate) <= binomial_tol(rate, n)
    assert b.record["actual_noise_rate"] == pytest.approx(frac)
    assert b.record["noise_type"] == "flip"
    noisy = b.train.is_noisy
    expected = torch.tensor(flip_map)[b.train.clean_y[noisy]]
    assert torch.equal(b.train.y[noisy], expected)
    # noise changes labels only: same examples, same clean labels, clean val/test
    assert torch.equal(b.train.index, clean.train.index)
    assert torch.equal(b.train.clean_y, clean.train.y)
    for s in (b.val, b.test):
        assert not s.is_noisy.any()
    assert torch.equal(b.val.y, clean.val.y) and torch.equal(b.test.y, clean.test.y)


def test_uniform_noise_changes_rate_times_c_minus_1_over_c():
    rate = 0.9  # high, so rate*(C-1)/C = 0.81 is well outside the tolerance around 0.9
    b = load_data(DataSpec(noise_rate=rate, noise_type="uniform", val_fraction=0.2))
    n = len(b.train)
    expected = rate * (C - 1) / C
    frac = b.train.is_noisy.float().mean().item()
    assert abs(frac - expected) <= binomial_tol(expected, n)
    assert b.record["actual_noise_rate"] == pytest.approx(frac)
    assert b.record["flip_map"] is None
    # noisy labels spread over all other classes rather than one fixed target
    noisy = b.train.is_noisy
    pairs = zip(b.train.clean_y[noisy].tolist(), b.train.y[noisy].tolist(), strict=True)
    targets = set(pairs)
    assert len(targets) > 3 * C
    assert not b.val.is_noisy.any() and not b.test.is_noisy.any()


def test_flip2_noise_hits_the_rate_with_two_targets_per_class():
    rate = 0.4
    b = load_data(DataSpec(noise_rate=rate, noise_type="flip2", val_fraction=0.1))
    targets = np.array(b.record["flip2_map"])
    assert targets.shape == (C, 2)
    assert all(len({c, *targets[c]}) == 3 for c in range(C))  # two distinct targets != c
    n = len(b.train)
    frac = b.train.is_noisy.float().mean().item()
    assert abs(frac - rate) <= binomial_tol(rate, n)
    noisy = b.train.is_noisy
    clean_y, y = b.train.clean_y[noisy].numpy(), b.train.y[noisy].numpy()
    assert np.all((y == targets[clean_y, 0]) | (y == targets[clean_y, 1]))
    # each target gets about half of the corrupted labels (p/2 each)
    first = float(np.mean(y == targets[clean_y, 0]))
    assert abs(first - 0.5) <= binomial_tol(0.5, len(y))
    for c in range(C):  # both targets are used in every class
        assert set(y[clean_y == c].tolist()) == set(targets[c].tolist())


def test_pair_noise_is_a_fixed_permutation():
    rate = 0.3
    a = load_data(DataSpec(noise_rate=rate, noise_type="pair", seed=0))
    b = load_data(DataSpec(noise_rate=rate, noise_type="pair", seed=1))
    assert a.record["flip_map"] == b.record["flip_map"] == [(c + 1) % C for c in range(C)]
    frac = a.train.is_noisy.float().mean().item()
    assert abs(frac - rate) <= binomial_tol(rate, len(a.train))
    noisy = a.train.is_noisy
    assert torch.equal(a.train.y[noisy], (a.train.clean_y[noisy] + 1) % C)


def test_val_fraction_sets_the_validation_share():
    b = load_data(DataSpec(val_fraction=0.1, meta_per_class=10))
    pool = DIGITS_N - 359
    assert len(b.val) == round(0.1 * pool)
    assert len(b.train) == pool - len(b.val) - 10 * C
    with pytest.raises(DataError, match="val_fraction"):
        check_data_spec(DataSpec(val_fraction=1.5))


def test_noise_is_seeded():
    a = load_data(DataSpec(noise_rate=0.3, noise_type="flip", seed=1))
    b = load_data(DataSpec(noise_rate=0.3, noise_type="flip", seed=1))
    c = load_data(DataSpec(noise_rate=0.3, noise_type="uniform", seed=1))
    assert torch.equal(a.train.y, b.train.y) and a.record["flip_map"] == b.record["flip_map"]
    assert not torch.equal(a.train.y, c.train.y)


# ---------------------------------------------------------------- imbalance


@pytest.mark.parametrize("factor", [10.0, 100.0])
def test_imbalance_follows_exponential_profile(factor):
    b = load_data(DataSpec(imbalance=factor))
    counts = np.bincount(b.train.clean_y.numpy(), minlength=C).tolist()
    n_max = min(b.record["train_class_counts_before_imbalance"])
    profile = [round(n_max * (1 / factor) ** (c / (C - 1))) for c in range(C)]
    assert counts == profile == long_tail_counts(n_max, C, factor)
    assert counts == b.record["train_class_counts"]
    assert counts[-1] == max(1, round(counts[0] / factor))
    assert counts[0] / counts[-1] == pytest.approx(factor, rel=1 / counts[-1])
    # val/test are untouched by the imbalance
    assert len(b.val) == 719 and len(b.test) == 359
    assert ids(b.train) < ids(load_data(DataSpec()).train)


def test_imbalance_then_noise_counts_use_clean_labels():
    plain = load_data(DataSpec(imbalance=10.0))
    b = load_data(DataSpec(imbalance=10.0, noise_rate=0.4, noise_type="uniform"))
    assert torch.equal(b.train.index, plain.train.index)  # same subsample, noise applied after
    clean_counts = np.bincount(b.train.clean_y.numpy(), minlength=C).tolist()
    assert clean_counts == b.record["train_class_counts"] == plain.record["train_class_counts"]
    assert np.bincount(b.train.y.numpy(), minlength=C).tolist() != clean_counts
    assert b.train.is_noisy.any()


# ---------------------------------------------------------------- meta set


def test_meta_set_is_clean_balanced_and_disjoint():
    b = load_data(DataSpec(meta_per_class=5, noise_rate=0.4, noise_type="flip", imbalance=10))
    assert b.meta is not None and len(b.meta) == 5 * C
    assert np.bincount(b.meta.y.numpy(), minlength=C).tolist() == [5] * C
    assert not b.meta.is_noisy.any()
    assert not (ids(b.meta) & (ids(b.train) | ids(b.val) | ids(b.test)))
    # carved from the training part (MW-Net's code), so validation keeps its size
    assert len(b.val) == 719
    plain = load_data(DataSpec(meta_per_class=5))
    assert len(plain.train) == 719 - 5 * C
    assert ids(plain.meta) | ids(plain.train) == ids(load_data(DataSpec()).train)
    assert b.record["sizes"]["meta"] == 5 * C
    with pytest.raises(DataError, match="meta_per_class"):
        load_data(DataSpec(meta_per_class=500))


def test_record_is_json_serialisable():
    b = load_data(DataSpec(name="synthetic", noise_rate=0.2, noise_type="flip", imbalance=5))
    rec = json.loads(json.dumps(b.record))
    for key in ("seed", "noise_type", "noise_rate", "actual_noise_rate", "flip_map", "sizes"):
        assert key in rec
    assert rec["train_class_counts"] == np.bincount(b.train.clean_y.numpy(), minlength=C).tolist()


# ---------------------------------------------------------------- check_data_spec


def test_available_datasets():
    assert {"digits", "synthetic", "cifar10", "cifar100", "imagefolder"} <= set(
        available_datasets()
    )


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DataError) as e:
        check_data_spec(DataSpec(name="mnist"))
    for name in available_datasets():
        assert name in str(e.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"noise_rate": 1.0}, "noise_rate"),
        ({"noise_rate": -0.1}, "noise_rate"),
        ({"noise_type": "symmetric"}, "noise_type"),
        ({"imbalance": 0.5}, "imbalance"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"test_fraction": 1.5}, "test_fraction"),
        ({"meta_per_class": -1}, "meta_per_class"),
        ({"limit": 0}, "limit"),
    ],
)
def test_bad_specs_are_rejected(kwargs, match):
    with pytest.raises(DataError, match=match):
        check_data_spec(DataSpec(**kwargs))
    with pytest.raises(DataError, match=match):
        load_data(DataSpec(**kwargs))


def test_valid_specs_pass():
    check_data_spec(DataSpec())
    check_data_spec(DataSpec(name="synthetic", noise_rate=0.0, imbalance=1.0))
    check_data_spec(DataSpec(name="cifar10", root="/nonexistent", download=True))


def test_missing_cifar_root_names_expected_files(tmp_path):
    with pytest.raises(DataError) as e:
        check_data_spec(DataSpec(name="cifar10", root=str(tmp_path / "nope")))
    msg = str(e.value)
    for f in ("cifar-10-batches-py", "data_batch_1", "data_batch_5", "test_batch", "batches.meta"):
        assert f in msg
    assert "--download" in msg and str(tmp_path / "nope") in msg

    with pytest.raises(DataError, match="cifar-100-python.*--download"):
        check_data_spec(DataSpec(name="cifar100"))

    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_data(DataSpec(name="cifar100", root=str(tmp_path)))
    lacking = str(e.value).split("expected")[0]  # the part listing what is missing
    assert "cifar-100-python/test" in lacking and "cifar-100-python/meta" in lacking
    assert "cifar-100-python/train" not in lacking


def test_missing_imagefolder_root(tmp_path):
    with pytest.raises(DataError, match="imagefolder"):
        check_data_spec(DataSpec(name="imagefolder"))
    with pytest.raises(DataError, match="class subfolders"):
        check_data_spec(DataSpec(name="imagefolder", root=str(tmp_path)))


# ---------------------------------------------------------------- CIFAR from fake files


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python-2 str opcodes, exactly like the real CIFAR pickles.

    Such files load with b'data' keys under encoding='bytes' and 'data' under 'latin1'
    (which torchvision uses), so the fake files exercise the real reading code.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def _dump(path: Path, obj: dict) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _write_cifar10(root: Path, per_batch: int = 20, n_test: int = 30):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    names = [f"name{c}" for c in range(10)]
    xs, ys = [], []
    for i in range(1, 6):
        x = _images(per_batch, i)
        y = [(j + i) % 10 for j in range(per_batch)]
        _dump(base / f"data_batch_{i}", {b"batch_label": b"b", b"data": x, b"labels": y})
        xs.append(x)
        ys += y
    tx, ty = _images(n_test, 99), [j % 10 for j in range(n_test)]
    _dump(base / "test_batch", {b"batch_label": b"t", b"data": tx, b"labels": ty})
    _dump(base / "batches.meta", {b"label_names": [s.encode() for s in names]})
    return np.concatenate(xs), np.array(ys), tx, np.array(ty), names


def _write_cifar100(root: Path, n_train: int = 200, n_test: int = 100):
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    names = [f"fine{c}" for c in range(100)]
    x, y = _images(n_train, 1), [j % 100 for j in range(n_train)]
    tx, ty = _images(n_test, 2), [(3 * j) % 100 for j in range(n_test)]
    for fname, xx, yy in (("train", x, y), ("test", tx, ty)):
        _dump(base / fname, {b"data": xx, b"fine_labels": yy, b"coarse_labels": [0] * len(yy)})
    _dump(base / "meta", {b"fine_label_names": [s.encode() for s in names]})
    return x, np.array(y), tx, np.array(ty), names


def _unnormalise(b, split: Split) -> torch.Tensor:
    mean = torch.tensor(b.record["norm_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(b.record["norm_std"]).view(1, 3, 1, 1)
    return split.x * std + mean


def _assert_pixels(b, split: Split, rows: np.ndarray, offset: int = 0) -> None:
    expected = torch.from_numpy(rows[split.index.numpy() - offset].reshape(-1, 3, 32, 32)) / 255
    torch.testing.assert_close(_unnormalise(b, split), expected.float(), atol=1e-4, rtol=0)


def test_fake_cifar_files_have_the_real_pickle_layout(tmp_path):
    _write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    assert set(d) == {b"batch_label", b"data", b"labels"}
    assert d[b"data"].dtype == np.uint8 and d[b"data"].shape == (20, 3072)


def test_cifar10_loads_from_files(tmp_path):
    x, y, tx, ty, names = _write_cifar10(tmp_path)
    check_data_spec(DataSpec(name="cifar10", root=str(tmp_path)))
    b = load_data(DataSpec(name="cifar10", root=str(tmp_path), val_fraction=0.3))
    assert b.num_classes == 10 and b.classes == names and b.input_shape == (3, 32, 32)
    assert (len(b.train), len(b.val), len(b.test)) == (70, 30, 30)
    assert b.train.x.shape == (70, 3, 32, 32) and b.train.x.dtype == torch.float32
    assert not (ids(b.train) & ids(b.val)) and ids(b.train) | ids(b.val) == set(range(100))
    assert ids(b.test) == set(range(100, 130))  # official test ids come after the train array
    assert torch.equal(b.train.y, torch.from_numpy(y)[b.train.index])
    assert torch.equal(b.test.y, torch.from_numpy(ty))
    assert b.record["official_test"] is True
    _assert_pixels(b, b.train, x)
    _assert_pixels(b, b.test, tx, offset=100)
    # passing the data folder itself also works
    b2 = load_data(DataSpec(name="cifar10", root=str(tmp_path / "cifar-10-batches-py")))
    assert len(b2.test) == 30


def test_cifar100_loads_from_files(tmp_path):
    x, y, tx, ty, names = _write_cifar100(tmp_path)
    b = load_data(DataSpec(name="cifar100", root=str(tmp_path), noise_rate=0.2, noise_type="flip"))
    assert b.num_classes == 100 and b.classes == names
    assert (len(b.train), len(b.val), len(b.test)) == (100, 100, 100)
    assert b.test.x.shape == (100, 3, 32, 32)
    assert torch.equal(b.train.clean_y, torch.from_numpy(y)[b.train.index])
    assert torch.equal(b.val.y, torch.from_numpy(y)[b.val.index])
    assert torch.equal(b.test.y, torch.from_numpy(ty))
    assert np.bincount(b.train.clean_y.numpy(), minlength=100).tolist() == [1] * 100
    _assert_pixels(b, b.val, x)


# ---------------------------------------------------------------- ImageFolder


def test_imagefolder_loads_and_resizes(tmp_path):
    from PIL import Image

    colours = {"cat": (255, 0, 0), "dog": (0, 255, 0), "eel": (0, 0, 255)}
    for k, (name, rgb) in enumerate(colours.items()):
        (tmp_path / name).mkdir()
        for i in range(4):
            img = Image.new("RGB", (10 + i, 12 + k), rgb)
            (img.convert("L") if i == 3 else img).save(tmp_path / name / f"{i}.png")
    b = load_data(DataSpec(name="imagefolder", root=str(tmp_path), test_fraction=0.25))
    assert b.classes == ["cat", "dog", "eel"] and b.num_classes == 3
    assert b.input_shape == (3, 32, 32) and b.train.x.shape[1:] == (3, 32, 32)
    assert (len(b.train), len(b.val), len(b.test)) == (4, 5, 3)
    assert np.bincount(b.test.y.numpy(), minlength=3).tolist() == [1, 1, 1]
    assert set().union(ids(b.train), ids(b.val), ids(b.test)) == set(range(12))
    # each RGB image's dominant channel is its class colour
    for s in (b.train, b.val, b.test):
        raw = _unnormalise(b, s)
        for img, label, idx in zip(raw, s.y.tolist(), s.index.tolist(), strict=True):
            if idx % 4 != 3:  # skip the greyscale ones
                assert img.mean(dim=(1, 2)).argmax().item() == label


# ---------------------------------------------------------------- batches


def _tiny_split(n: int = 10) -> Split:
    y = torch.arange(n) % 3
    return Split(x=torch.randn(n, 1, 4, 4), y=y, clean_y=y.clone(), index=torch.arange(n) + 100)


def test_batch_stream_shapes_and_coverage(digits):
    stream = BatchStream(digits.train, batch_size=64, seed=0)
    assert stream.steps_per_epoch == 719 // 64
    it = iter(stream)
    seen = []
    for _ in range(stream.steps_per_epoch):
        x, y, idx = next(it)
        assert x.shape == (64, 1, 8, 8) and y.shape == idx.shape == (64,)
        assert x.device.type == "cpu" and y.dtype == torch.int64
        seen += idx.tolist()
    assert len(set(seen)) == len(seen) == 64 * (719 // 64)

    full = BatchStream(_tiny_split(10), batch_size=4, seed=1, drop_last=False)
    assert full.steps_per_epoch == 3
    it = iter(full)
    passes = []
    for _ in range(3):
        batch = [next(it) for _ in range(3)]
        assert [len(b[1]) for b in batch] == [4, 4, 2]
        order = torch.cat([b[2] for b in batch]).tolist()
        assert sorted(order) == list(range(100, 110))  # every example exactly once per pass
        passes.append(order)
    assert passes[0] != passes[1] or passes[1] != passes[2]  # reshuffled each pass


def test_batch_stream_pairs_and_seeding():
    split = _tiny_split(10)
    a = [b for _, b in zip(range(7), BatchStream(split, 3, seed=5), strict=False)]
    b = [b for _, b in zip(range(7), BatchStream(split, 3, seed=5), strict=False)]
    c = [b for _, b in zip(range(7), BatchStream(split, 3, seed=6), strict=False)]
    assert all(torch.equal(p[2], q[2]) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p[2], q[2]) for p, q in zip(a, c, strict=True))
    for x, y, idx in a:  # x, y, index stay aligned
        pos = idx - 100
        assert torch.equal(x, split.x[pos]) and torch.equal(y, split.y[pos])
    big = BatchStream(split, batch_size=64, seed=0)  # clamped to the split size
    assert big.steps_per_epoch == 1 and len(next(iter(big))[0]) == 10


def test_augmented_stream_is_seeded_and_keeps_the_order():
    from skillearn.data.augment import training_augmentation

    n = 12
    y = torch.arange(n) % 3
    split = Split(x=torch.randn(n, 3, 32, 32), y=y, clean_y=y.clone(), index=torch.arange(n))
    augment = training_augmentation("auto", (3, 32, 32))
    assert augment is not None and training_augmentation("auto", (1, 8, 8)) is None
    assert training_augmentation("off", (3, 32, 32)) is None

    def batches(seed, aug=augment):
        return [b for _, b in zip(range(5), BatchStream(split, 4, seed=seed, augment=aug),
                                  strict=False)]

    a, b, c, plain = batches(5), batches(5), batches(6), batches(5, None)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b, strict=True))  # same seed
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c, strict=True))  # other seed
    # augmentation changes the images, never which examples come in which order
    assert all(torch.equal(p[2], q[2]) for p, q in zip(a, plain, strict=True))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, plain, strict=True))


def test_iterate_once_in_order(digits):
    batches = list(iterate_once(digits.test, 100, "cpu"))
    assert [len(y) for _, y in batches] == [100, 100, 100, 59]
    assert torch.equal(torch.cat([x for x, _ in batches]), digits.test.x)
    assert torch.equal(torch.cat([y for _, y in batches]), digits.test.y)


def test_import_is_light():
    code = "import sys, skillearn.data; print('torchvision' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
