"""Save and load models: one safetensors file holding the weights, with the model spec
(JSON, docs/CONTRACTS.md) and a SHA-256 of the weights in its metadata. Never pickle.

Reading treats the file as hostile until it is checked, in an order that keeps memory
bounded: the file must be a regular file of sane size (``open_regular_file``); its header
(at most ``MAX_HEADER`` bytes of JSON, nesting bounded) is read first, the spec in it is
checked against the schema (``mnistlab.engines.spec``), and every tensor entry's dtype,
shape and byte range against the shapes the spec implies (``check_header``); only then
is the tensor data read, and it must fill the rest of the file exactly. Anything wrong
raises ``ModelFileError`` naming the file and the problem. This module knows the file
format only; ``mnistlab.engines.load_model`` builds the model a file describes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from mnistlab.atomic import atomic_write_bytes
from mnistlab.engines.spec import MAX_PARAMS, expected_shapes, loads_bounded, validate_spec
from mnistlab.errors import ModelFileError

SPEC_KEY = "mnistlab.spec"
DIGEST_KEY = "mnistlab.sha256"
MAX_HEADER = 1 << 20  # bytes of header JSON; mnistlab writes a few KiB (safetensors: 100 MiB)
MAX_MODEL_BYTES = 8 + MAX_HEADER + MAX_PARAMS * 8  # the largest file a valid spec can need

# safetensors dtype codes -> NumPy names (for messages); mnistlab models are F32 or F64.
ST_DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
             "F16": "float16", "BF16": "bfloat16", "U32": "uint32", "I32": "int32",
             "F32": "float32", "U64": "uint64", "I64": "int64", "F64": "float64",
             "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3"}
ST_CODES = {"float32": "F32", "float64": "F64"}
ITEMSIZE = {"float32": 4, "float64": 8}
_HEX64 = re.compile(r"[0-9a-f]{64}")

__all__ = [
    "DIGEST_KEY",
    "MAX_HEADER",
    "MAX_MODEL_BYTES",
    "SPEC_KEY",
    "check_digest",
    "check_header",
    "check_weights",
    "open_regular_file",
    "read_header",
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
    """Write ``model`` (either engine's: its ``spec()`` and ``named_weights()``) to ``path``
    atomically, with the weights' checksum. Refuses non-finite weights (a file never holds a
    diverged model) and a spec ``validate_spec`` refuses (mnistlab never writes a file it
    would not read)."""
    spec = model.spec()
    try:
        validate_spec(spec)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: not saved, the model is outside what model files "
                             f"allow ({exc})") from None
    weights = model.named_weights()
    for name, w in weights.items():
        if not np.isfinite(w).all():
            raise ModelFileError(f"{path}: not saved, weight {name!r} holds NaN or infinite "
                                 "values (the model diverged)")
    metadata = {SPEC_KEY: json.dumps(spec, sort_keys=True),
                DIGEST_KEY: weights_digest(weights)}
    atomic_write_bytes(path, safetensors.numpy.save(weights, metadata=metadata))


def open_regular_file(path: str | os.PathLike[str], max_bytes: int,
                      what: str = "model file") -> tuple[BinaryIO, int]:
    """(binary handle, size) of ``path`` if it is a regular file of at most ``max_bytes``.

    Refuses devices (``/dev/zero``), FIFOs, sockets and directories by type, before reading
    a byte: the type is checked with ``os.stat``, and again on the opened descriptor
    (opened non-blocking, so a FIFO swapped in between cannot hang the open).
    """
    def check(st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise ModelFileError(f"{path}: is a directory, not a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{path}: not a regular file (a device, FIFO or socket); "
                                 f"refusing to read it as a {what}")
        if st.st_size > max_bytes:
            raise ModelFileError(f"{path}: {st.st_size} bytes is too large for a {what} "
                                 f"(at most {max_bytes})")

    try:
        check(os.stat(path))
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        check(st)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _read_exactly(handle: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = handle.read(n)
    if len(data) != n:
        raise ModelFileError(f"{path}: truncated {what} (wanted {n} bytes, got {len(data)})")
    return data


def read_header(handle: BinaryIO, size: int, path: Path) -> tuple[dict, int]:
    """(header dict, header length) of a safetensors file of ``size`` bytes, read from the
    start of ``handle`` without reading any tensor data."""
    if size < 8:
        raise ModelFileError(f"{path}: too short to be a safetensors file ({size} bytes)")
    (length,) = struct.unpack("<Q", _read_exactly(handle, 8, path, "header size"))
    if length > MAX_HEADER or 8 + length > size:
        raise ModelFileError(f"{path}: truncated or not a safetensors file "
                             f"(header claims {length} bytes, file has {size})")
    try:
        header = loads_bounded(_read_exactly(handle, length, path, "header"),
                               "the safetensors header")
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: unreadable safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: unreadable safetensors header (not a JSON object)")
    return header, length


def read_metadata(header: dict, path: Path) -> dict[str, str]:
    """The ``__metadata__`` dict of a safetensors header, all of it strings."""
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or SPEC_KEY not in metadata:
        raise ModelFileError(f"{path}: no model spec (metadata key {SPEC_KEY!r}); "
                             "not saved by mnistlab")
    if not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFileError(f"{path}: unreadable safetensors header (metadata values must "
                             "be strings)")
    return metadata


def check_header(header: dict, spec: dict, data_bytes: int, path: Any) -> None:
    """Every tensor entry of a safetensors ``header`` against the weights ``spec`` implies:
    names, dtype, shape, and byte ranges that tile the ``data_bytes`` after the header
    exactly (no gaps, overlaps or bytes past the end). Reads no tensor data."""
    expected = expected_shapes(spec)
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    missing, extra = sorted(expected.keys() - entries.keys()), sorted(entries.keys() - expected)
    if missing:
        raise ModelFileError(f"{path}: missing weights {missing}")
    if extra:
        shown = extra if len(extra) <= 5 else [*extra[:5], f"... {len(extra) - 5} more"]
        raise ModelFileError(f"{path}: unexpected weights {shown} (not in the model spec)")
    dtype = spec["dtype"]
    ranges = []
    for name, want in expected.items():
        entry = entries[name]
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ModelFileError(f"{path}: weight {name!r} has a malformed header entry")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if code != ST_CODES[dtype]:
            shown = ST_DTYPES.get(code, "an unknown dtype") if isinstance(code, str) else "?"
            raise ModelFileError(f"{path}: weight {name!r} is {shown}, the spec says {dtype}")
        if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
            raise ModelFileError(f"{path}: weight {name!r} has a malformed shape")
        if tuple(shape) != want:
            raise ModelFileError(f"{path}: weight {name!r} has shape {tuple(shape)}, "
                                 f"the spec needs {want}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(_is_count(o) for o in offsets)):
            raise ModelFileError(f"{path}: weight {name!r} has malformed data offsets")
        begin, end = offsets
        if end - begin != math.prod(want) * ITEMSIZE[dtype]:
            raise ModelFileError(f"{path}: weight {name!r} claims {end - begin} bytes, its "
                                 f"shape needs {math.prod(want) * ITEMSIZE[dtype]}")
        ranges.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(ranges):
        if begin != position:
            raise ModelFileError(f"{path}: weight {name!r} starts at byte {begin} of the data, "
                                 f"expected {position} (a gap or an overlap)")
        position = end
    if position != data_bytes:
        raise ModelFileError(f"{path}: truncated or padded tensor data (the header describes "
                             f"{position} bytes, the file holds {data_bytes})")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62


def read_model_file(path: str | os.PathLike[str]) -> tuple[dict, dict[str, np.ndarray], str | None]:
    """(spec, weights, checksum) of a file written by ``save_model``.

    Checks before reading tensor data: the file type and size, the header, the spec
    (``validate_spec``) and every tensor entry against it (``check_header``), so memory
    stays within a small multiple of the file size, which is itself bounded by
    ``MAX_MODEL_BYTES``. The weights' values are checked against the spec by
    ``check_weights`` and against the checksum by ``check_digest``; a present checksum
    must be 64 lowercase hex digits.
    """
    path = Path(path)
    handle, size = open_regular_file(path, MAX_MODEL_BYTES)
    with handle:
        header, length = read_header(handle, size, path)
        metadata = read_metadata(header, path)
        try:
            spec = validate_spec(loads_bounded(metadata[SPEC_KEY], "the spec"))
        except ModelFileError as exc:
            raise ModelFileError(f"{path}: invalid model spec ({exc})") from None
        data_bytes = size - 8 - length
        check_header(header, spec, data_bytes, path)
        digest = metadata.get(DIGEST_KEY)
        if digest is not None and not _HEX64.fullmatch(digest):
            raise ModelFileError(f"{path}: malformed weights checksum ({DIGEST_KEY!r} must be "
                                 "64 hex digits)")
        handle.seek(0)
        data = _read_exactly(handle, size, path, "file")
        if handle.read(1):
            raise ModelFileError(f"{path}: the file grew while it was read")
    try:
        tensors = safetensors.numpy.load(data)
    except SafetensorError as exc:
        raise ModelFileError(f"{path}: corrupt or truncated tensor data ({exc})") from None
    return spec, tensors, digest


def check_digest(tensors: dict[str, np.ndarray], digest: str | None, path: Any, *,
                 allow_unverified: bool = False) -> None:
    """The weights against the checksum saved with them. Every file ``save_model`` writes
    carries one; a file without one is refused unless ``allow_unverified`` (the caller
    accepts weights nobody vouches for, e.g. a file written by other software)."""
    if digest is None:
        if allow_unverified:
            return
        raise ModelFileError(f"{path}: no weights checksum (metadata key {DIGEST_KEY!r}); "
                             "mnistlab always writes one, so the file was edited or not "
                             "written by mnistlab (load_model(..., allow_unverified=True) "
                             "accepts it anyway)")
    if digest != weights_digest(tensors):
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
