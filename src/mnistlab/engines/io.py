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

A file may also hold what resuming training needs (``mnistlab.keras.saving`` writes it for
a compiled model): the optimizer's per-weight state as tensors ``optimizer/<slot>.<weight>``
(each one shaped and typed as the weight it belongs to, which must be in the spec), the
compile settings as JSON under ``mnistlab.compile`` (``check_compile``: a closed schema,
optimizer and loss names the engine knows, their settings its constructors' own arguments,
numbers only), a SHA-256 of those two under ``mnistlab.compile_sha256``, and the model's
name under ``mnistlab.name``. All of it is checked with the rest before any tensor data is
read; ``read_model_file`` returns the weights alone, so every loader reads such files as
before, and files without these keys are what they always were.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from mnistlab.atomic import atomic_write_bytes
from mnistlab.engines.spec import MAX_PARAMS, expected_shapes, loads_bounded, validate_spec
from mnistlab.errors import ModelFileError
from mnistlab.nn.losses import LOSSES
from mnistlab.nn.optimizers import OPTIMIZERS

SPEC_KEY = "mnistlab.spec"
DIGEST_KEY = "mnistlab.sha256"
COMPILE_KEY = "mnistlab.compile"  # JSON, see check_compile
COMPILE_DIGEST_KEY = "mnistlab.compile_sha256"  # compile JSON + optimizer tensors
NAME_KEY = "mnistlab.name"  # the model's (Keras) name
OPTIMIZER_PREFIX = "optimizer/"  # optimizer/<slot>.<weight name>, e.g. optimizer/m_sum.0.W
COMPILE_FORMAT, COMPILE_VERSION = "mnistlab.compile", 1
MAX_OPTIMIZER_SLOTS = 3  # per-weight arrays an optimizer keeps (Adam 2, AMSGrad 3)
MAX_HEADER = 1 << 20  # bytes of header JSON; mnistlab writes a few KiB (safetensors: 100 MiB)
# the largest file a valid spec can need: its weights and an optimizer's state for each
MAX_MODEL_BYTES = 8 + MAX_HEADER + MAX_PARAMS * 8 * (1 + MAX_OPTIMIZER_SLOTS)
MAX_METRICS = 8
MAX_ITERATIONS = 1 << 62
_SLOT = re.compile(r"[a-z][a-z0-9_]{0,31}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")

# safetensors dtype codes -> NumPy names (for messages); mnistlab models are F32 or F64.
ST_DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
             "F16": "float16", "BF16": "bfloat16", "U32": "uint32", "I32": "int32",
             "F32": "float32", "U64": "uint64", "I64": "int64", "F64": "float64",
             "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3"}
ST_CODES = {"float32": "F32", "float64": "F64"}
ITEMSIZE = {"float32": 4, "float64": 8}
_HEX64 = re.compile(r"[0-9a-f]{64}")

__all__ = [
    "COMPILE_DIGEST_KEY",
    "COMPILE_KEY",
    "DIGEST_KEY",
    "MAX_HEADER",
    "MAX_MODEL_BYTES",
    "NAME_KEY",
    "OPTIMIZER_PREFIX",
    "SPEC_KEY",
    "ModelFile",
    "check_compile",
    "check_compile_digest",
    "check_digest",
    "check_header",
    "check_weights",
    "open_regular_file",
    "read_header",
    "read_model_file",
    "read_model_file_full",
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


def compile_digest(compile_text: str, optimizer: dict[str, np.ndarray]) -> str:
    """SHA-256 over the compile JSON exactly as stored and the optimizer tensors (named
    without the ``optimizer/`` prefix), as ``weights_digest`` hashes tensors."""
    h = hashlib.sha256(b"mnistlab.compile|")
    h.update(compile_text.encode("utf-8"))
    h.update(b"|")
    h.update(weights_digest(optimizer).encode())
    return h.hexdigest()


def save_model(model: Any, path: str | os.PathLike[str], *, name: str | None = None,
               compile_config: dict | None = None,
               optimizer_state: dict[str, np.ndarray] | None = None) -> None:
    """Write ``model`` (either engine's: its ``spec()`` and ``named_weights()``) to ``path``
    atomically, with the weights' checksum. Refuses non-finite weights (a file never holds a
    diverged model) and a spec ``validate_spec`` refuses (mnistlab never writes a file it
    would not read).

    Optionally also the model's ``name``, its ``compile_config`` (``check_compile``'s
    schema) and the optimizer's per-weight state ``{"<slot>.<weight>": array}`` (written as
    ``optimizer/<slot>.<weight>``; only with a compile config), checked as a reader checks
    them, with their own checksum."""
    spec = model.spec()
    try:
        validate_spec(spec)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: not saved, the model is outside what model files "
                             f"allow ({exc})") from None
    weights = model.named_weights()
    for weight, w in weights.items():
        if not np.isfinite(w).all():
            raise ModelFileError(f"{path}: not saved, weight {weight!r} holds NaN or infinite "
                                 "values (the model diverged)")
    metadata = {SPEC_KEY: json.dumps(spec, sort_keys=True),
                DIGEST_KEY: weights_digest(weights)}
    tensors = dict(weights)
    if name is not None:
        metadata[NAME_KEY] = _check_name(name, f"{path}: not saved")
    optimizer_state = dict(optimizer_state or {})
    if optimizer_state and compile_config is None:
        raise ModelFileError(f"{path}: not saved, optimizer state needs compile settings")
    if compile_config is not None:
        text = json.dumps(compile_config, sort_keys=True)
        try:
            check_compile(loads_bounded(text, "the compile settings", max_depth=4))
        except ModelFileError as exc:
            raise ModelFileError(f"{path}: not saved, compile settings outside what model "
                                 f"files allow ({exc})") from None
        shapes, dtype = expected_shapes(spec), np.dtype(spec["dtype"])
        for key, value in optimizer_state.items():
            value = np.ascontiguousarray(value)
            entry = {"dtype": ST_CODES.get(str(value.dtype), "?"), "shape": list(value.shape)}
            _check_optimizer_entry(OPTIMIZER_PREFIX + key, entry, shapes, spec["dtype"],
                                   f"{path}: not saved")
            if value.dtype != dtype or not np.isfinite(value).all():
                raise ModelFileError(f"{path}: not saved, optimizer state {key!r} is not "
                                     f"finite {dtype}")
            tensors[OPTIMIZER_PREFIX + key] = value
        _check_slot_count(optimizer_state, f"{path}: not saved")
        metadata[COMPILE_KEY] = text
        metadata[COMPILE_DIGEST_KEY] = compile_digest(
            text, {k: np.ascontiguousarray(v) for k, v in optimizer_state.items()})
    atomic_write_bytes(path, safetensors.numpy.save(tensors, metadata=metadata))


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        shown = repr(name[:40]) if isinstance(name, str) else type(name).__name__
        raise ModelFileError(f"{where}: the model name must be 1 to 128 letters, digits, "
                             f"'_', '.' or '-', got {shown}")
    return name


def _scalar_settings(config: Any, where: str, allowed: set[str]) -> dict:
    """A settings object: keys among ``allowed`` (a constructor's arguments), values finite
    numbers, booleans or null."""
    if not isinstance(config, dict):
        raise ModelFileError(f"{where} must be an object")
    for key, value in config.items():
        if key not in allowed:
            raise ModelFileError(f"{where}: unknown setting {key[:40]!r}; known: "
                                 f"{sorted(allowed)}")
        if not (value is None or isinstance(value, bool | int | float)) \
                or (isinstance(value, float) and not math.isfinite(value)) \
                or (isinstance(value, int) and abs(value) > MAX_ITERATIONS):
            raise ModelFileError(f"{where}.{key} must be a finite number, true/false or "
                                 f"null, got {type(value).__name__}")
    return config


def constructor_arguments(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` takes (an optimizer's or a loss's settings)."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_compile(config: Any) -> dict:
    """``config`` itself when it is valid compile settings, ModelFileError otherwise:

        {"format": "mnistlab.compile", "version": 1,
         "optimizer": {"name": "adam", "config": {"lr": 0.001, ...}, "iterations": 12},
         "loss": {"name": "categorical_crossentropy", "config": {"from_logits": false}},
         "metrics": ["accuracy"]}

    Optimizer and loss names are those ``nn.optimizers.OPTIMIZERS`` and ``nn.losses.LOSSES``
    know; their configs hold only their classes' constructor arguments, as plain numbers,
    booleans or null; metrics are names ``engines.base.METRICS`` knows (at most 8)."""
    from mnistlab.engines.base import METRICS  # base imports this module

    if not isinstance(config, dict):
        raise ModelFileError("compile settings must be an object")
    known = {"format", "version", "optimizer", "loss", "metrics"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ModelFileError(f"compile settings: unknown key {unknown[0][:40]!r}; known: "
                             f"{sorted(known)}")
    if config.get("format") != COMPILE_FORMAT or config.get("version") != COMPILE_VERSION \
            or isinstance(config.get("version"), bool):
        raise ModelFileError(f"compile settings: not {COMPILE_FORMAT} version "
                             f"{COMPILE_VERSION}")
    for part, table, extra in (("optimizer", OPTIMIZERS, {"iterations"}), ("loss", LOSSES, set())):
        entry = config.get(part)
        if not isinstance(entry, dict) or set(entry) - {"name", "config", *extra} \
                or not {"name", "config", *extra} <= set(entry):
            raise ModelFileError(f"compile settings: {part} must be an object with keys "
                                 f"{sorted({'name', 'config', *extra})}")
        name = entry["name"]
        if not isinstance(name, str) or name not in table:
            shown = repr(name[:40]) if isinstance(name, str) else type(name).__name__
            raise ModelFileError(f"compile settings: unknown {part} {shown}; known: "
                                 f"{sorted(table)}")
        _scalar_settings(entry["config"], f"compile settings: {part}.config",
                         constructor_arguments(table[name]))
    iterations = config["optimizer"]["iterations"]
    if isinstance(iterations, bool) or not isinstance(iterations, int) \
            or not 0 <= iterations <= MAX_ITERATIONS:
        raise ModelFileError("compile settings: optimizer.iterations must be an integer "
                             f"in [0, {MAX_ITERATIONS}]")
    metrics = config.get("metrics")
    if not isinstance(metrics, list) or len(metrics) > MAX_METRICS \
            or not all(isinstance(m, str) and m in METRICS for m in metrics):
        raise ModelFileError(f"compile settings: metrics must be a list of at most "
                             f"{MAX_METRICS} of {list(METRICS)}")
    return config


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
    exactly (no gaps, overlaps or bytes past the end). Entries ``optimizer/<slot>.<weight>``
    (optimizer state) must name a weight of the spec and have its shape and dtype, with at
    most ``MAX_OPTIMIZER_SLOTS`` slot names. Reads no tensor data."""
    expected = expected_shapes(spec)
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    optimizer = {k: v for k, v in entries.items() if k.startswith(OPTIMIZER_PREFIX)}
    entries = {k: v for k, v in entries.items() if k not in optimizer}
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
        ranges.append(_byte_range(name, offsets, want, dtype, path))
    _check_slot_count({k.removeprefix(OPTIMIZER_PREFIX): v for k, v in optimizer.items()},
                      str(path))
    for name, entry in optimizer.items():
        want = _check_optimizer_entry(name, entry, expected, dtype, str(path))
        ranges.append(_byte_range(name, entry["data_offsets"], want, dtype, path))
    position = 0
    for begin, end, name in sorted(ranges):
        if begin != position:
            raise ModelFileError(f"{path}: weight {name!r} starts at byte {begin} of the data, "
                                 f"expected {position} (a gap or an overlap)")
        position = end
    if position != data_bytes:
        raise ModelFileError(f"{path}: truncated or padded tensor data (the header describes "
                             f"{position} bytes, the file holds {data_bytes})")


def _byte_range(name: str, offsets: Any, want: tuple[int, ...], dtype: str,
                path: Any) -> tuple[int, int, str]:
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(_is_count(o) for o in offsets)):
        raise ModelFileError(f"{path}: weight {name!r} has malformed data offsets")
    begin, end = offsets
    if end - begin != math.prod(want) * ITEMSIZE[dtype]:
        raise ModelFileError(f"{path}: weight {name!r} claims {end - begin} bytes, its "
                             f"shape needs {math.prod(want) * ITEMSIZE[dtype]}")
    return begin, end, name


def _check_slot_count(state: dict, where: str) -> None:
    slots = {key.partition(".")[0] for key in state}
    if len(slots) > MAX_OPTIMIZER_SLOTS:
        raise ModelFileError(f"{where}: optimizer state has {len(slots)} slot names, at most "
                             f"{MAX_OPTIMIZER_SLOTS} are allowed")


def _check_optimizer_entry(name: str, entry: Any, expected: dict[str, tuple[int, ...]],
                           dtype: str, where: str) -> tuple[int, ...]:
    """The shape an optimizer tensor ``optimizer/<slot>.<weight>`` must have: its weight's."""
    slot, dot, weight = name.removeprefix(OPTIMIZER_PREFIX).partition(".")
    if not dot or not _SLOT.fullmatch(slot):
        raise ModelFileError(f"{where}: optimizer tensor {name[:80]!r} is not named "
                             "optimizer/<slot>.<weight> with a slot of lowercase letters, "
                             "digits and '_'")
    if weight not in expected:
        raise ModelFileError(f"{where}: optimizer tensor {name[:80]!r} names no weight of the "
                             "model")
    if not isinstance(entry, dict) or not {"dtype", "shape"} <= set(entry) \
            or set(entry) - {"dtype", "shape", "data_offsets"}:
        raise ModelFileError(f"{where}: optimizer tensor {name!r} has a malformed header entry")
    code, shape = entry["dtype"], entry["shape"]
    if code != ST_CODES[dtype]:
        shown = ST_DTYPES.get(code, "an unknown dtype") if isinstance(code, str) else "?"
        raise ModelFileError(f"{where}: optimizer tensor {name!r} is {shown}, the model is "
                             f"{dtype}")
    if not (isinstance(shape, list) and all(_is_count(d) for d in shape)) \
            or tuple(shape) != expected[weight]:
        raise ModelFileError(f"{where}: optimizer tensor {name!r} has shape "
                             f"{_shape_text(shape)}, its weight {weight!r} has "
                             f"{expected[weight]}")
    return expected[weight]


def _shape_text(shape: Any) -> str:
    if isinstance(shape, list) and len(shape) <= 8 and all(_is_count(d) for d in shape):
        return str(tuple(shape))
    return "a malformed shape"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62


@dataclass
class ModelFile:
    """Everything a model file holds, checked (``read_model_file_full``)."""

    spec: dict
    weights: dict[str, np.ndarray]
    digest: str | None
    name: str | None = None
    compile_text: str | None = None  # the compile JSON exactly as stored
    compile: dict | None = None  # check_compile's settings
    compile_digest: str | None = None
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)  # "<slot>.<weight>"


def read_model_file(path: str | os.PathLike[str]) -> tuple[dict, dict[str, np.ndarray], str | None]:
    """(spec, weights, checksum) of a file written by ``save_model``.

    Checks before reading tensor data: the file type and size, the header, the spec
    (``validate_spec``) and every tensor entry against it (``check_header``), so memory
    stays within a small multiple of the file size, which is itself bounded by
    ``MAX_MODEL_BYTES``. The weights' values are checked against the spec by
    ``check_weights`` and against the checksum by ``check_digest``; a present checksum
    must be 64 lowercase hex digits. Optimizer state and compile settings, when the file
    has them, are checked too (``read_model_file_full``) but not returned.
    """
    full = read_model_file_full(path)
    return full.spec, full.weights, full.digest


def read_model_file_full(path: str | os.PathLike[str]) -> ModelFile:
    """``read_model_file`` with the rest: the model's name, its compile settings
    (``check_compile``) and optimizer state; check that part's checksum with
    ``check_compile_digest``."""
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
        name = metadata.get(NAME_KEY)
        if name is not None:
            _check_name(name, str(path))
        compile_text, compile_config = metadata.get(COMPILE_KEY), None
        if compile_text is not None:
            try:
                compile_config = check_compile(loads_bounded(compile_text,
                                                             "the compile settings",
                                                             max_depth=4))
            except ModelFileError as exc:
                raise ModelFileError(f"{path}: invalid compile settings ({exc})") from None
        elif any(k.startswith(OPTIMIZER_PREFIX) for k in header):
            raise ModelFileError(f"{path}: optimizer tensors without compile settings "
                                 f"(metadata key {COMPILE_KEY!r})")
        compile_sha = metadata.get(COMPILE_DIGEST_KEY)
        if compile_sha is not None and not _HEX64.fullmatch(compile_sha):
            raise ModelFileError(f"{path}: malformed compile checksum "
                                 f"({COMPILE_DIGEST_KEY!r} must be 64 hex digits)")
        handle.seek(0)
        data = _read_exactly(handle, size, path, "file")
        if handle.read(1):
            raise ModelFileError(f"{path}: the file grew while it was read")
    try:
        tensors = safetensors.numpy.load(data)
    except SafetensorError as exc:
        raise ModelFileError(f"{path}: corrupt or truncated tensor data ({exc})") from None
    optimizer = {k.removeprefix(OPTIMIZER_PREFIX): v for k, v in tensors.items()
                 if k.startswith(OPTIMIZER_PREFIX)}
    weights = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    return ModelFile(spec, weights, digest, name, compile_text, compile_config, compile_sha,
                     optimizer)


def check_compile_digest(saved: ModelFile, path: Any) -> None:
    """The compile settings and optimizer state against their checksum (required when
    the file has compile settings), and the optimizer state finite."""
    if saved.compile_text is None:
        return
    if saved.compile_digest is None:
        raise ModelFileError(f"{path}: compile settings without their checksum (metadata key "
                             f"{COMPILE_DIGEST_KEY!r}); mnistlab always writes one")
    if saved.compile_digest != compile_digest(saved.compile_text, saved.optimizer):
        raise ModelFileError(f"{path}: compile settings or optimizer state do not match "
                             "their checksum; the file was modified or damaged after saving")
    for key, value in saved.optimizer.items():
        if not np.isfinite(value).all():
            raise ModelFileError(f"{path}: optimizer state {key!r} contains NaN or infinite "
                                 "values")


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
