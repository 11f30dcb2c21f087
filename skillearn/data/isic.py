"""ISIC-2018 Task 3 (HAM10000) with its metadata's sex or age as the protected attribute.

Layout (the official training download plus the HAM10000 metadata):
    <root>/HAM10000_metadata.csv             columns lesion_id,image_id,dx,dx_type,age,sex,...
    <root>/ISIC2018_Task3_Training_Input/<image_id>.jpg
Target: `dx`, the 7 diagnoses. Protected attribute: `sex` (female / male; rows with another
value such as "unknown" are left out and counted) or `age` (under 60 / 60 and over; rows with
no age are left out). Images are resized to 32 x 32 RGB; splits are load_data's.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from .errors import DataError
from .images import read_images
from .raw import RawData
from .spec import DataSpec

METADATA_FILE = "HAM10000_metadata.csv"
IMAGES_DIR = "ISIC2018_Task3_Training_Input"
TARGET = "dx"
SENSITIVE = ("sex", "age")
AGE_CUT = 60.0
LAYOUT = f"<root>/{METADATA_FILE} and <root>/{IMAGES_DIR}/<image_id>.jpg"


def _root(spec: DataSpec) -> str:
    if spec.root is None:
        raise DataError(f"dataset 'isic2018' needs data_root= a folder holding {LAYOUT}")
    return os.path.expanduser(spec.root)


def _header(path: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return next(csv.reader(f), [])


def check_isic(spec: DataSpec) -> None:
    """Root, metadata header and image folder; the attribute names are checked by name."""
    if spec.target_attribute not in ("", TARGET):
        raise DataError(f"dataset 'isic2018': target_attribute must be {TARGET!r}, got "
                        f"{spec.target_attribute!r}")
    if spec.sensitive_attribute not in ("", *SENSITIVE):
        raise DataError(f"dataset 'isic2018': sensitive_attribute must be one of "
                        f"{', '.join(SENSITIVE)}, got {spec.sensitive_attribute!r}")
    root = _root(spec)
    path = os.path.join(root, METADATA_FILE)
    if not os.path.isfile(path):
        raise DataError(f"dataset 'isic2018': {path} is missing (expected {LAYOUT})")
    if not os.path.isdir(os.path.join(root, IMAGES_DIR)):
        raise DataError(f"dataset 'isic2018': no folder {IMAGES_DIR} under {spec.root!r} "
                        f"(expected {LAYOUT})")
    missing = {"image_id", TARGET, *SENSITIVE} - set(_header(path))
    if missing:
        raise DataError(f"dataset 'isic2018': {METADATA_FILE} lacks the column(s) "
                        f"{', '.join(sorted(missing))}")


def _group(attribute: str, value: str) -> int | None:
    value = value.strip().lower()
    if attribute == "sex":
        return {"female": 0, "male": 1}.get(value)
    try:
        return int(float(value) >= AGE_CUT)
    except ValueError:
        return None


def load_isic_raw(spec: DataSpec) -> RawData:
    """Images with a known attribute value; diagnoses sorted by name are the classes."""
    root = _root(spec)
    attribute = spec.sensitive_attribute or SENSITIVE[0]
    with open(os.path.join(root, METADATA_FILE), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [(r["image_id"], r[TARGET], g) for r in rows
            if (g := _group(attribute, r[attribute] or "")) is not None]
    if len(kept) < 2:
        raise DataError(f"dataset 'isic2018': {len(kept)} rows of {METADATA_FILE} have a "
                        f"usable {attribute!r}")
    classes = sorted({dx for _, dx, _ in kept})
    x = read_images([os.path.join(root, IMAGES_DIR, f"{i}.jpg") for i, _, _ in kept], "isic2018")
    groups = ("female", "male") if attribute == "sex" else (f"under {AGE_CUT:g}",
                                                            f"{AGE_CUT:g} and over")
    return RawData(x=x, y=np.array([classes.index(dx) for _, dx, _ in kept]), classes=classes,
                   scale=255.0, sensitive=np.array([g for _, _, g in kept]),
                   sensitive_name=attribute, sensitive_groups=groups)
