"""Datasets as in-memory tensors: seeded splits, label noise and class imbalance on train only.

`load_data(DataSpec(...))` gives a DataBundle whose `record` says exactly what was done, so a
run's data can be logged and reproduced. torchvision is imported only by the CIFAR/ImageFolder
loaders, keeping `import skillearn.data` fast.
"""

from .batches import BatchStream, iterate_once
from .bundle import DataBundle, Split
from .check import check_data_spec
from .errors import DataError
from .load import load_data
from .registry import LOADERS, available_datasets
from .spec import DataSpec, data_spec

__all__ = [
    "LOADERS",
    "BatchStream",
    "DataBundle",
    "DataError",
    "DataSpec",
    "Split",
    "available_datasets",
    "check_data_spec",
    "data_spec",
    "iterate_once",
    "load_data",
]
