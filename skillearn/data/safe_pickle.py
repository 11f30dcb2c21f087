"""Read the CIFAR "python version" pickles without letting a file run code.

A pickle names the callables it wants called (`GLOBAL module name`); the standard unpickler
imports and calls whatever it is told, so a crafted `data_batch_1` in `--data-root` runs code in
the driver and in every Ray worker. The real CIFAR files only ever name numpy's array
reconstruction (an ndarray and its dtype); everything else they hold is dicts, lists, ints and
strings, which need no callable at all. `load_restricted` admits exactly those few numpy names
and refuses any other with a DataError, before anything is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

# (module, name) a CIFAR pickle may name -> the object it stands for. The real files (written by
# Python 2's numpy) name numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype;
# stand-in files written by a newer numpy name numpy._core instead, and with protocol 5
# `_frombuffer`; a list of numpy integers needs `scalar`; Python 3 at protocol <= 2 writes bytes
# as `_codecs.encode(text, 'latin1')`, admitted as exactly that. None of these can reach code
# outside numpy's array construction.


def _allowed() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray, numeric

    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray,
                                         ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    table[("_codecs", "encode")] = _latin1_bytes
    return table


def _latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode` as Python 3 pickles bytes at protocol <= 2 (`encode(str, 'latin1')`),
    admitted for that use only: no other codec, no other argument type."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is only admitted for latin1 bytes")
    return text.encode("latin1")


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a callable outside the CIFAR format (it could run code)."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


class CifarUnpickler(pickle.Unpickler):
    """An Unpickler whose `find_class` only admits numpy's array reconstruction."""

    _table: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if CifarUnpickler._table is None:
            CifarUnpickler._table = _allowed()
        found = CifarUnpickler._table.get((module, name))
        if found is None:
            raise RefusedGlobal(module, name)
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not part of the CIFAR format")


def load_restricted(path: str | Path, dataset: str) -> dict[str, Any]:
    """The dict pickled in `path` (keys as str), or one DataError naming the file and why.

    Text in the files is decoded as latin-1, as torchvision does for Python 2 pickles.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        reason = err.strerror or err
        raise DataError(f"dataset {dataset!r}: cannot read {path} ({reason})") from None
    try:
        obj = CifarUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedGlobal as err:
        raise DataError(
            f"dataset {dataset!r}: {path} is not a CIFAR file: it names {err.qualified}, which "
            "the CIFAR format never holds (not loaded: unpickling it could run code); replace "
            "the file with the original from the CIFAR archive"
        ) from None
    except Exception as err:  # truncated, not a pickle, arguments numpy refuses, ...
        message = " ".join(str(err).split())[:200] or type(err).__name__
        raise DataError(
            f"dataset {dataset!r}: {path} is not a CIFAR pickle ({message}); replace it with "
            "the original from the CIFAR archive"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(
            f"dataset {dataset!r}: {path} holds a {type(obj).__name__}, not the dict of a CIFAR "
            "file"
        )
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}
