"""Safe import of the textbook's pretrained pickle (``sample_weight.pkl``) into a Sequential.

Why this exists: "Deep Learning from Scratch" ships its chapter-3 network as a pickled dict of
NumPy arrays, and users receive files like it from strangers. ``pickle.load`` runs whatever
a pickle asks for, so this module never calls it. It unpickles through an allow-list that
admits exactly the three globals a plain dict of arrays needs, checks every global in the
file *before* unpickling anything, validates the shapes, and only then builds the model.
The unpickler is the pure-Python one with its state-changing opcodes replaced: REDUCE calls
only the allow-listed functions, BUILD fills only the arrays they stand in for (with the exact
state tuple NumPy writes, sizes checked before allocating), and arrays, lists, dicts and the
memo are bounded, so a file changes nothing outside what it returns and takes memory in
proportion to its size.

    >>> model = import_weights("sample_weight.pkl")      # 784-50-100-10, sigmoid/sigmoid/softmax
    >>> model.predict(x_test).argmax(axis=1)              # x_test scaled to [0, 1]

One module, though long: the allow-list, the opcode handlers it replaces and the
conversion to a model are one security boundary, and a reviewer checks it in one place.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import re
import stat
import warnings
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

import numpy as np

from mnistlab.engines.io import open_regular_file
from mnistlab.errors import ModelFileError, UnsafePickleError

if TYPE_CHECKING:
    from mnistlab.engines.numpy import Sequential

__all__ = [
    "ALLOWED_GLOBALS",
    "LEGACY_SHAPES",
    "MAX_ARRAY_BYTES",
    "MAX_FILE_BYTES",
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

# Refuse to read anything larger than this: the real file is 178 KiB, and the textbook dict of
# float64 arrays would be 0.4 MiB.
MAX_FILE_BYTES = 8 * 1024 * 1024
# The arrays a pickle may build, in all: at most twice the file's size (each array's bytes are in
# the file; twice leaves room for a dict that names one array twice) and never over this.
MAX_ARRAY_BYTES = 64 * 1024 * 1024
MAX_ITEMS = 100_000  # in the memo, and in any one list or dict
MAX_NDIM = 8
# dtype codes as NumPy pickles them: plain numbers only (float, signed, unsigned, bool).
_DTYPE_CODE = re.compile(r"(f[248]|[iu][1248]|b1)")
_DTYPE_STATE_TAIL = (None, None, None, -1, -1, 0)  # subarray, names, fields, elsize, align, flags


class _Refused(Exception):
    """Raised by the allow-listed callables; ``safe_unpickle`` turns it into UnsafePickleError."""


class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` in the pickle: usable only as ``_reconstruct``'s subtype.

    Admitting the real class would let a pickle call ``ndarray(shape, ...)`` directly (a REDUCE
    on it) and allocate whatever it likes; the token refuses to be called, and no pickle can
    change it (BUILD is refused on everything but the placeholders below).
    """

    def __new__(cls, *args: object, **kwargs: object) -> _NdarrayToken:
        raise _Refused("it calls numpy.ndarray directly instead of through _reconstruct")


class _PendingArray:
    """What ``_reconstruct`` returns: an array with no data yet. Its BUILD (the state tuple
    ``(1, shape, dtype, is_fortran, rawdata)``) makes the real array, which the unpickler puts
    in its place; nothing is allocated before the data's size is known to match."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None


class _PendingDtype:
    """What ``numpy.dtype(code)`` returns: a description, never a real (shared) dtype object,
    so a pickle's BUILD on it cannot change NumPy's own float64 for the rest of the process."""

    __slots__ = ("byteorder", "code")

    def __init__(self, code: str) -> None:
        self.code, self.byteorder = code, None

    def dtype(self) -> np.dtype:
        dtype = np.dtype(self.code)
        return dtype.newbyteorder(self.byteorder) if self.byteorder in ("<", ">") else dtype


def _safe_reconstruct(subtype: object, shape: object, dtype_code: object) -> _PendingArray:
    """``numpy._core.multiarray._reconstruct`` for plain ndarrays: NumPy always pickles it as
    ``_reconstruct(ndarray, (0,), b'b')``, an empty array the BUILD after it fills; so those
    are the only arguments accepted, and nothing is allocated here."""
    if subtype is not _NdarrayToken:
        raise _Refused(f"_reconstruct may build only numpy.ndarray, not {_kind(subtype)}")
    if type(shape) is not tuple or shape != (0,) or dtype_code not in (b"b", "b"):
        raise _Refused("_reconstruct is called with arguments NumPy never writes")
    return _PendingArray()


def _safe_dtype(spec: object, align: object = False, copy: object = False) -> _PendingDtype:
    """``numpy.dtype`` restricted to a type code naming a plain number type (f, i, u, b)."""
    flags_ok = all(type(f) in (bool, int) and f in (0, 1) for f in (align, copy))
    if not isinstance(spec, str) or not flags_ok:
        raise _Refused("numpy.dtype is called with unexpected arguments "
                       f"({_kind(spec)}, {_kind(align)}, {_kind(copy)})")
    if not _DTYPE_CODE.fullmatch(spec):
        raise _Refused(f"it asks for dtype {spec[:20]!r}; only plain numeric arrays "
                       "(float, int, uint, bool) are allowed")
    return _PendingDtype(spec)


def _kind(value: object) -> str:
    """A name for an untrusted object that never runs its repr (which could be huge or deep)."""
    if isinstance(value, type):
        return f"the class {value.__qualname__}"
    return f"a {type(value).__name__}"


# (module, name) as written in the pickle -> what the unpickler hands back. Nothing is imported
# by name: NumPy 1 files say numpy.core, NumPy 2 files numpy._core; both map to the same object.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): _NdarrayToken,
    ("numpy", "dtype"): _safe_dtype,
}
_CALLABLE = frozenset(map(id, ALLOWED_GLOBALS.values()))
# Opcodes a dict of arrays never needs: they build objects by other routes (INST, OBJ, NEWOBJ),
# look outside the file (extension registry, persistent ids, out-of-band buffers) or hash
# arbitrary objects (sets).
_REFUSED_OPCODES = ("INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4", "PERSID",
                    "BINPERSID", "EMPTY_SET", "ADDITEMS", "FROZENSET", "BYTEARRAY8",
                    "NEXT_BUFFER", "READONLY_BUFFER")
_HASHABLE_KEYS = (str, bytes, int, float, bool, type(None))


class _AllowListUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """The pure-Python Unpickler (its memo a dict, no recursion, every opcode overridable)
    whose ``find_class`` admits only ``ALLOWED_GLOBALS``; REDUCE calls only those, BUILD acts
    only on the placeholders they return, and no structure grows past its bounds."""

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: io.BytesIO, source: str, array_budget: int) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 pickles: str data as bytes
        self._source = source
        self._budget = array_budget

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickleError(
                f"{self._source}: refusing to load a pickle that references {module}.{name} "
                "(only plain dicts of NumPy arrays are accepted; nothing was executed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self._source}: the pickle uses persistent ids, which are refused"
        )

    def _refuse_opcode(self) -> None:
        raise _Refused("it uses an opcode that a dict of arrays never needs")

    for _name in _REFUSED_OPCODES:
        dispatch[getattr(pickle, _name)[0]] = _refuse_opcode
    del _name

    def _load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in _CALLABLE or type(args) is not tuple:
            raise _Refused(f"it calls {_kind(func)}, which is not an allowed function")
        self.stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = _load_reduce

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is _PendingDtype and inst.byteorder is None:
            inst.byteorder = _dtype_byteorder(state)
        elif type(inst) is _PendingArray and inst.array is None:
            inst.array = self._array(state)
            self.stack[-1] = inst.array
        else:
            raise _Refused(f"it sets the state of {_kind(inst)} (BUILD is allowed only on the "
                           "arrays and dtypes the pickle reconstructs, once)")

    dispatch[pickle.BUILD[0]] = _load_build

    def _array(self, state: object) -> np.ndarray:
        """The array a NumPy state tuple describes, its size checked before allocating."""
        if type(state) is not tuple or len(state) != 5:
            raise _Refused(f"an array's state is {_kind(state)}, not NumPy's 5-tuple")
        version, shape, dtype, fortran, raw = state
        if type(version) is not int or version != 1:
            raise _Refused("an array's state has an unknown version")
        if (type(shape) is not tuple or len(shape) > MAX_NDIM
                or not all(type(d) is int and 0 <= d < 1 << 40 for d in shape)):
            raise _Refused("an array's shape is not a short tuple of sizes")
        if type(dtype) is not _PendingDtype or dtype.byteorder is None:
            raise _Refused("an array's dtype is not one the pickle made with numpy.dtype")
        if type(fortran) not in (bool, int) or fortran not in (0, 1):
            raise _Refused("an array's is_fortran flag is not a bool")
        if type(raw) is str:  # a Python 2 str, decoded as latin-1
            try:
                raw = raw.encode("latin1")
            except UnicodeEncodeError:
                raise _Refused("an array's data is not bytes") from None
        if type(raw) is not bytes:
            raise _Refused(f"an array's data is {_kind(raw)}, not bytes (object arrays are "
                           "refused)")
        np_dtype = dtype.dtype()
        nbytes = math.prod(shape) * np_dtype.itemsize
        if nbytes != len(raw):
            raise ModelFileError(f"{self._source}: an array of shape {shape} and dtype "
                                 f"{np_dtype} needs {nbytes} bytes, the pickle holds {len(raw)}")
        self._budget -= nbytes
        if self._budget < 0:
            raise _Refused("its arrays add up to more bytes than the file could hold")
        order = "F" if fortran else "C"
        return np.ndarray(shape, np_dtype, buffer=raw, order=order).copy(order="K")

    def _load_setitems(self) -> None:
        self._set_items(self.pop_mark())

    def _load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._set_items([key, value])

    def _set_items(self, items: list) -> None:
        target = self.stack[-1]
        if type(target) is not dict:
            raise ModelFileError(f"{self._source}: the pickle sets items of {_kind(target)}")
        self._check_keys(items[0::2])
        if len(target) + len(items) // 2 > MAX_ITEMS:
            raise ModelFileError(f"{self._source}: a dict of more than {MAX_ITEMS} items")
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def _check_keys(self, keys: list) -> None:
        for key in keys:  # hashing a deeply nested tuple would recurse in C
            if type(key) not in _HASHABLE_KEYS:
                raise ModelFileError(f"{self._source}: a dict key is {_kind(key)}; the weight "
                                     "dict's keys are strings")

    def _load_dict(self) -> None:
        items = self.pop_mark()
        self._check_keys(items[0::2])
        if len(items) // 2 > MAX_ITEMS:
            raise ModelFileError(f"{self._source}: a dict of more than {MAX_ITEMS} items")
        self.append({items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)})

    def _load_appends(self) -> None:
        self._extend(self.pop_mark())

    def _load_append(self) -> None:
        self._extend([self.stack.pop()])

    def _extend(self, items: list) -> None:
        target = self.stack[-1]
        if type(target) is not list:
            raise ModelFileError(f"{self._source}: the pickle appends to {_kind(target)}")
        if len(target) + len(items) > MAX_ITEMS:
            raise ModelFileError(f"{self._source}: a list of more than {MAX_ITEMS} items")
        target.extend(items)

    dispatch[pickle.SETITEMS[0]] = _load_setitems
    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.DICT[0]] = _load_dict
    dispatch[pickle.APPENDS[0]] = _load_appends
    dispatch[pickle.APPEND[0]] = _load_append


def _dtype_byteorder(state: object) -> str:
    """The byte order of NumPy's dtype state ``(3, order, None, None, None, -1, -1, 0)``; any
    other state (fields, object flags, metadata) is refused."""
    if (type(state) is not tuple or len(state) != 8 or type(state[0]) is not int
            or state[0] != 3 or state[1] not in ("<", ">", "|", "=")
            or any(type(a) is not type(b) or a != b
                   for a, b in zip(state[2:], _DTYPE_STATE_TAIL, strict=True))):
        raise _Refused("a dtype's state is not that of a plain number type")
    return state[1]


def _scan_globals(data: bytes, source: str) -> None:
    """Check every opcode before anything runs: truncation and foreign globals fail here.

    GLOBAL and INST name their global in the opcode; STACK_GLOBAL takes the two strings pushed
    just before it (directly or from the memo, as every pickler writes them). Where the scan
    cannot tell the names, ``find_class`` still refuses them at load time, before any call.
    Opcodes a dict of arrays never needs are refused, and the memo is bounded.
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
            if name in _REFUSED_OPCODES:
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
            if len(memo) > MAX_ITEMS:
                raise ModelFileError(f"{source}: the pickle's memo holds more than "
                                     f"{MAX_ITEMS} objects")
    except (UnsafePickleError, ModelFileError):
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

    Raises UnsafePickleError (before any of it runs) for any other global or opcode, for a
    state change on anything but the arrays it reconstructs, or for arrays adding up to more
    than twice ``len(data)`` bytes (and ``MAX_ARRAY_BYTES``); ModelFileError for a truncated or
    corrupt pickle, trailing bytes after it, or a list, dict or memo over ``MAX_ITEMS``.
    Arrays come back as plain, writable, numeric ndarrays; no state outside the returned
    object changes.
    """
    stream = io.BytesIO(data)
    budget = min(MAX_ARRAY_BYTES, 2 * len(data))
    try:
        with warnings.catch_warnings():  # protocol 0 strings with odd escapes: no noise
            warnings.simplefilter("ignore", DeprecationWarning)
            _scan_globals(data, source)
            obj = _AllowListUnpickler(stream, source, budget).load()
    except (UnsafePickleError, ModelFileError):
        raise
    except _Refused as error:
        raise UnsafePickleError(f"{source}: refusing to load the pickle: {error}") from None
    except Exception as error:  # UnpicklingError, EOFError, TypeError from a bad REDUCE, ...
        raise ModelFileError(
            f"{source}: cannot unpickle ({type(error).__name__}: {str(error)[:200]})"
        ) from None
    if stream.tell() != len(data):
        raise ModelFileError(
            f"{source}: {len(data) - stream.tell()} unexpected bytes after the pickle"
        )
    return _built(obj)


def _built(obj: Any) -> Any:
    """``obj`` with the placeholders of arrays it holds at its top level (a dict's values, a
    list's items: the memo can hand back the placeholder of an array already built) replaced
    by their arrays."""
    def real(value: Any) -> Any:
        return value.array if type(value) is _PendingArray and value.array is not None else value

    if type(obj) is dict:
        return {key: real(value) for key, value in obj.items()}
    if type(obj) is list:
        return [real(value) for value in obj]
    return real(obj)


def load_legacy_weights(source: str | os.PathLike[str] | BinaryIO) -> dict[str, np.ndarray]:
    """Read and validate the textbook weight pickle; returns C-contiguous float arrays by name.

    ``source`` is a path or a binary file open for reading (the textbook's ``with
    open("sample_weight.pkl", "rb") as f``). A path must name a regular file (devices and
    FIFOs are refused before reading) of at most ``MAX_FILE_BYTES``; an open file is read up
    to that limit. The file stores W1-W3 in Fortran order; the returned arrays are C-contiguous
    copies so the engine's matmuls and weight export (safetensors wants C order) behave as for
    any model.
    """
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        label = os.fspath(name) if isinstance(name, str | os.PathLike) else "<file>"
        data = _read_open_file(source, label)  # type: ignore[arg-type]
    else:
        label = os.fspath(source)
        handle, _size = open_regular_file(label, MAX_FILE_BYTES, "legacy weight file")
        with handle:
            data = _read_bounded(handle, label)
    if not data:
        raise ModelFileError(f"{label}: the file is empty")
    obj = safe_unpickle(data, label)
    return _validate(obj, label)


def _read_open_file(handle: BinaryIO, label: str) -> bytes:
    """Up to ``MAX_FILE_BYTES`` of an open binary file; a descriptor must be a regular file."""
    try:
        fd = handle.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None  # an in-memory file (io.BytesIO)
    if fd is not None:
        try:
            st = os.fstat(fd)
        except OSError as error:
            raise ModelFileError(f"{label}: cannot read ({error.strerror or error})") from None
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{label}: not a regular file (a device, FIFO or socket); "
                                 "refusing to read it as a legacy weight file")
    return _read_bounded(handle, label)


def _read_bounded(handle: BinaryIO, label: str) -> bytes:
    if isinstance(handle, io.TextIOBase):
        raise ModelFileError(f"{label}: not opened in binary mode (open it with 'rb')")
    try:
        data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ModelFileError(f"{label}: cannot read ({error.strerror or error})") from None
    except ValueError as error:  # a closed file; text decoding
        raise ModelFileError(f"{label}: cannot read ({error})") from None
    if not isinstance(data, bytes):
        raise ModelFileError(f"{label}: not opened in binary mode (open it with 'rb')")
    if len(data) > MAX_FILE_BYTES:
        raise ModelFileError(f"{label}: too large for a legacy weight file (over "
                             f"{MAX_FILE_BYTES} bytes)")
    return data


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
    model.set_named_weights(
        {f"{i}.{p}": weights[f"{p}{i + 1}"].astype(dtype) for i in range(3) for p in ("W", "b")}
    )
    return model
