"""Argument types shared by the CLI's commands.

Each type refuses a bad value with ``argparse.ArgumentTypeError``; argparse prefixes the
option (``argument --batch-size: ...``) and the CLI's parser turns that into its one line
``mnistlab: error: ...`` (exit status 1), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from mnistlab.errors import DataFormatError, MnistlabError, ModelFileError, UnsafePickleError

DEVICES = "cpu, cuda, cuda:N, auto"
MAX_SEED = 2**32 - 1  # the seeds NumPy and torch both take


def _whole_number(text: str, expected: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (else argparse's usage error, no traceback)."""
    value = _whole_number(text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def int_range(low: int, high: int, what: str | None = None) -> Callable[[str], int]:
    """argparse type: a whole number from ``low`` to ``high``; ``what`` names the values."""
    expected = what or f"an integer from {low:,} to {high:,}"

    def parse(text: str) -> int:
        value = _whole_number(text, expected)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    parse.__name__ = "int_range"  # argparse names the type in some messages
    return parse


def non_negative_int(text: str) -> int:
    """argparse type: 0, 1, 2, ..."""
    value = _whole_number(text, "a non-negative integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


random_seed = int_range(0, MAX_SEED, f"an integer from 0 to {MAX_SEED}")
port = int_range(1, 65535, "a port number from 1 to 65535")


def device(text: str) -> str:
    """argparse type: a torch device name, "cpu", "cuda", "cuda:N" or "auto"."""
    name = text.strip().lower()
    if not re.fullmatch(r"cpu|auto|cuda(:[0-9]+)?", name):
        raise argparse.ArgumentTypeError(f"expected one of: {DEVICES}; got {text!r}")
    return name


def check_output_dir(path: Path, option: str) -> None:
    """``path`` is, or can be made, a directory: MnistlabError naming ``option`` if a file is
    in the way (checked before any work, so nothing is computed and then lost)."""
    if path.exists():
        if not path.is_dir():
            raise MnistlabError(f"{option} {path}: exists and is not a directory")
        return
    _check_parents(path, option)


def check_output_file(path: Path, option: str) -> None:
    """``path`` can be written as a file: not a directory, no file where a parent should be."""
    if path.is_dir():
        raise MnistlabError(f"{option} {path}: is a directory; expected a file name")
    _check_parents(path, option)


def _check_parents(path: Path, option: str) -> None:
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise MnistlabError(f"{option} {path}: {parent} is a file, not a directory")
            return


@contextlib.contextmanager
def about(option: str | None) -> Iterator[None]:
    """Prefix a file's error raised in the block (ModelFileError and the like, whose
    messages start with the path) with the option or argument that named the file:
    ``MODEL x.safetensors: truncated ...``. None leaves it as it is."""
    try:
        yield
    except (ModelFileError, UnsafePickleError, DataFormatError) as error:
        if option is None or str(error).startswith(option):
            raise
        raise MnistlabError(f"{option} {error}") from error
