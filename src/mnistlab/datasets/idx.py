"""Read and write IDX files, the format MNIST ships in (raw or gzip-compressed).

Layout (big-endian): two zero bytes, a type code, the number of dimensions, one 4-byte size
per dimension, then the data in row-major order. MNIST images are magic 2051 (uint8, 3 dims),
labels magic 2049 (uint8, 1 dim). Every malformed file raises `DataFormatError` naming the
file, the byte offset and what is wrong.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import zlib
from collections.abc import Iterator
from typing import BinaryIO

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


# What one input may inflate to unless the caller allows more: MNIST's largest file is 47 MB,
# EMNIST's 0.65 GB. A gzip bomb stops here instead of exhausting memory.
MAX_INPUT_BYTES = 1 << 30
_IN_CHUNK = 1 << 16  # compressed bytes fed to zlib at a time
_OUT_CHUNK = 1 << 20  # decompressed bytes produced at a time


class InputStream:
    """The bytes of a file, gunzipped on the fly when it is gzip (detected from content).

    Nothing is read ahead beyond one compressed chunk, and reads past ``max_bytes``
    decompressed bytes raise `DataFormatError`, so memory stays bounded by what the caller
    asks for. Errors name the file and the position: the decompressed byte offset and, for
    gzip, the range of compressed bytes being inflated.
    """

    def __init__(self, handle: BinaryIO, source: str, *, max_bytes: int = MAX_INPUT_BYTES):
        self.source = source
        self.max_bytes = max_bytes
        self.position = 0  # decompressed bytes delivered so far
        self._handle = handle
        head = handle.read(2)
        self.compressed = head == GZIP_MAGIC
        self._tail = head  # input not yet consumed (gzip) or read ahead (raw)
        self._in_offset = 0  # compressed bytes consumed by zlib so far
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.compressed else None
        self._done = False

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, path: str | os.PathLike[str], source: str | None = None, **kwargs
    ) -> Iterator[InputStream]:
        """Open ``path`` as a stream; a missing or unreadable file is a `DataFormatError`."""
        source = source or os.fspath(path)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as error:
            raise DataFormatError(f"{source}: cannot read: {error.strerror or error}") from error
        with handle:
            yield cls(handle, source, **kwargs)

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; fewer only at the end of the content."""
        parts = []
        while size > 0 and (chunk := self._read_some(size)):
            parts.append(chunk)
            size -= len(chunk)
        return b"".join(parts)

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` as far as the content goes; return the number of bytes written."""
        filled = 0
        while filled < len(buffer):
            chunk = self._read_some(min(len(buffer) - filled, _OUT_CHUNK))
            if not chunk:
                break
            buffer[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled

    def at_end(self) -> bool:
        """True when no content is left (for gzip: the trailer's CRC and length checked)."""
        return not self._next(1)

    def _read_some(self, size: int) -> bytes:
        allowed = self.max_bytes - self.position
        if allowed <= 0:
            if self.at_end():
                return b""
            raise DataFormatError(
                f"{self.source}: byte {self.position:,}: the content goes on past "
                f"{self.max_bytes:,} bytes, the most this reader accepts (a decompression bomb, "
                "or pass max_bytes= to allow more); stopped there"
            )
        return self._next(min(size, allowed))

    def _next(self, size: int) -> bytes:
        data = self._inflate(size) if self.compressed else self._read_raw(size)
        self.position += len(data)
        return data

    def _read_raw(self, size: int) -> bytes:
        if self._tail:
            data, self._tail = self._tail[:size], self._tail[size:]
            if len(data) < size:
                data += self._read_file(size - len(data))
            return data
        return self._read_file(size)

    def _read_file(self, size: int) -> bytes:
        try:
            return self._handle.read(size)
        except OSError as error:
            raise DataFormatError(
                f"{self.source}: cannot read at byte {self.position:,}: {error.strerror or error}"
            ) from error

    def _inflate(self, size: int) -> bytes:
        while not self._done:
            if not self._tail:
                self._tail = self._read_file(_IN_CHUNK)
                if not self._tail:
                    raise DataFormatError(
                        f"{self.source}: compressed byte {self._in_offset:,}: the gzip stream "
                        f"ends early (truncated; {self.position:,} bytes inflated so far)"
                    )
            fed = self._tail
            try:
                out = self._inflater.decompress(fed, size)
            except zlib.error as error:
                raise DataFormatError(
                    f"{self.source}: compressed bytes {self._in_offset:,}.."
                    f"{self._in_offset + len(fed) - 1:,}: not a valid gzip stream ({error}; "
                    f"{self.position:,} bytes inflated before it)"
                ) from error
            if self._inflater.eof:
                self._tail = self._inflater.unused_data
                self._in_offset += len(fed) - len(self._tail)
                self._next_member()
            else:
                self._tail = self._inflater.unconsumed_tail
                self._in_offset += len(fed) - len(self._tail)
            if out:
                return out
        return b""

    def _next_member(self) -> None:
        """After one gzip member: another member, zero padding, or the end."""
        while True:
            if len(self._tail) < 2:
                more = self._read_file(_IN_CHUNK)
                if more:
                    self._tail += more
                    continue
                if not self._tail:
                    self._done = True
                    return
            if self._tail.startswith(GZIP_MAGIC):
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                return
            padding = len(self._tail) - len(self._tail.lstrip(b"\x00"))
            if padding < len(self._tail):
                raise DataFormatError(
                    f"{self.source}: compressed byte {self._in_offset + padding:,}: "
                    "trailing bytes after the gzip stream that are not gzip"
                )
            self._in_offset += padding
            self._tail = b""


def decompress(data: bytes, source: str, *, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """Return ``data`` gunzipped if it is gzip, unchanged otherwise (at most ``max_bytes``)."""
    if not data.startswith(GZIP_MAGIC):
        return data
    stream = InputStream(io.BytesIO(data), source, max_bytes=max_bytes)
    return stream.read(max_bytes + 1)


def parse_header(head: bytes, source: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """Check an IDX header (at least its first 4 bytes); return dtype, shape, header size.

    Raises `DataFormatError` for a bad magic, type or dimension count. When ``head`` holds
    only the first 4 bytes, the shape is empty: read ``header size`` bytes and call again.
    """
    if len(head) < 4:
        raise DataFormatError(f"{source}: {len(head)} bytes is too short for an IDX header")
    if head[0] != 0 or head[1] != 0:
        magic = int.from_bytes(head[:4], "big")
        raise DataFormatError(
            f"{source}: byte 0: bad magic number {magic:#010x}; an IDX file starts with two zero "
            "bytes (MNIST images use 2051, labels 2049)"
        )
    type_code, ndim = head[2], head[3]
    if type_code not in IDX_DTYPES:
        raise DataFormatError(f"{source}: byte 2: unknown IDX type code {type_code:#04x}")
    if ndim == 0:
        raise DataFormatError(f"{source}: byte 3: an IDX file needs at least one dimension")
    header_size = 4 + 4 * ndim
    if len(head) < header_size:
        return IDX_DTYPES[type_code], (), header_size
    shape = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return IDX_DTYPES[type_code], shape, header_size


def _data_size(
    dtype: np.dtype, shape: tuple[int, ...], header_size: int, source: str, max_bytes: int
) -> int:
    """Bytes of data the header declares (exact: Python integers do not overflow)."""
    expected = math.prod(shape) * dtype.itemsize
    if header_size + expected > max_bytes:
        raise DataFormatError(
            f"{source}: byte 4: the header declares shape {shape} ({expected:,} bytes of data), "
            f"more than the {max_bytes:,} bytes this reader accepts (pass max_bytes= to allow "
            "more)"
        )
    return expected


def parse_idx(
    data: bytes, source: str = "<bytes>", *, max_bytes: int = MAX_INPUT_BYTES
) -> np.ndarray:
    """Decode raw (already decompressed) IDX bytes into a native-endian array."""
    dtype, _, header_size = parse_header(data[:4], source)
    if len(data) < header_size:
        raise DataFormatError(
            f"{source}: truncated header: {data[3]} dimensions need {header_size} bytes, "
            f"file has {len(data)}"
        )
    _, shape, _ = parse_header(data[:header_size], source)
    expected = _data_size(dtype, shape, header_size, source, max(max_bytes, len(data)))
    present = len(data) - header_size
    if present != expected:
        truncated = present < expected
        raise DataFormatError(
            f"{source}: byte {header_size if truncated else header_size + expected:,}: "
            f"{'truncated' if truncated else 'has trailing bytes'}: the header declares shape "
            f"{shape} ({expected:,} bytes of data) but {present:,} bytes follow the header"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike[str], *, max_bytes: int = MAX_INPUT_BYTES) -> np.ndarray:
    """Read an IDX file (gzip or raw, detected from content) into an array.

    The header is read and checked first; then exactly the bytes it declares are streamed
    into the array, so memory never exceeds the declared size (at most ``max_bytes``)
    whatever the file inflates to.
    """
    with InputStream.open(path, max_bytes=max_bytes) as stream:
        return read_idx_stream(stream)


def read_idx_stream(stream: InputStream) -> np.ndarray:
    """Read one IDX array from an open `InputStream` (see `read_idx`)."""
    source = stream.source
    head = stream.read(4)
    dtype, _, header_size = parse_header(head, source)
    head += stream.read(header_size - 4)
    if len(head) < header_size:
        raise DataFormatError(
            f"{source}: truncated header: {head[3]} dimensions need {header_size} bytes, "
            f"file has {len(head)}"
        )
    _, shape, _ = parse_header(head, source)
    expected = _data_size(dtype, shape, header_size, source, stream.max_bytes)
    buffer = np.empty(expected, np.uint8)  # pages are only touched as data arrives
    present = stream.readinto(memoryview(buffer))
    if present < expected:
        raise DataFormatError(
            f"{source}: byte {header_size}: truncated: the header declares shape {shape} "
            f"({expected:,} bytes of data) but {present:,} bytes follow the header"
        )
    if not stream.at_end():
        raise DataFormatError(
            f"{source}: byte {header_size + expected:,}: has trailing bytes: the header "
            f"declares shape {shape} ({expected:,} bytes of data) and more follow"
        )
    array = buffer.view(dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


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
