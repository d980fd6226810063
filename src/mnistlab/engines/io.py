"""Save and load models: one safetensors file holding the weights, with the model spec
(JSON, docs/CONTRACTS.md) and a SHA-256 of the weights in its metadata. Never pickle.

Reading checks everything a damaged or edited file could get wrong and raises
``ModelFileError`` naming the file and the problem. This module knows the file format only;
``mnistlab.engines.load_model`` builds the model a file describes.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from mnistlab.atomic import atomic_write_bytes
from mnistlab.errors import ModelFileError

SPEC_KEY = "mnistlab.spec"
DIGEST_KEY = "mnistlab.sha256"
MAX_HEADER = 100 * 1024 * 1024  # the safetensors limit

__all__ = [
    "DIGEST_KEY",
    "SPEC_KEY",
    "check_digest",
    "check_weights",
    "read_model_file",
    "save_model",
    "weights_digest",
]


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of all tensors, in name order."""
    h = hashlib.sha256()
    for name in sorted(weights):
        w = np.ascontiguousarray(weights[name])
        h.update(f"{name}|{w.dtype.str}|{list(w.shape)}|".encode())
        h.update(w.tobytes())
    return h.hexdigest()


def save_model(model: Any, path: str | os.PathLike[str]) -> None:
    """Write ``model`` (either engine's: its ``spec()`` and ``get_weights()``) to ``path``
    atomically. Refuses non-finite weights: a file never holds a diverged model."""
    weights = model.get_weights()
    for name, w in weights.items():
        if not np.isfinite(w).all():
            raise ModelFileError(f"{path}: not saved, weight {name!r} holds NaN or infinite "
                                 "values (the model diverged)")
    metadata = {SPEC_KEY: json.dumps(model.spec(), sort_keys=True),
                DIGEST_KEY: weights_digest(weights)}
    atomic_write_bytes(path, safetensors.numpy.save(weights, metadata=metadata))


def read_metadata(data: bytes, path: Path) -> dict[str, str]:
    """The ``__metadata__`` dict of a safetensors file's header."""
    if len(data) < 8:
        raise ModelFileError(f"{path}: too short to be a safetensors file ({len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_HEADER or 8 + size > len(data):
        raise ModelFileError(f"{path}: truncated or not a safetensors file "
                             f"(header claims {size} bytes, file has {len(data)})")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: unreadable safetensors header ({exc})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or SPEC_KEY not in metadata:
        raise ModelFileError(f"{path}: no model spec (metadata key {SPEC_KEY!r}); "
                             "not saved by mnistlab")
    return metadata


def read_model_file(path: str | os.PathLike[str]) -> tuple[dict, dict[str, np.ndarray], str | None]:
    """(spec, weights, checksum) of a file written by ``save_model``, its header and tensors
    readable; ModelFileError if not. The weights are checked against the spec by
    ``check_weights``, then against the checksum by ``check_digest``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file ({exc.strerror or exc})") from None
    metadata = read_metadata(data, path)
    try:
        tensors = safetensors.numpy.load(data)
    except SafetensorError as exc:
        raise ModelFileError(f"{path}: corrupt or truncated tensor data ({exc})") from None
    try:
        spec = json.loads(metadata[SPEC_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: invalid model spec ({exc})") from None
    return spec, tensors, metadata.get(DIGEST_KEY)


def check_digest(tensors: dict[str, np.ndarray], digest: str | None, path: Any) -> None:
    """The weights against the checksum saved with them (files without one pass)."""
    if digest is not None and digest != weights_digest(tensors):
        raise ModelFileError(f"{path}: weights do not match their checksum; "
                             "the file was modified or damaged after it was saved")


def check_weights(tensors: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                  path: Any) -> None:
    """Names, shapes, dtypes and finiteness of ``tensors`` against the arrays a model needs."""
    missing, extra = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected)
    if missing:
        raise ModelFileError(f"{path}: missing weights {missing}")
    if extra:
        raise ModelFileError(f"{path}: unexpected weights {extra} (not in the model spec)")
    for name, want in expected.items():
        got = tensors[name]
        if got.shape != want.shape:
            raise ModelFileError(f"{path}: weight {name!r} has shape {got.shape}, "
                                 f"the spec needs {want.shape}")
        if got.dtype != want.dtype:
            raise ModelFileError(f"{path}: weight {name!r} is {got.dtype}, the spec says "
                                 f"{want.dtype}")
        if not np.isfinite(got).all():
            raise ModelFileError(f"{path}: weight {name!r} contains NaN or infinite values")
