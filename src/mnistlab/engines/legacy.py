"""Safe import of the textbook's pretrained pickle (``sample_weight.pkl``) into a Sequential.

Why this exists: "Deep Learning from Scratch" ships its chapter-3 network as a pickled dict of
NumPy arrays, and users receive files like it from strangers. ``pickle.load`` runs whatever
a pickle asks for, so this module never calls it. It unpickles through an allow-list that
admits exactly the three globals a plain dict of arrays needs, checks every global in the
file *before* unpickling anything, validates the shapes, and only then builds the model.

    >>> model = import_weights("sample_weight.pkl")      # 784-50-100-10, sigmoid/sigmoid/softmax
    >>> model.predict(x_test).argmax(axis=1)              # x_test scaled to [0, 1]
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy._core import multiarray as _multiarray

from mnistlab.errors import ModelFileError, UnsafePickleError

if TYPE_CHECKING:
    from mnistlab.engines.numpy import Sequential

__all__ = [
    "ALLOWED_GLOBALS",
    "LEGACY_SHAPES",
    "import_weights",
    "load_legacy_weights",
    "safe_unpickle",
]

# The textbook network: 784-50-100-10, sigmoid, sigmoid, softmax, inputs scaled to [0, 1].
LEGACY_SHAPES: dict[str, tuple[int, ...]] = {
    "W1": (784, 50),
    "b1": (50,),
    "W2": (50, 100),
    "b2": (100,),
    "W3": (100, 10),
    "b3": (10,),
}
_ACTIVATIONS = ("sigmoid", "sigmoid", "softmax")

# Refuse to read anything larger than this: the real file is 178 KiB.
MAX_FILE_BYTES = 256 * 1024 * 1024


class _Refused(Exception):
    """Raised by the allow-listed callables; ``safe_unpickle`` turns it into UnsafePickleError."""


class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` in the pickle: usable only as ``_reconstruct``'s subtype.

    Admitting the real class would let a pickle call ``ndarray(shape, ...)`` directly (a REDUCE
    on it) and allocate whatever it likes; the token refuses to be called.
    """

    def __new__(cls, *args: object, **kwargs: object) -> _NdarrayToken:
        raise _Refused("it calls numpy.ndarray directly instead of through _reconstruct")


def _safe_reconstruct(subtype: object, shape: object, dtype_code: object) -> np.ndarray:
    """``numpy._core.multiarray._reconstruct`` restricted to plain ndarrays (no subclasses)."""
    if subtype is not _NdarrayToken:
        raise _Refused(f"_reconstruct may build only numpy.ndarray, not {subtype!r}")
    return _multiarray._reconstruct(np.ndarray, shape, dtype_code)


def _safe_dtype(spec: object, align: object = False, copy: object = False) -> np.dtype:
    """``numpy.dtype`` restricted to a type code string naming a numeric (non-object) type."""
    flags_ok = all(isinstance(f, bool | int) and f in (0, 1) for f in (align, copy))
    if not isinstance(spec, str) or not flags_ok:
        raise _Refused(f"numpy.dtype is called with unexpected arguments {(spec, align, copy)!r}")
    dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dtype.hasobject or dtype.kind not in "biufc":
        raise _Refused(f"it asks for dtype {spec!r}; only numeric arrays are allowed")
    return dtype


# (module, name) as written in the pickle -> what the unpickler hands back. Nothing is imported
# by name: NumPy 1 files say numpy.core, NumPy 2 files numpy._core; both map to the same object.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): _NdarrayToken,
    ("numpy", "dtype"): _safe_dtype,
}


class _AllowListUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` admits only ``ALLOWED_GLOBALS``."""

    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to load a pickle that references {module}.{name} "
                "(only plain dicts of NumPy arrays are accepted; nothing was executed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self._source}: the pickle uses persistent ids, which are refused"
        )


def _scan_globals(data: bytes, source: str) -> None:
    """Check every opcode before anything runs: truncation and foreign globals fail here.

    GLOBAL and INST name their global in the opcode; STACK_GLOBAL takes the two strings pushed
    just before it (directly or from the memo, as every pickler writes them). Where the scan
    cannot tell the names, ``find_class`` still refuses them at load time, before any call.
    """
    recent: deque[object] = deque([None, None], maxlen=2)  # values of the last two pushes
    memo: dict[int, object] = {}
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            name = opcode.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                _check_global(module, attr, source)
            elif name == "STACK_GLOBAL":
                module, attr = recent
                if isinstance(module, str) and isinstance(attr, str):
                    _check_global(module, attr, source)
            elif name in ("EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"):
                raise UnsafePickleError(
                    f"{source}: the pickle uses the {name} opcode, which is refused"
                )
            if name == "MEMOIZE":
                memo[len(memo)] = recent[-1]
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = recent[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                recent.append(memo.get(int(arg)))
            elif name not in ("PROTO", "FRAME"):
                recent.append(arg if isinstance(arg, str) and "UNICODE" in name else None)
    except UnsafePickleError:
        raise
    except Exception as error:  # pickletools raises ValueError on truncated or garbled input
        raise ModelFileError(
            f"{source}: not a complete pickle (truncated or corrupt: {error})"
        ) from None


def _check_global(module: str, name: str, source: str) -> None:
    if (module, name) not in ALLOWED_GLOBALS:
        raise UnsafePickleError(
            f"{source}: refusing to load a pickle that references {module}.{name} "
            "(only plain dicts of NumPy arrays are accepted; nothing was executed)"
        )


def safe_unpickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` admitting only what a plain dict of NumPy arrays needs.

    Raises UnsafePickleError (before any of it runs) for any other global, and ModelFileError
    for a truncated or corrupt pickle or trailing bytes after it.
    """
    _scan_globals(data, source)
    stream = io.BytesIO(data)
    try:
        obj = _AllowListUnpickler(stream, source).load()
    except UnsafePickleError:
        raise
    except _Refused as error:
        raise UnsafePickleError(f"{source}: refusing to load the pickle: {error}") from None
    except Exception as error:  # UnpicklingError, EOFError, TypeError from a bad REDUCE, ...
        raise ModelFileError(
            f"{source}: cannot unpickle ({type(error).__name__}: {error})"
        ) from None
    if stream.tell() != len(data):
        raise ModelFileError(
            f"{source}: {len(data) - stream.tell()} unexpected bytes after the pickle"
        )
    return obj


def load_legacy_weights(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read and validate the textbook weight pickle; returns C-contiguous float arrays by name.

    The file stores W1-W3 in Fortran order; the returned arrays are C-contiguous copies so the
    engine's matmuls and weight export (safetensors wants C order) behave as for any model.
    """
    source = os.fspath(path)
    try:
        size = os.path.getsize(source)
        if size > MAX_FILE_BYTES:
            raise ModelFileError(f"{source}: {size} bytes is too large for a legacy weight file")
        with open(source, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ModelFileError(f"{source}: cannot read ({error.strerror or error})") from error
    if not data:
        raise ModelFileError(f"{source}: the file is empty")
    obj = safe_unpickle(data, source)
    return _validate(obj, source)


def _validate(obj: object, source: str) -> dict[str, np.ndarray]:
    """Check the unpickled object is exactly the textbook dict; explain the first problem found."""
    if not isinstance(obj, dict):
        raise ModelFileError(
            f"{source}: expected a dict of arrays W1, b1, W2, b2, W3, b3, "
            f"found {type(obj).__name__}"
        )
    keys = set(obj)
    missing = [k for k in LEGACY_SHAPES if k not in keys]
    extra = sorted(repr(k) for k in keys if k not in LEGACY_SHAPES)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected keys {', '.join(extra)}")
        raise ModelFileError(f"{source}: not the textbook weight dict ({'; '.join(parts)})")
    weights: dict[str, np.ndarray] = {}
    for key, shape in LEGACY_SHAPES.items():
        value = obj[key]
        if not isinstance(value, np.ndarray):
            raise ModelFileError(f"{source}: {key} is a {type(value).__name__}, not a NumPy array")
        if value.shape != shape:
            raise ModelFileError(f"{source}: {key} has shape {value.shape}, expected {shape}")
        if value.dtype.kind != "f":
            raise ModelFileError(
                f"{source}: {key} has dtype {value.dtype}, expected floating point"
            )
        if not np.all(np.isfinite(value)):
            raise ModelFileError(f"{source}: {key} contains NaN or infinite values")
        weights[key] = np.array(value, order="C", copy=True)
    return weights


def import_weights(path: str | os.PathLike[str], dtype: str = "float32") -> Sequential:
    """Build the textbook 784-50-100-10 sigmoid/sigmoid/softmax net from its weight pickle.

    The model expects pixels scaled to [0, 1] (spec preprocess scale "unit"); on the MNIST test
    set it classifies 9,352 of 10,000 images correctly, in float32 and float64 alike.
    """
    from mnistlab.engines.numpy import Sequential
    from mnistlab.nn.layers import Dense

    weights = load_legacy_weights(path)
    units = [LEGACY_SHAPES[f"W{i}"][1] for i in (1, 2, 3)]
    layers = [Dense(n, activation=a) for n, a in zip(units, _ACTIVATIONS, strict=True)]
    model = Sequential(
        layers, input_shape=(784,), dtype=dtype, preprocess={"scale": "unit"}, name="textbook"
    )
    model.build()
    model.set_weights(
        {f"{i}.{p}": weights[f"{p}{i + 1}"].astype(dtype) for i in range(3) for p in ("W", "b")}
    )
    return model
