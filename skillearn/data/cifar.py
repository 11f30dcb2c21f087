"""CIFAR-10/100 from the official "python version" files, read without running code from them.

The files are pickles, and a standard unpickler runs whatever callable a crafted file names, so
they are read with `safe_pickle.load_restricted` (numpy arrays, lists and strings only), never
with torchvision's loader. Only file existence is checked, not md5 sums, so small stand-in files
(tests, subsets) work; `check_cifar_root` reads every file this way before a sweep starts, so a
bad or hostile file is one clear DataError up front. Downloads (spec.download) use torchvision's
md5-verified archive download.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import DataError
from .raw import RawData
from .safe_pickle import load_restricted
from .spec import DataSpec

# name -> (folder torchvision expects under root, files it reads from that folder)
CIFAR_FILES: dict[str, tuple[str, list[str]]] = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"],
    ),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
}


def expected_files_text(name: str) -> str:
    folder, files = CIFAR_FILES[name]
    return f"{folder}/{{{', '.join(files)}}}"


def resolve_cifar_root(name: str, root: str) -> str:
    """Accept either the parent folder (torchvision convention) or the data folder itself."""
    folder, _ = CIFAR_FILES[name]
    root = os.path.expanduser(root)
    if os.path.basename(os.path.normpath(root)) == folder and not os.path.isdir(
        os.path.join(root, folder)
    ):
        return os.path.dirname(os.path.normpath(root))
    return root


def missing_cifar_files(name: str, root: str) -> list[str]:
    """Expected files absent under `root` (relative paths); empty when complete."""
    folder, files = CIFAR_FILES[name]
    base = os.path.join(resolve_cifar_root(name, root), folder)
    return [f"{folder}/{f}" for f in files if not os.path.isfile(os.path.join(base, f))]


def check_cifar_root(spec: DataSpec) -> None:
    """The files exist and are CIFAR pickles of the real layout (or a download can happen)."""
    hint = "pass --download to fetch them" if not spec.download else ""
    if spec.root is None:
        if spec.download:
            what = "a folder to download into"
        else:
            what = f"a folder holding {expected_files_text(spec.name)}"
        raise DataError(
            f"dataset {spec.name!r} needs root= {what}"
            + (f"; {hint} (about 170 MB)" if hint else "")
        )
    missing = missing_cifar_files(spec.name, spec.root)
    if spec.download and missing:
        return  # fetched (md5-verified) when the data is loaded
    if missing:
        raise DataError(
            f"dataset {spec.name!r}: root {spec.root!r} lacks {', '.join(missing)} "
            f"(expected {expected_files_text(spec.name)}); {hint}"
        )
    # Every file through the restricted unpickler now: a bad or hostile file is one DataError
    # before any trial starts (0.7-2.8 s for the full CIFAR-10 on a shared, loaded 2-core machine:
    # `python -m benchmarks.cifar_check`).
    read_cifar_files(spec.name, spec.root)


# name -> (train files, test file, meta file, label key, label-names key)
CIFAR_LAYOUT: dict[str, tuple[list[str], str, str, str, str]] = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
                "labels", "label_names"),
    "cifar100": (["train"], "test", "meta", "fine_labels", "fine_label_names"),
}


def _read_batch(path: str, name: str, label_key: str) -> tuple[np.ndarray, list[int]]:
    """Images (N, 3072) uint8 and labels of one CIFAR batch file, checked for the real layout."""
    batch = load_restricted(path, name)
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"dataset {name!r}: {path} has no 'data' array of uint8 rows of 3072 pixels "
            "(3x32x32); it is not a CIFAR batch"
        )
    if not isinstance(labels, list | np.ndarray) or len(labels) != len(data):
        raise DataError(
            f"dataset {name!r}: {path} has no {label_key!r} list with one label per image"
        )
    try:
        return data, [int(v) for v in labels]
    except (TypeError, ValueError):
        raise DataError(f"dataset {name!r}: {path} has non-integer {label_key!r}") from None


def _read_class_names(path: str, name: str, key: str) -> list[str]:
    names = load_restricted(path, name).get(key)
    if not isinstance(names, list) or not names:
        raise DataError(f"dataset {name!r}: {path} has no {key!r} list; it is not CIFAR metadata")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def read_cifar_files(name: str, root: str) -> RawData:
    """Every file of a CIFAR folder through the restricted unpickler (no code from data)."""
    folder, _ = CIFAR_FILES[name]
    base = os.path.join(resolve_cifar_root(name, root), folder)
    train_files, test_file, meta_file, label_key, names_key = CIFAR_LAYOUT[name]
    batches = [_read_batch(os.path.join(base, f), name, label_key) for f in train_files]
    test_x, test_y = _read_batch(os.path.join(base, test_file), name, label_key)
    classes = _read_class_names(os.path.join(base, meta_file), name, names_key)
    labels = [y for _, ys in batches for y in ys] + test_y
    if labels and not 0 <= min(labels) <= max(labels) < len(classes):
        raise DataError(
            f"dataset {name!r}: labels under {base} run outside the {len(classes)} classes of "
            f"{meta_file}"
        )

    def chw(rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32))

    return RawData(
        x=chw(np.concatenate([x for x, _ in batches])),
        y=np.asarray([y for _, ys in batches for y in ys]),
        classes=classes,
        scale=255.0,
        test_x=chw(test_x),
        test_y=np.asarray(test_y),
    )


def _download(name: str, root: str) -> None:
    """torchvision's download of the official archive, md5-verified (its loader is not used)."""
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)
    except (OSError, RuntimeError) as e:
        raise DataError(f"dataset {name!r}: download into {root!r} failed ({e})") from e


def _load_cifar(spec: DataSpec, name: str) -> RawData:
    assert spec.root is not None  # check_cifar_root ran first
    root = resolve_cifar_root(name, spec.root)
    if spec.download and missing_cifar_files(name, root):
        _download(name, root)
    missing = missing_cifar_files(name, root)
    if missing:
        raise DataError(
            f"dataset {name!r}: cannot read {expected_files_text(name)} under {root!r} "
            f"(missing {', '.join(missing)})"
        )
    return read_cifar_files(name, root)


def load_cifar10_raw(spec: DataSpec) -> RawData:
    """50k train / 10k official test, 3x32x32, 10 classes."""
    return _load_cifar(spec, "cifar10")


def load_cifar100_raw(spec: DataSpec) -> RawData:
    """50k train / 10k official test, 3x32x32, 100 fine classes."""
    return _load_cifar(spec, "cifar100")
