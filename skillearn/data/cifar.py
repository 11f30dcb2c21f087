"""CIFAR-10/100 through torchvision's own loaders, with md5 checks relaxed to file existence.

torchvision verifies md5 sums of every file on load; that makes small stand-in files (tests,
subsets) impossible to use, and re-hashes 180 MB on every run. We keep torchvision's reading code
and only swap the checksums for existence checks. Downloads (spec.download) still verify the
archive's md5.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import DataError
from .raw import RawData
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
    """Cheap check that the files torchvision will read exist (or that a download can happen)."""
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
    if spec.download:
        return
    missing = missing_cifar_files(spec.name, spec.root)
    if missing:
        raise DataError(
            f"dataset {spec.name!r}: root {spec.root!r} lacks {', '.join(missing)} "
            f"(expected {expected_files_text(spec.name)}); {hint}"
        )


def _lenient(cls: Any) -> Any:
    """Subclass of a torchvision CIFAR class whose integrity checks only test file existence."""
    return type(
        f"Lenient{cls.__name__}",
        (cls,),
        {
            "train_list": [[f, None] for f, _ in cls.train_list],
            "test_list": [[f, None] for f, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


def _load_cifar(spec: DataSpec, name: str) -> RawData:
    from torchvision import datasets  # lazy: torchvision import is slow

    cls = _lenient(datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100)
    assert spec.root is not None  # check_cifar_root ran first
    root = resolve_cifar_root(name, spec.root)
    try:
        train = cls(root, train=True, download=spec.download)
        test = cls(root, train=False, download=False)
    except RuntimeError as e:  # torchvision's "not found or corrupted"
        raise DataError(
            f"dataset {name!r}: cannot read {expected_files_text(name)} under {root!r} ({e})"
        ) from e
    except (OSError, EOFError, KeyError, ValueError) as e:
        raise DataError(
            f"dataset {name!r}: files under {root!r} are not CIFAR pickles ({e})"
        ) from e

    def chw(data: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(data, dtype=np.uint8).transpose(0, 3, 1, 2))

    return RawData(
        x=chw(train.data),
        y=np.asarray(train.targets),
        classes=[str(c) for c in train.classes],
        scale=255.0,
        test_x=chw(test.data),
        test_y=np.asarray(test.targets),
    )


def load_cifar10_raw(spec: DataSpec) -> RawData:
    """50k train / 10k official test, 3x32x32, 10 classes."""
    return _load_cifar(spec, "cifar10")


def load_cifar100_raw(spec: DataSpec) -> RawData:
    """50k train / 10k official test, 3x32x32, 100 fine classes."""
    return _load_cifar(spec, "cifar100")
