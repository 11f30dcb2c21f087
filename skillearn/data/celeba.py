"""CelebA with a target and a protected attribute chosen by name (the thesis: Attractive vs
Male, on a 10,000-image sample).

Layout (the official "Align&Cropped Images" download):
    <root>/list_attr_celeba.txt      line 1: image count; line 2: the 40 attribute names;
                                     then "<file> v1 v2 ... v40", each v in {-1, 1}
    <root>/img_align_celeba/<file>   the aligned JPEGs
A seeded sample of CELEBA_SAMPLE images (all when fewer) is read and resized to 32 x 32 RGB;
the splits are load_data's stratified ones (the thesis: 70/15/15 of the sample).
"""

from __future__ import annotations

import os

import numpy as np

from .errors import DataError
from .images import read_images
from .raw import RawData
from .spec import DataSpec

ATTRIBUTES_FILE = "list_attr_celeba.txt"
IMAGES_DIR = "img_align_celeba"
DEFAULT_TARGET = "Attractive"
DEFAULT_SENSITIVE = "Male"
CELEBA_SAMPLE = 10_000
STAGE_SAMPLE = 102
LAYOUT = f"<root>/{ATTRIBUTES_FILE} and <root>/{IMAGES_DIR}/<image>.jpg"


def _root(spec: DataSpec) -> str:
    if spec.root is None:
        raise DataError(f"dataset 'celeba' needs data_root= a folder holding {LAYOUT}")
    return os.path.expanduser(spec.root)


def _attribute_names(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        f.readline()
        return f.readline().split()


def _chosen(spec: DataSpec) -> tuple[str, str]:
    return (spec.target_attribute or DEFAULT_TARGET,
            spec.sensitive_attribute or DEFAULT_SENSITIVE)


def check_celeba(spec: DataSpec) -> None:
    """Root, attribute file, image folder and both attribute names: read two lines only."""
    root = _root(spec)
    path = os.path.join(root, ATTRIBUTES_FILE)
    if not os.path.isfile(path):
        raise DataError(f"dataset 'celeba': {path} is missing (expected {LAYOUT})")
    if not os.path.isdir(os.path.join(root, IMAGES_DIR)):
        raise DataError(f"dataset 'celeba': no folder {IMAGES_DIR} under {spec.root!r} "
                        f"(expected {LAYOUT})")
    names = _attribute_names(path)
    target, sensitive = _chosen(spec)
    for role, name in (("target_attribute", target), ("sensitive_attribute", sensitive)):
        if name not in names:
            raise DataError(f"dataset 'celeba': {role} {name!r} is not a column of "
                            f"{ATTRIBUTES_FILE}; known: {', '.join(names) or 'none'}")
    if target == sensitive:
        raise DataError(f"dataset 'celeba': target and sensitive attribute are both {target!r}")


def load_celeba_raw(spec: DataSpec) -> RawData:
    """The sample's images, the target as class 0/1 and the protected attribute as group 0/1."""
    root = _root(spec)
    path = os.path.join(root, ATTRIBUTES_FILE)
    names = _attribute_names(path)
    target, sensitive = _chosen(spec)
    t_col, s_col = names.index(target), names.index(sensitive)
    files, rows = [], []
    with open(path, encoding="utf-8") as f:
        f.readline()
        f.readline()
        for number, line in enumerate(f, start=3):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != len(names) + 1 or any(v not in ("-1", "1") for v in parts[1:]):
                raise DataError(f"dataset 'celeba': {ATTRIBUTES_FILE} line {number} is not "
                                f"'<file>' and {len(names)} values of -1 or 1")
            files.append(parts[0])
            rows.append((parts[1 + t_col] == "1", parts[1 + s_col] == "1"))
    if len(files) < 2:
        raise DataError(f"dataset 'celeba': {ATTRIBUTES_FILE} lists {len(files)} images")
    keep = np.arange(len(files))
    if len(files) > CELEBA_SAMPLE:
        rng = np.random.default_rng([int(spec.seed), STAGE_SAMPLE])
        keep = np.sort(rng.choice(len(files), CELEBA_SAMPLE, replace=False))
    labels = np.array(rows, dtype=np.int64)[keep]
    x = read_images([os.path.join(root, IMAGES_DIR, files[i]) for i in keep], "celeba")
    return RawData(x=x, y=labels[:, 0], classes=[f"not {target}", target], scale=255.0,
                   sensitive=labels[:, 1], sensitive_name=sensitive,
                   sensitive_groups=(f"not {sensitive}", sensitive))
