"""Reading IDX files (the MNIST family's format), gzip-compressed or raw, with their sha256."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

__all__ = ["parse_idx", "read_idx"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(payload: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Decode an IDX payload: magic `00 00 <dtype> <ndim>`, ndim big-endian uint32 sizes, data.

    >>> import struct
    >>> parse_idx(struct.pack(">BBBBII", 0, 0, 8, 2, 2, 3) + bytes(range(6))).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0:
        raise ValueError(f"{name}: not an IDX file (bad magic {payload[:4].hex()})")
    code, ndim = payload[2], payload[3]
    if code not in _DTYPES:
        raise ValueError(f"{name}: unknown IDX element type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise ValueError(f"{name}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(payload, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[code])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(payload) != expected:
        raise ValueError(f"{name}: IDX size {len(payload)} bytes, header says {expected}")
    return np.frombuffer(payload, dtype, offset=header).reshape(dims)


def read_idx(path: Path, *, sha256: str | None = None) -> np.ndarray:
    """Read a `.gz` or raw IDX file; with `sha256`, verify the decompressed payload first."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        payload = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (EOFError, OSError, zlib.error) as err:
        want = f"; its payload should have sha256 {sha256}" if sha256 else ""
        raise ValueError(
            f"{path} is corrupt: cannot be decompressed ({err}){want}. Delete it and copy or "
            "download it again"
        ) from None
    if sha256 is not None:
        got = hashlib.sha256(payload).hexdigest()
        if got != sha256:
            raise ValueError(
                f"{path}: sha256 of the decompressed payload is {got}, expected {sha256}"
            )
    return parse_idx(payload, name=str(path))
