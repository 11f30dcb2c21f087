"""Reading a list of image files into one uint8 array, for the attribute-table datasets."""

from __future__ import annotations

import numpy as np

from .errors import DataError

IMAGE_SIZE = 32  # as imagefolder: every image is resized to a 32 x 32 RGB square


def read_images(paths: list[str], dataset: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """(N, 3, size, size) uint8; a missing or unreadable file is a DataError naming it."""
    from PIL import Image  # lazy: only the file-backed datasets need it

    x = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((size, size), Image.BILINEAR)
        except (FileNotFoundError, OSError) as err:
            raise DataError(f"dataset {dataset!r}: cannot read image {path!r} ({err})") from None
        x[i] = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    return x
