"""Reading CIFAR-10's binary version (`cifar-10-batches-bin/*.bin`) without pickle.

Each record is 3073 bytes: one label byte (0..9), then 1024 red, 1024 green and 1024 blue
pixel bytes of a 32x32 image in row-major order (https://www.cs.toronto.edu/~kriz/cifar.html).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_FILES",
    "RECORD_BYTES",
    "parse_cifar10_batch",
    "read_cifar10",
]

RECORD_BYTES = 1 + 3 * 32 * 32
CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def parse_cifar10_batch(payload: bytes, *, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Decode one binary batch into `x` uint8 `(N, 3, 32, 32)` and `y` int64 `(N,)`.

    >>> x, y = parse_cifar10_batch(bytes([7]) + bytes(range(256)) * 12)
    >>> x.shape, y.tolist(), int(x[0, 0, 0, 1]), int(x[0, 1, 0, 0])
    ((1, 3, 32, 32), [7], 1, 0)
    """
    if len(payload) == 0 or len(payload) % RECORD_BYTES:
        raise ValueError(
            f"{name}: {len(payload)} bytes is not a positive multiple of the "
            f"{RECORD_BYTES}-byte CIFAR-10 record"
        )
    records = np.frombuffer(payload, np.uint8).reshape(-1, RECORD_BYTES)  # (N, 3073)
    y = records[:, 0].astype(np.int64)
    if int(y.max()) > 9:
        raise ValueError(f"{name}: label {int(y.max())} outside 0..9; not a CIFAR-10 batch")
    x = records[:, 1:].reshape(-1, 3, 32, 32)  # channel planes, each row-major
    return x, y


def read_cifar10(folder: Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read a split from `folder` (the `cifar-10-batches-bin` directory): `x` uint8
    `(N, 3, 32, 32)`, `y` int64 `(N,)`, batches concatenated in file order."""
    if split not in CIFAR10_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(folder)
    xs, ys = [], []
    for fname in CIFAR10_FILES[split]:
        path = folder / fname
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 batch {str(path)!r} is missing")
        x, y = parse_cifar10_batch(path.read_bytes(), name=str(path))
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)
