"""The model spec's schema (docs/CONTRACTS.md), checked before anything is built or read.

A model file is untrusted input: its spec decides how much memory building the model takes
and which code paths run. ``validate_spec`` checks every key, type and number against a
strict schema with bounds, and ``expected_shapes`` computes every weight's shape from the
spec by arithmetic alone (nothing allocated), so a file can be refused before its tensors
are read or the model is built. ``loads_bounded`` parses JSON with its nesting depth
checked first, so that a deeply nested document is refused instead of recursing.

Bounds (far above any MNIST model, far below what would exhaust a machine):

- ``MAX_UNITS`` Dense units and Conv2D filters, ``MAX_WINDOW`` kernel, pool and stride
  sizes, ``MAX_LAYERS`` layers, ``MAX_INPUT_DIM`` per input axis and ``MAX_INPUT_VALUES``
  in all;
- ``MAX_PARAMS`` weights in the whole model (2**26: 256 MiB as float32, 512 MiB as float64);
- ``MAX_ACTIVATIONS`` values per sample in any layer's output;
- ``MAX_JSON_DEPTH`` nesting levels in any JSON read from a model file.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from mnistlab.errors import ModelFileError

SPEC_FORMAT, SPEC_VERSION = "mnistlab.model", 1
DTYPES = ("float32", "float64")
PIXEL_SCALES = ("unit", "raw", "0.01-1")  # as datasets.PIXEL_SCALES (not imported: no cycle)
ACTIVATION_NAMES = ("linear", "sigmoid", "relu", "tanh", "softmax", "elu", "selu", "leaky_relu",
                    "softplus", "swish", "silu", "gelu", "exponential")  # nn.activations
INITIALIZER_NAMES = ("xavier", "uniform", "normal", "glorot_uniform", "glorot_normal",
                     "he_uniform", "he_normal", "lecun_uniform", "lecun_normal", "random_normal",
                     "random_uniform", "truncated_normal", "zeros", "ones")  # nn.initializers
PADDINGS = ("valid", "same")

MAX_UNITS = 65536
MAX_WINDOW = 64
MAX_LAYERS = 256
MAX_INPUT_DIM = 4096
MAX_INPUT_VALUES = 1 << 20
MAX_CROP = MAX_INPUT_DIM
MAX_PARAMS = 1 << 26
MAX_ACTIVATIONS = 1 << 24
MAX_JSON_DEPTH = 16
MAX_SEED = (1 << 64) - 1
MAX_RANK = 8  # axes of a Reshape's target (the batch axis not counted)

__all__ = [
    "MAX_ACTIVATIONS",
    "MAX_JSON_DEPTH",
    "MAX_PARAMS",
    "expected_shapes",
    "loads_bounded",
    "validate_spec",
]

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class SpecError(ModelFileError):
    """The spec breaks the schema (a ModelFileError; the message says where and how)."""


def loads_bounded(text: str | bytes, what: str = "JSON",
                  max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` after checking that nesting never exceeds ``max_depth``: the depth is
    counted over the brackets outside strings, so nothing recurses on a hostile document.
    ModelFileError for bad UTF-8, bad JSON, too deep nesting or non-finite numbers."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelFileError(f"{what} is not UTF-8 ({exc})") from None
    depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > max_depth:
            raise ModelFileError(f"{what} is nested more than {max_depth} levels deep")

    def refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(text, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ModelFileError(f"{what} is not valid JSON ({exc})") from None


def _fail(where: str, problem: str) -> SpecError:
    return SpecError(f"{where}: {problem}")


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"must be an integer, got {_kind(value)}")
    if not lo <= value <= hi:
        raise _fail(where, f"must be between {lo} and {hi}, got {_short(value)}")
    return value


def _pair(value: Any, where: str, lo: int, hi: int) -> tuple[int, int]:
    if isinstance(value, list):
        if len(value) != 2:
            raise _fail(where, f"must be an integer or a pair of them, got {len(value)} values")
        return _int(value[0], where, lo, hi), _int(value[1], where, lo, hi)
    n = _int(value, where, lo, hi)
    return n, n


def _float(value: Any, where: str, lo: float = -math.inf, hi: float = math.inf,
           low_open: bool = False) -> float:
    """A finite JSON float (not an int or bool: ``get_config`` writes floats) in [lo, hi]
    (lo excluded when ``low_open``)."""
    if not isinstance(value, float):
        raise _fail(where, f"must be a number with a decimal point, got {_kind(value)}")
    if not math.isfinite(value) or not (lo < value if low_open else lo <= value) \
            or not value <= hi:
        bound = f"({lo}" if low_open else f"[{lo}"
        raise _fail(where, f"must be a finite number in {bound}, {hi}], got {_short(value)}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, f"must be true or false, got {_kind(value)}")
    return value


def _choice(value: Any, where: str, choices: tuple[str | None, ...]) -> Any:
    if not (value is None or isinstance(value, str)) or value not in choices:
        raise _fail(where, f"must be one of {[c for c in choices if c is not None]}, "
                           f"got {_short(value)}")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: Any) -> str:
    """A bounded description of an untrusted value (never a huge or deep repr)."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**30 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    return f"a {_kind(value)}"


def _keys(config: dict, where: str, required: set[str], optional: set[str]) -> None:
    unknown = [k for k in config if k not in required | optional]
    if unknown:
        raise _fail(where, f"unknown key {_short(unknown[0])}; known: "
                           f"{sorted(required | optional)}")
    missing = sorted(required - config.keys())
    if missing:
        raise _fail(where, f"missing key {missing[0]!r}")


_COMMON = {"type"}
_ANY = {"name"}  # optional on every layer: its Keras name
_IMAGE = {"data_format"}  # optional on the layers over images: nn.layers.ImageLayer
DATA_FORMATS = ("channels_first", "channels_last")  # nn.layers.DATA_FORMATS
MAX_NAME = 128
_LINEAR = {"activation", "kernel_initializer", "bias_initializer"}
_LAYER_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "Dense": ({"units"}, _LINEAR),
    "Conv2D": ({"filters", "kernel_size"}, _LINEAR | _IMAGE | {"strides", "padding"}),
    "MaxPooling2D": (set(), _IMAGE | {"pool_size", "strides", "padding"}),
    "AveragePooling2D": (set(), _IMAGE | {"pool_size", "strides", "padding"}),
    "GlobalAveragePooling2D": (set(), _IMAGE),
    "GlobalMaxPooling2D": (set(), _IMAGE),
    "Reshape": ({"target_shape"}, set()),
    "BatchNormalization": (set(), _IMAGE | {"momentum", "epsilon", "center", "scale"}),
    "ReLU": (set(), {"max_value", "negative_slope", "threshold"}),
    "LeakyReLU": (set(), {"negative_slope"}),
    "Softmax": (set(), {"axis"}),
    "Rescaling": ({"scale"}, {"offset"}),
    "Cropping2D": (set(), _IMAGE | {"cropping"}),
    "Flatten": (set(), set()),
    "Dropout": ({"rate"}, {"seed"}),
    "Activation": ({"activation"}, set()),
}


def _layer(config: Any, index: int, shape: tuple[int, ...]) -> tuple[dict, tuple[int, ...], int]:
    """(normalized config, output shape, weight count) of layer ``index`` on ``shape``; the
    count includes non-trainable weights (BatchNormalization's moving statistics)."""
    where = f"layers[{index}]"
    if not isinstance(config, dict):
        raise _fail(where, f"must be an object with a 'type', got {_kind(config)}")
    kind = config.get("type")
    if not isinstance(kind, str) or kind not in _LAYER_KEYS:
        raise _fail(f"{where}.type", f"unknown layer type {_short(kind)}; known: "
                                     f"{sorted(_LAYER_KEYS)}")
    where = f"{where} ({kind})"
    required, optional = _LAYER_KEYS[kind]
    _keys(config, where, required | _COMMON, optional | _ANY)
    out = dict(config)
    if "name" in config and not (isinstance(config["name"], str)
                                 and 0 < len(config["name"]) <= MAX_NAME):
        raise _fail(f"{where}.name", f"must be a string of 1 to {MAX_NAME} characters, got "
                                     f"{_short(config['name'])}")
    last = _choice(config.get("data_format", "channels_first"), f"{where}.data_format",
                   DATA_FORMATS) == "channels_last"
    for key in ("activation",):
        if key in config:
            _choice(config[key], f"{where}.{key}", (None, *ACTIVATION_NAMES))
    for key in ("kernel_initializer", "bias_initializer"):
        if key in config:
            _choice(config[key], f"{where}.{key}", INITIALIZER_NAMES)
    if "padding" in config:
        _choice(config["padding"], f"{where}.padding", PADDINGS)
    padding = config.get("padding", "valid")

    def images(what: str) -> tuple[int, int, int]:
        """(C, H, W) of the input, whichever side its channels are on."""
        if len(shape) != 3:
            raise _fail(where, f"{what} needs (channels, height, width) inputs, got {list(shape)}")
        return (shape[2], shape[0], shape[1]) if last else shape  # type: ignore[return-value]

    def image(c: int, h: int, w: int) -> tuple[int, int, int]:
        """A (C, H, W) output in the layer's data_format."""
        return (h, w, c) if last else (c, h, w)

    params = 0
    if kind == "Dense":
        units = _int(config["units"], f"{where}.units", 1, MAX_UNITS)
        if len(shape) != 1:
            raise _fail(where, f"Dense needs flat inputs, got {list(shape)}; put a Flatten first")
        params, shape = shape[0] * units + units, (units,)
    elif kind == "Conv2D":
        filters = _int(config["filters"], f"{where}.filters", 1, MAX_UNITS)
        kh, kw = _pair(config["kernel_size"], f"{where}.kernel_size", 1, MAX_WINDOW)
        sh, sw = _pair(config.get("strides", 1), f"{where}.strides", 1, MAX_WINDOW)
        c, h, w = images("Conv2D")
        params = filters * c * kh * kw + filters
        shape = image(filters, _out(h, kh, sh, padding, where), _out(w, kw, sw, padding, where))
    elif kind in ("MaxPooling2D", "AveragePooling2D"):
        ph, pw = _pair(config.get("pool_size", 2), f"{where}.pool_size", 1, MAX_WINDOW)
        strides = config.get("strides")
        sh, sw = (ph, pw) if strides is None else _pair(strides, f"{where}.strides", 1,
                                                         MAX_WINDOW)
        c, h, w = images(kind)
        shape = image(c, _out(h, ph, sh, padding, where), _out(w, pw, sw, padding, where))
    elif kind == "Cropping2D":
        (top, bottom), (left, right) = _cropping(config.get("cropping", 0), f"{where}.cropping")
        c, h, w = images("Cropping2D")
        if top + bottom >= h or left + right >= w:
            raise _fail(where, f"cropping leaves nothing of a {h}x{w} image")
        shape = image(c, h - top - bottom, w - left - right)
    elif kind == "Flatten":
        shape = (math.prod(shape),)
    elif kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        shape = (images(kind)[0],)
    elif kind == "Reshape":
        shape = _reshape(config["target_shape"], shape, f"{where}.target_shape")
    elif kind == "BatchNormalization":
        _float(config.get("momentum", 0.99), f"{where}.momentum", 0.0, 1.0)
        _float(config.get("epsilon", 1e-3), f"{where}.epsilon", 0.0, low_open=True)
        center = _bool(config.get("center", True), f"{where}.center")
        scale = _bool(config.get("scale", True), f"{where}.scale")
        if len(shape) not in (1, 3):
            raise _fail(where, f"BatchNormalization needs (features) or (channels, height, "
                               f"width) inputs, got {list(shape)}")
        channels = images(kind)[0] if len(shape) == 3 else shape[0]
        params = channels * (2 + center + scale)  # moving mean and variance, gamma, beta
    elif kind == "ReLU":
        if config.get("max_value") is not None:
            _float(config["max_value"], f"{where}.max_value", 0.0)
        _float(config.get("negative_slope", 0.0), f"{where}.negative_slope", 0.0)
        _float(config.get("threshold", 0.0), f"{where}.threshold")
    elif kind == "LeakyReLU":
        _float(config.get("negative_slope", 0.3), f"{where}.negative_slope", 0.0)
    elif kind == "Softmax":
        axis = _int(config.get("axis", -1), f"{where}.axis", -len(shape), len(shape))
        if axis == 0:
            raise _fail(f"{where}.axis", "must not be 0 (the batch axis)")
    elif kind == "Rescaling":
        _float(config["scale"], f"{where}.scale")
        _float(config.get("offset", 0.0), f"{where}.offset")
    elif kind == "Dropout":
        rate = config["rate"]
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
            raise _fail(f"{where}.rate", f"must be a number in [0, 1), got {_short(rate)}")
        seed = config.get("seed")
        if seed is not None:
            _int(seed, f"{where}.seed", 0, MAX_SEED)
    if math.prod(shape) > MAX_ACTIVATIONS:
        raise _fail(where, f"its output has {math.prod(shape)} values per sample, more than "
                           f"{MAX_ACTIVATIONS}")
    return out, shape, params


def _out(size: int, window: int, stride: int, padding: str, where: str) -> int:
    """Output length along one axis (``nn.layers.output_size``)."""
    if padding == "valid":
        if size < window:
            raise _fail(where, f"window {window} is larger than the input size {size}")
        return (size - window) // stride + 1
    return -(-size // stride)


def _reshape(value: Any, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """The output shape of Reshape(``value``) on ``shape`` (``nn.layers.Reshape.build``)."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_RANK:
        raise _fail(where, f"must be a list of 1 to {MAX_RANK} integers")
    dims = [d if type(d) is int and d == -1 else _int(d, where, 1, MAX_ACTIVATIONS)
            for d in value]
    if dims.count(-1) > 1:
        raise _fail(where, "may hold -1 (the rest) at most once")
    size, known = math.prod(shape), math.prod(d for d in dims if d != -1)
    out = tuple(size // known if d == -1 else d for d in dims)
    if math.prod(out) != size:
        raise _fail(where, f"cannot reshape {list(shape)} ({size} values) to {dims}")
    return out


def _cropping(value: Any, where: str) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(value, list) and len(value) == 2:
        rows, cols = value
        if all(isinstance(v, list) for v in (rows, cols)):
            return _pair(rows, where, 0, MAX_CROP), _pair(cols, where, 0, MAX_CROP)
        r, c = _int(rows, where, 0, MAX_CROP), _int(cols, where, 0, MAX_CROP)
        return (r, r), (c, c)
    if isinstance(value, list):
        raise _fail(where, "must be an int, [rows, columns] or [[top, bottom], [left, right]]")
    n = _int(value, where, 0, MAX_CROP)
    return (n, n), (n, n)


def _walk(spec: Any) -> tuple[tuple[int, ...], list[tuple[dict, tuple[int, ...], int]]]:
    """The input shape and, per layer, (config, output shape, weight count)."""
    if not isinstance(spec, dict):
        raise SpecError(f"a model spec must be a JSON object, got {_kind(spec)}")
    _keys(spec, "spec", {"format", "version", "input_shape", "dtype", "layers"},
          {"preprocess"})
    if spec["format"] != SPEC_FORMAT or spec["version"] != SPEC_VERSION \
            or isinstance(spec["version"], bool):
        raise SpecError(f"not a {SPEC_FORMAT} version {SPEC_VERSION} spec (format="
                        f"{_short(spec['format'])}, version={_short(spec['version'])})")
    dims = spec["input_shape"]
    if not isinstance(dims, list) or len(dims) not in (1, 3):
        raise _fail("input_shape", "must be [features] or [channels, height, width]")
    shape = tuple(_int(d, "input_shape", 1, MAX_INPUT_DIM) for d in dims)
    if math.prod(shape) > MAX_INPUT_VALUES:
        raise _fail("input_shape", f"{math.prod(shape)} values per sample, more than "
                                   f"{MAX_INPUT_VALUES}")
    _choice(spec["dtype"], "dtype", DTYPES)
    layers = spec["layers"]
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        raise _fail("layers", f"must be a list of 1 to {MAX_LAYERS} layers")
    preprocess = spec.get("preprocess", {"scale": "unit"})
    if not isinstance(preprocess, dict):
        raise _fail("preprocess", f"must be an object, got {_kind(preprocess)}")
    _keys(preprocess, "preprocess", set(), {"scale"})
    _choice(preprocess.get("scale", "unit"), "preprocess.scale", PIXEL_SCALES)
    walked, total, current = [], 0, shape
    for index, config in enumerate(layers):
        config, current, params = _layer(config, index, current)
        total += params
        if total > MAX_PARAMS:
            raise _fail(f"layers[{index}]", f"the model would have over {MAX_PARAMS} "
                                            f"weights ({total} so far)")
        walked.append((config, current, params))
    return shape, walked


def validate_spec(spec: Any) -> dict:
    """``spec`` itself when it is a valid, bounded model spec; SpecError (a ModelFileError)
    naming the first key that is wrong otherwise. Allocates nothing in proportion to the
    numbers in the spec, so any spec is checked in microseconds."""
    _walk(spec)
    return spec


def expected_shapes(spec: Any) -> dict[str, tuple[int, ...]]:
    """Every weight the model needs, ``{"0.W": (784, 50), "0.b": (50,), ...}``, computed
    from a spec (validated here too) without building anything."""
    shape, walked = _walk(spec)
    shapes: dict[str, tuple[int, ...]] = {}
    for index, (config, out, _params) in enumerate(walked):
        last = config.get("data_format") == "channels_last"
        channels_in = shape[-1] if last and len(shape) == 3 else shape[0]
        if config["type"] == "Dense":
            shapes[f"{index}.W"], shapes[f"{index}.b"] = (shape[0], out[0]), (out[0],)
        elif config["type"] == "Conv2D":
            kh, kw = _pair(config["kernel_size"], "kernel_size", 1, MAX_WINDOW)
            filters = config["filters"]
            shapes[f"{index}.W"] = (filters, channels_in, kh, kw)
            shapes[f"{index}.b"] = (filters,)
        elif config["type"] == "BatchNormalization":  # params, then state (the layer's order)
            names = (["gamma"] if config.get("scale", True) else []) \
                + (["beta"] if config.get("center", True) else []) \
                + ["moving_mean", "moving_variance"]
            shapes.update({f"{index}.{name}": (channels_in,) for name in names})
        shape = out
    return shapes
