"""The IDX format of MNIST and Fashion-MNIST (`.gz` files), parsed without any third-party reader.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values in row-major order.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from metakit.errors import ArchiveError, TruncatedArchiveError

_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, name: str = "IDX data") -> torch.Tensor:
    """Decode the (uncompressed) bytes of one IDX file into a tensor of its stated shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ArchiveError(f"{name} is not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _TYPES:
        raise ArchiveError(f"{name}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise TruncatedArchiveError(f"{name} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise TruncatedArchiveError(
            f"{name} holds {len(data) - header} bytes of values, but its header {list(shape)} "
            f"needs {expected}; the file is truncated or corrupt, delete it and fetch again"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("=")))


def read_idx_gz(path: Path) -> torch.Tensor:
    """Read a gzip-compressed IDX file, with clear errors for corrupt or truncated downloads."""
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise TruncatedArchiveError(
            f"{path} is not a readable .gz file ({e}); delete it and fetch again"
        ) from None
    return parse_idx(data, path.name)
