"""Any folder of class subfolders of images, via torchvision's ImageFolder, resized to a square."""

from __future__ import annotations

import os

import numpy as np

from .errors import DataError
from .raw import RawData
from .spec import DataSpec

IMAGE_SIZE = 32  # every image is resized to IMAGE_SIZE x IMAGE_SIZE RGB so they stack
LAYOUT = "<root>/<class_name>/<image>.png|jpg|..."


def check_imagefolder_root(spec: DataSpec) -> None:
    """Cheap check that root is a folder with at least one class subfolder."""
    if spec.root is None:
        raise DataError(f"dataset 'imagefolder' needs root= a folder laid out as {LAYOUT}")
    root = os.path.expanduser(spec.root)
    if not os.path.isdir(root):
        raise DataError(f"dataset 'imagefolder': root {spec.root!r} is not a folder ({LAYOUT})")
    if not any(e.is_dir() for e in os.scandir(root)):
        raise DataError(
            f"dataset 'imagefolder': root {spec.root!r} has no class subfolders (expected {LAYOUT})"
        )


def load_imagefolder_raw(spec: DataSpec, size: int = IMAGE_SIZE) -> RawData:
    """Reads every image once into a uint8 (N, 3, size, size) array; index = ImageFolder order."""
    from torchvision import datasets, transforms  # lazy: torchvision import is slow

    assert spec.root is not None  # check_imagefolder_root ran first
    try:
        ds = datasets.ImageFolder(
            os.path.expanduser(spec.root), transform=transforms.Resize((size, size))
        )
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"dataset 'imagefolder': {e} (expected {LAYOUT})") from e
    x = np.empty((len(ds), 3, size, size), dtype=np.uint8)
    for i in range(len(ds)):
        img, _ = ds[i]  # ImageFolder's loader already converts to RGB
        x[i] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    return RawData(x=x, y=np.asarray(ds.targets), classes=list(ds.classes), scale=255.0)
