"""Dataset registry: adding a dataset is one loader function plus one line in LOADERS.

Datasets that read files may also add a cheap root check to ROOT_CHECKS, which check_data_spec
runs before any heavy work so the CLI can fail fast with a useful message.
"""

from __future__ import annotations

from collections.abc import Callable

from .celeba import check_celeba, load_celeba_raw
from .cifar import check_cifar_root, load_cifar10_raw, load_cifar100_raw
from .digits import load_digits_raw
from .digits_groups import check_digits_groups, load_digits_groups_raw
from .imagefolder import check_imagefolder_root, load_imagefolder_raw
from .isic import check_isic, load_isic_raw
from .raw import RawData
from .spec import DataSpec
from .synthetic import load_synthetic_raw

Loader = Callable[[DataSpec], RawData]

LOADERS: dict[str, Loader] = {
    "digits": load_digits_raw,
    "synthetic": load_synthetic_raw,
    "cifar10": load_cifar10_raw,
    "cifar100": load_cifar100_raw,
    "imagefolder": load_imagefolder_raw,
    "digits_groups": load_digits_groups_raw,
    "celeba": load_celeba_raw,
    "isic2018": load_isic_raw,
}

ROOT_CHECKS: dict[str, Callable[[DataSpec], None]] = {
    "cifar10": check_cifar_root,
    "cifar100": check_cifar_root,
    "imagefolder": check_imagefolder_root,
}

# Datasets with a protected attribute: checks of target/sensitive attribute names (and, for the
# file-backed ones, of the files) run before any data is read.
ATTRIBUTE_CHECKS: dict[str, Callable[[DataSpec], None]] = {
    "digits_groups": check_digits_groups,
    "celeba": check_celeba,
    "isic2018": check_isic,
}

# Datasets that ship an official test split (test_fraction does not apply to them).
OFFICIAL_TEST = frozenset({"cifar10", "cifar100"})


def available_datasets() -> list[str]:
    """Registered dataset names, sorted (for CLI choices and error messages)."""
    return sorted(LOADERS)
