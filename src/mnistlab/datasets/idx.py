"""Read and write IDX files, the format MNIST ships in (raw or gzip-compressed).

Layout (big-endian): two zero bytes, a type code, the number of dimensions, one 4-byte size
per dimension, then the data in row-major order. MNIST images are magic 2051 (uint8, 3 dims),
labels magic 2049 (uint8, 1 dim). Every malformed file raises `DataFormatError` naming the
file, the byte offset and what is wrong.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from mnistlab.atomic import atomic_writer
from mnistlab.errors import DataFormatError

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}


def decompress(data: bytes, source: str) -> bytes:
    """Return ``data`` gunzipped if it is gzip, unchanged otherwise."""
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise DataFormatError(f"{source}: not a valid gzip stream ({error})") from error


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode raw (already decompressed) IDX bytes into a native-endian array."""
    if len(data) < 4:
        raise DataFormatError(f"{source}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        magic = int.from_bytes(data[:4], "big")
        raise DataFormatError(
            f"{source}: byte 0: bad magic number {magic:#010x}; an IDX file starts with two zero "
            "bytes (MNIST images use 2051, labels 2049)"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise DataFormatError(f"{source}: byte 2: unknown IDX type code {type_code:#04x}")
    if ndim == 0:
        raise DataFormatError(f"{source}: byte 3: an IDX file needs at least one dimension")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataFormatError(
            f"{source}: truncated header: {ndim} dimensions need {header_size} bytes, "
            f"file has {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    present = len(data) - header_size
    if present != expected:
        what = "truncated" if present < expected else "has trailing bytes"
        raise DataFormatError(
            f"{source}: byte {header_size}: {what}: the header declares shape {shape} "
            f"({expected:,} bytes of data) but {present:,} bytes follow the header"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip or raw, detected from content) into an array."""
    source = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise DataFormatError(f"{source}: cannot read: {error.strerror or error}") from error
    return parse_idx(decompress(data, source), source)


def encode_idx(array: np.ndarray) -> bytes:
    """Encode an array as raw IDX bytes (the inverse of `parse_idx`)."""
    array = np.asarray(array)
    code = _CODE_OF_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(size).to_bytes(4, "big") for size in array.shape
    )
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as IDX, gzip-compressed when ``path`` ends in ``.gz``; atomically."""
    payload = encode_idx(array)
    if os.fspath(path).endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    with atomic_writer(path) as handle:
        handle.write(payload)


def check_labels(labels: np.ndarray, source: str, num_classes: int = 10) -> np.ndarray:
    """Check a label array is 1-D with values in 0..num_classes-1 and return it."""
    if labels.ndim != 1:
        raise DataFormatError(f"{source}: labels must be 1-D, got shape {labels.shape}")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        index = int(bad[0])
        raise DataFormatError(
            f"{source}: label {index}: value {labels[index]} is outside 0..{num_classes - 1}"
        )
    return labels


def check_images(images: np.ndarray, source: str) -> np.ndarray:
    """Check an image array is (N, rows, cols) uint8 and return it."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(
            f"{source}: images must be uint8 with 3 dimensions (count, rows, cols), "
            f"got {images.dtype} with shape {images.shape}"
        )
    return images
