"""The exceptions mnistlab raises for bad input, one family so callers can catch them all."""

from __future__ import annotations


class MnistlabError(Exception):
    """Base class of every error mnistlab raises on purpose."""


class DataFormatError(MnistlabError, ValueError):
    """A data file (IDX, CSV, gzip) is malformed; the message names file, position and problem."""


class DatasetNotFoundError(MnistlabError, FileNotFoundError):
    """No source (cache, local directory, mirror) could provide a dataset file."""


class ChecksumError(DataFormatError):
    """A file's content does not match the checksum in the registry."""


class ModelFileError(MnistlabError, ValueError):
    """A saved model is wrong, truncated or tampered with."""


class UnsafePickleError(MnistlabError, ValueError):
    """A pickle references something outside the allow-list; nothing of it was executed."""


class ImageError(MnistlabError, ValueError):
    """An image cannot be turned into an MNIST-like digit (unreadable, too large, empty)."""


class TrainingDivergedError(MnistlabError, FloatingPointError):
    """The loss became NaN or infinite; the message names the epoch and step."""
