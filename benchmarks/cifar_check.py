"""What the up-front CIFAR check costs: every file read through the restricted unpickler.

`check_data_spec` reads all six CIFAR-10 files (50k + 10k images, 180 MB) with
`skillearn.data.safe_pickle` before a sweep starts, so a crafted pickle is refused before Ray
runs. This times that check on full-size stand-in files in the real (Python 2 pickle) layout.

    python -m benchmarks.cifar_check --repeats 3
"""

from __future__ import annotations

import argparse
import io
import pickle
import platform
import struct
import tempfile
import time
from pathlib import Path

import numpy as np


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Bytes as Python 2 str opcodes, as in the real CIFAR files."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def write_cifar10(root: Path, per_file: int = 10000) -> None:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": b"b", b"labels": [int(v) for v in rng.integers(0, 10, per_file)],
                 b"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 b"filenames": [b"x.png"] * per_file}
        buf = io.BytesIO()
        _Py2Pickler(buf, protocol=2).dump(batch)
        (base / name).write_bytes(buf.getvalue())
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump({b"label_names": [b"c%d" % i for i in range(10)]})
    (base / "batches.meta").write_bytes(buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from skillearn.data import DataSpec, check_data_spec

    with tempfile.TemporaryDirectory() as tmp:
        write_cifar10(Path(tmp))
        spec = DataSpec(name="cifar10", root=tmp)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            check_data_spec(spec)
            times.append(time.perf_counter() - started)
    print(f"CIFAR-10 up-front check (6 files, 60k images, restricted unpickler) on "
          f"{platform.processor() or platform.machine()}: "
          f"{', '.join(f'{t:.2f}' for t in times)} s (first includes cold reads)")


if __name__ == "__main__":
    main()
