"""Read and write MNIST as CSV: one image a row, ``label,pixel0,...,pixel783``.

This is how much course material distributes MNIST (``mnist_train.csv``). A header row is
optional on reading. Parsing runs in NumPy's C reader; only when that fails does a slower
pass find the exact line and column to report.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from mnistlab.atomic import atomic_writer
from mnistlab.datasets.idx import decompress
from mnistlab.errors import DataFormatError

IMAGE_SHAPE = (28, 28)


def read_csv(
    path: str | os.PathLike[str],
    *,
    image_shape: tuple[int, int] = IMAGE_SHAPE,
    num_classes: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``label,pixel...`` rows into uint8 images ``(N, *image_shape)`` and labels ``(N,)``."""
    source = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise DataFormatError(f"{source}: cannot read: {error.strerror or error}") from error
    try:
        text = decompress(raw, source).decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{source}: byte {error.start}: not UTF-8 text") from error
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    first_data_line = 1 if lines and _is_header(lines[0]) else 0
    if len(lines) <= first_data_line:
        raise DataFormatError(f"{source}: no data rows")
    width = 1 + image_shape[0] * image_shape[1]
    try:
        table = np.loadtxt(
            io.StringIO("\n".join(lines[first_data_line:])),
            delimiter=",",
            dtype=np.int64,
            ndmin=2,
        )
    except ValueError:
        _diagnose(lines, first_data_line, width, source)
        raise  # _diagnose always raises; this keeps type checkers honest
    if table.shape[1] != width:
        _diagnose(lines, first_data_line, width, source)
    _check_ranges(table, first_data_line, num_classes, source)
    labels = table[:, 0].astype(np.uint8)
    images = table[:, 1:].astype(np.uint8).reshape(-1, *image_shape)
    return images, labels


def write_csv(
    path: str | os.PathLike[str], images: np.ndarray, labels: np.ndarray, *, header: bool = True
) -> None:
    """Write images and labels as ``label,pixel0,...`` rows (with a header row by default)."""
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


def _is_header(line: str) -> bool:
    first = line.split(",", 1)[0].strip().strip('"')
    return not first.lstrip("-").isdigit()


def _diagnose(lines: list[str], start: int, width: int, source: str) -> None:
    """Find the first bad row of a CSV that NumPy refused, and raise a precise error."""
    for number, line in enumerate(lines[start:], start=start + 1):
        fields = line.split(",")
        if len(fields) != width:
            raise DataFormatError(
                f"{source}: line {number}: expected {width} values (label + "
                f"{width - 1} pixels), found {len(fields)}"
            )
        for column, field in enumerate(fields, start=1):
            try:
                int(field)
            except ValueError:
                raise DataFormatError(
                    f"{source}: line {number}, column {column}: {field.strip()!r} is not an integer"
                ) from None
    raise DataFormatError(f"{source}: could not parse as CSV")


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
