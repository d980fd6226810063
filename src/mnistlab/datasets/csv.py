"""Read and write MNIST as CSV: one image a row, ``label,pixel0,...,pixel783``.

This is how much course material distributes MNIST (``mnist_train.csv``). A header row is
optional on reading, and recognised by its names only: a first field ``label`` (or
``labels``, ``class``, ``target``, ``digit``), then pixel names such as ``pixel0`` or
``1x1``. Every other line is a row of integers, or an error naming its line: nothing is
skipped as a comment or taken for a header because it fails to parse. A UTF-8 byte order
mark is dropped. The file (gzip or plain) is streamed in blocks of lines, parsed by NumPy's
C reader; only when a block fails does a slower pass find the exact line and column.
Memory stays bounded: a line longer than a row can be, or more than ``max_bytes`` of text,
stops the read with a `DataFormatError`.
"""

from __future__ import annotations

import os
import re

import numpy as np

from mnistlab.atomic import atomic_writer
from mnistlab.datasets.idx import MAX_INPUT_BYTES, InputStream
from mnistlab.errors import DataFormatError

IMAGE_SHAPE = (28, 28)
LABEL_NAMES = ("label", "labels", "class", "target", "digit")
_PIXEL_NAME = re.compile(r"pixel\d+|\d+x\d+", re.IGNORECASE)
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")
_BLOCK_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"


def read_csv(
    path: str | os.PathLike[str],
    *,
    image_shape: tuple[int, int] = IMAGE_SHAPE,
    num_classes: int = 10,
    max_bytes: int = MAX_INPUT_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``label,pixel...`` rows into uint8 images ``(N, *image_shape)`` and labels ``(N,)``."""
    width = 1 + image_shape[0] * image_shape[1]
    # A row of `width` values of at most "-255," with some spaces; anything longer is not one.
    max_line = max(1 << 16, 16 * width)
    reader = _Rows(os.fspath(path), width, num_classes)
    with InputStream.open(path, max_bytes=max_bytes) as stream:
        pending = b""
        offset = 0  # byte offset of `pending` in the decompressed text
        while block := stream.read(_BLOCK_BYTES):
            if offset == 0 and not pending and block.startswith(_BOM):
                block, offset = block[len(_BOM) :], len(_BOM)
            pending += block
            cut = pending.rfind(b"\n") + 1
            if cut:
                reader.feed(_decode(pending[:cut], offset, reader.source))
                offset += cut
                pending = pending[cut:]
            if len(pending) > max_line:
                raise DataFormatError(
                    f"{reader.source}: line {reader.next_line}: no line end within "
                    f"{max_line:,} bytes; not rows of {width} comma-separated values"
                )
        if pending:
            reader.feed(_decode(pending, offset, reader.source) + "\n")
    return reader.finish(image_shape)


def _decode(data: bytes, offset: int, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{source}: byte {offset + error.start:,}: not UTF-8 text") from None


class _Rows:
    """Collects parsed rows block by block, numbering lines as the file does."""

    def __init__(self, source: str, width: int, num_classes: int):
        self.source = source
        self.width = width
        self.num_classes = num_classes
        self.next_line = 1
        self.blank_line: int | None = None  # first of a run of blank lines not yet followed
        self.labels: list[np.ndarray] = []
        self.pixels: list[np.ndarray] = []

    def feed(self, text: str) -> None:
        """Parse complete lines (``text`` ends with a newline)."""
        lines = text.split("\n")[:-1]
        first = self.next_line
        self.next_line += len(lines)
        rows: list[str] = []
        row_start = first
        for number, line in enumerate(lines, start=first):
            if not line.strip():
                if self.blank_line is None:
                    self.blank_line = number
                continue
            if self.blank_line is not None:
                raise DataFormatError(
                    f"{self.source}: line {self.blank_line}: empty line between rows "
                    f"(expected {self.width} values)"
                )
            if number == 1 and _is_header(line, self.width, self.source):
                row_start = 2
                continue
            if not rows:
                row_start = number
            rows.append(line)
        if rows:
            self._parse(rows, row_start)

    def _parse(self, rows: list[str], start: int) -> None:
        try:
            table = np.loadtxt(rows, delimiter=",", dtype=np.int64, ndmin=2, comments=None)
        except ValueError as error:
            _diagnose(rows, start, self.width, self.num_classes, self.source, error)
            raise  # _diagnose always raises; this keeps type checkers honest
        if table.shape[1] != self.width:
            _diagnose(rows, start, self.width, self.num_classes, self.source, None)
        _check_ranges(table, start - 1, self.num_classes, self.source)
        self.labels.append(table[:, 0].astype(np.uint8))
        self.pixels.append(table[:, 1:].astype(np.uint8))

    def finish(self, image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        if not self.labels:
            raise DataFormatError(f"{self.source}: no data rows")
        labels = np.concatenate(self.labels)
        images = np.concatenate(self.pixels).reshape(-1, *image_shape)
        return images, labels


def write_csv(
    path: str | os.PathLike[str], images: np.ndarray, labels: np.ndarray, *, header: bool = False
) -> None:
    """Write images and labels as ``label,pixel0,...`` rows; no header row unless asked, as
    the course's CSV files (``np.loadtxt(path, delimiter=",")`` reads them as they are)."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(
            f"need images (N, rows, cols) and N labels, got {images.shape} and {labels.shape}"
        )
    table = np.column_stack([labels.reshape(-1, 1), images.reshape(len(images), -1)])
    names = ["label", *(f"pixel{i}" for i in range(table.shape[1] - 1))]
    with atomic_writer(path) as handle:
        np.savetxt(
            handle,
            table,
            fmt="%d",
            delimiter=",",
            header=",".join(names) if header else "",
            comments="",
        )


def _is_header(line: str, width: int, source: str) -> bool:
    """A header is recognised by its names: a label name, then pixel names."""
    names = [field.strip().strip('"').strip() for field in line.split(",")]
    if names[0].lower() not in LABEL_NAMES:
        return False
    if len(names) != width:
        raise DataFormatError(
            f"{source}: line 1: a header of {len(names)} names; expected {width} "
            f"({names[0]} + {width - 1} pixels)"
        )
    for column, name in enumerate(names[1:], start=2):
        if not _PIXEL_NAME.fullmatch(name):
            raise DataFormatError(
                f"{source}: line 1, column {column}: header name {name!r} is not a pixel name "
                "(pixel0, pixel1, ... or 1x1, 1x2, ...)"
            )
    return True


def _diagnose(
    lines: list[str],
    start: int,
    width: int,
    num_classes: int,
    source: str,
    error: ValueError | None,
) -> None:
    """Find the first bad row of a block NumPy refused, and raise a precise error."""
    for number, line in enumerate(lines, start=start):
        fields = line.split(",")
        if len(fields) != width:
            raise DataFormatError(
                f"{source}: line {number}: expected {width} values (label + "
                f"{width - 1} pixels), found {len(fields)}"
            )
        for column, field in enumerate(fields, start=1):
            if not _INTEGER.fullmatch(field):
                raise DataFormatError(
                    f"{source}: line {number}, column {column}: {field.strip()[:40]!r} is not an "
                    "integer"
                )
            digits = field.strip()
            # Past 20 digits it is out of range whatever it is (and int() of a huge one fails).
            value = int(digits) if len(digits) <= 20 else None
            shown = digits if len(digits) <= 20 else f"{digits[:20]}..."
            if column == 1 and (value is None or not 0 <= value < num_classes):
                raise DataFormatError(
                    f"{source}: line {number}, column 1: label {shown} is outside "
                    f"0..{num_classes - 1}"
                )
            if column > 1 and (value is None or not 0 <= value <= 255):
                raise DataFormatError(
                    f"{source}: line {number}, column {column}: pixel value {shown} is outside "
                    "0..255"
                )
    end = start + len(lines) - 1
    raise DataFormatError(f"{source}: lines {start}..{end}: could not parse as CSV ({error})")


def _check_ranges(table: np.ndarray, start: int, num_classes: int, source: str) -> None:
    bad_labels = np.flatnonzero((table[:, 0] < 0) | (table[:, 0] >= num_classes))
    if bad_labels.size:
        row = int(bad_labels[0])
        raise DataFormatError(
            f"{source}: line {start + row + 1}, column 1: label {table[row, 0]} is outside "
            f"0..{num_classes - 1}"
        )
    bad_pixels = np.argwhere((table[:, 1:] < 0) | (table[:, 1:] > 255))
    if bad_pixels.size:
        row, column = (int(v) for v in bad_pixels[0])
        raise DataFormatError(
            f"{source}: line {start + row + 1}, column {column + 2}: pixel value "
            f"{table[row, column + 1]} is outside 0..255"
        )
