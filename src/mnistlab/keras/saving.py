"""Keras 3's ``keras.saving``: ``save_model``/``load_model`` and ``save_weights``/
``load_weights`` for ``mnistlab.keras.models.Sequential``, never a pickle.

What ``save_model`` writes is mnistlab's safetensors model file (``mnistlab.engines.io``:
spec, weights, SHA-256, atomic, non-finite weights refused) whatever the extension
(".keras", ".h5", ".safetensors", ...), so ``mnistlab eval``/``predict`` read it as any
model file. For a compiled model it also holds what resuming training needs: the compile
settings (optimizer name and hyperparameters, its step count, loss name and settings such
as ``from_logits``, metric names) and the optimizer's state, so that ``load_model`` gives
back the compiled model and training continues exactly where it stopped (same weights
after the next step as without the save and load). The model's name and its layers'
names are kept. Dropout's random generators are not saved: a model with Dropout continues
with other masks than it would have without the save.

``load_model`` reads those files, and also a ``.keras`` file that real Keras 3 wrote (a zip
of config.json, model.weights.h5 and metadata.json) for a ``keras.Sequential`` of the
layers mnistlab has (Dense, Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
GlobalMaxPooling2D, Cropping2D, Flatten, Reshape, Dropout, Activation, BatchNormalization,
ReLU, LeakyReLU, Softmax, Rescaling, InputLayer), each with the options mnistlab
implements; anything else (a Functional model, another layer, ``use_bias=False``,
``dilation_rate``, regularizers, ...) is refused by one ``ModelFileError`` naming the layer
and the option. The archive is read in memory, never extracted: its members are bounded
in number and size and refused when they would decompress more than ``MAX_RATIO`` times;
config.json is parsed with its nesting bounded; every HDF5 dataset's shape and dtype is
checked against the model's before it is read (external and virtual datasets refused),
and the model's size against the spec's bounds (``MAX_PARAMS``) before it is built.
Initializer settings are not read (the weights are). With ``compile=True`` the model is
compiled from the file's compile_config (optimizer by name with its learning rate and the
hyperparameters mnistlab's optimizer takes; loss by name or class, with ``from_logits``;
accuracy metrics). Keras's optimizer state is *not* restored (its variables are stored by
position, in an order that changed between Keras versions): a warning says so, and
training restarts the optimizer's moments and step count.

``save_weights`` writes the weights alone as safetensors whatever the extension (Keras 3
insists on ".weights.h5": accepted, and still safetensors). ``load_weights`` takes such a
file, a full model file of the same architecture, or a ``.weights.h5`` (or ``.keras``)
file real Keras 3 wrote for a model of the same layers.

Everything wrong with a file is a ``ModelFileError`` naming the file and the problem.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from mnistlab.atomic import atomic_write_bytes
from mnistlab.engines.io import (
    DIGEST_KEY,
    MAX_MODEL_BYTES,
    ModelFile,
    check_compile_digest,
    check_digest,
    check_header,
    check_weights,
    constructor_arguments,
    open_regular_file,
    read_header,
    read_model_file_full,
    weights_digest,
)
from mnistlab.engines.io import (
    save_model as save_model_file,
)
from mnistlab.engines.spec import MAX_LAYERS, MAX_PARAMS, expected_shapes, loads_bounded
from mnistlab.errors import ModelFileError
from mnistlab.keras import layers as keras_layers
from mnistlab.nn import layers as nn_layers
from mnistlab.nn.losses import LOSSES
from mnistlab.nn.optimizers import OPTIMIZERS

__all__ = ["load_model", "load_weights", "save_model", "save_weights"]

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
WEIGHTS_FORMAT_KEY, WEIGHTS_FORMAT = "mnistlab.weights", "1"
MAX_MEMBERS = 16  # a Keras file has 3 (4 with assets)
MAX_CONFIG_BYTES = 1 << 20  # config.json (a few KiB for an MNIST model)
MAX_METADATA_BYTES = 1 << 16
# model.weights.h5: float32 weights, up to 3 optimizer arrays each, and HDF5's own overhead
MAX_H5_BYTES = MAX_PARAMS * 4 * 4 + (1 << 24)
MAX_KERAS_BYTES = MAX_H5_BYTES + MAX_CONFIG_BYTES + MAX_METADATA_BYTES + (1 << 20)
MAX_RATIO = 100  # uncompressed / compressed size of a member over 64 KiB
MAX_CONFIG_DEPTH = 32  # Keras's config.json nests about 8 levels for a Sequential
MAX_LAYER_VARS = 8


# ---- saving --------------------------------------------------------------------------------


def save_model(model: Any, filepath: str | os.PathLike[str], overwrite: bool = True) -> None:
    """``model`` as mnistlab's safetensors model file at ``filepath`` whatever its extension,
    atomically, with its name, its layers' names and, when compiled, its compile settings and
    optimizer state (see the module docstring). FileExistsError when the file exists and
    ``overwrite`` is False."""
    _check_overwrite(filepath, overwrite)
    name = getattr(model, "name", None)
    if name is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}", str(name)):
        warnings.warn(f"the model name {name!r} is not saved (a file keeps names of 1 to 128 "
                      "letters, digits, '_', '.', '-')", stacklevel=2)
        name = None
    compile_config, state = None, None
    if getattr(model, "optimizer", None) is not None and getattr(model, "loss", None) is not None:
        compile_config, state = _compile_settings(model, filepath)
    save_model_file(model, filepath, name=name, compile_config=compile_config,
                    optimizer_state=state)


def _check_overwrite(filepath: str | os.PathLike[str], overwrite: bool) -> None:
    if not overwrite and os.path.lexists(filepath):
        raise FileExistsError(f"{filepath}: exists, and overwrite=False")


def _plain(value: Any, where: str) -> Any:
    """A hyperparameter as a JSON scalar (NumPy scalars become Python ones)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | float):
        return value
    raise ModelFileError(f"{where} is {type(value).__name__}, not a number; a model file "
                         "keeps plain numbers only")


def _compile_settings(model: Any, path: Any) -> tuple[dict, dict[str, np.ndarray]]:
    """(compile config in ``engines.io.check_compile``'s schema, optimizer state by
    "<slot>.<weight>") of a compiled model."""
    optimizer, loss = model.optimizer, model.loss
    cls = OPTIMIZERS.get(getattr(optimizer, "name", None))
    if cls is None:
        raise ModelFileError(f"{path}: not saved, optimizer {type(optimizer).__name__} has no "
                             f"name mnistlab knows ({sorted(OPTIMIZERS)})")
    settings = _constructor_settings(optimizer, cls, "optimizer", path)
    loss_cls = LOSSES.get(getattr(loss, "name", None))
    if loss_cls is None:
        raise ModelFileError(f"{path}: not saved, loss {type(loss).__name__} has no name "
                             f"mnistlab knows ({sorted(LOSSES)})")
    loss_settings = _constructor_settings(loss, loss_cls, "loss", path)
    flat = optimizer.get_state()
    iterations = int(np.asarray(flat.pop("iterations", getattr(optimizer, "iterations", 0))))
    scalars = sorted(k for k, v in flat.items() if np.ndim(v) == 0)
    if scalars:
        raise ModelFileError(f"{path}: not saved, optimizer state {scalars} is not per-weight "
                             "and model files keep only the step count")
    config = {"format": "mnistlab.compile", "version": 1,
              "optimizer": {"name": optimizer.name, "config": settings,
                            "iterations": iterations},
              "loss": {"name": loss.name, "config": loss_settings},
              "metrics": list(getattr(model, "metrics", []) or [])}
    return config, {k: np.ascontiguousarray(v) for k, v in flat.items()}


def _constructor_settings(obj: Any, cls: type, what: str, path: Any) -> dict[str, Any]:
    """The arguments that rebuild ``obj`` as ``cls(**settings)``: its ``get_config()`` less
    its name (mnistlab's optimizers and losses give exactly their constructor arguments),
    else the attributes named as the constructor's arguments."""
    arguments = constructor_arguments(cls)
    if hasattr(obj, "get_config"):
        config = {k: v for k, v in obj.get_config().items() if k != "name"}
    else:
        config = {a: getattr(obj, a) for a in sorted(arguments) if hasattr(obj, a)}
    if "learning_rate" in config and "lr" in config:
        config.pop("lr")
    unknown = sorted(config.keys() - arguments)
    if unknown:
        raise ModelFileError(f"{path}: not saved, {what} setting {unknown[0]!r} is not an "
                             f"argument of {cls.__name__} and could not be restored")
    return {k: _plain(v, f"{path}: {what} setting {k}") for k, v in sorted(config.items())}


def save_weights(model: Any, filepath: str | os.PathLike[str], overwrite: bool = True) -> None:
    """The weights alone (``named_weights``: names "0.W", ... in mnistlab's layouts) with
    their SHA-256, as safetensors whatever the extension, ".weights.h5" included (Keras 3
    requires that name; the file is still safetensors, not HDF5), atomically.
    Non-finite weights are refused, as in model files."""
    _check_overwrite(filepath, overwrite)
    weights = {k: np.ascontiguousarray(v) for k, v in model.named_weights().items()}
    for name, w in weights.items():
        if not np.isfinite(w).all():
            raise ModelFileError(f"{filepath}: not saved, weight {name!r} holds NaN or "
                                 "infinite values (the model diverged)")
    metadata = {WEIGHTS_FORMAT_KEY: WEIGHTS_FORMAT, DIGEST_KEY: weights_digest(weights)}
    atomic_write_bytes(filepath, safetensors.numpy.save(weights, metadata=metadata))


# ---- loading mnistlab files ------------------------------------------------------------------


def load_model(filepath: str | os.PathLike[str], compile: bool = True) -> Any:
    """The ``mnistlab.keras.models.Sequential`` a file describes: mnistlab's model file
    (compiled with its saved settings and optimizer state when ``compile`` and the file has
    them) or a ``.keras`` file real Keras 3 saved (see the module docstring)."""
    path = Path(filepath)
    kind = _file_kind(path)
    if kind == "zip":
        config, weights_h5 = _read_keras_archive(path)
        return _model_from_keras(config, weights_h5, path, compile)
    if kind == "hdf5":
        raise ModelFileError(f"{path}: an HDF5 file (Keras's legacy .h5 model or a "
                             ".weights.h5 file); load_model reads .keras files and mnistlab "
                             "model files; for weights use model.load_weights")
    return _model_from_file(read_model_file_full(path), path, compile)


def _file_kind(path: Path) -> str:
    handle, _ = open_regular_file(path, max(MAX_MODEL_BYTES, MAX_KERAS_BYTES))
    with handle:
        magic = handle.read(8)
    if magic.startswith(ZIP_MAGIC):
        return "zip"
    if magic == HDF5_MAGIC:
        return "hdf5"
    return "safetensors"


def _keras_layer_from_config(config: dict) -> nn_layers.Layer:
    """The ``mnistlab.keras`` layer for one (validated) spec layer config: the nn layer's
    constructor on an instance of the Keras class of the same name, so it keeps the
    config's data_format and answers Keras's ``get_weights``."""
    kwargs = dict(config)
    kind, name = kwargs.pop("type"), kwargs.pop("name", None)
    cls = getattr(keras_layers, kind, None)
    base = nn_layers.LAYER_TYPES[kind]
    if cls is None or not issubclass(cls, base):
        layer = base(**kwargs)
    else:
        layer = cls.__new__(cls)
        base.__init__(layer, **kwargs)
        if kind == "BatchNormalization":
            layer.axis = 1 if layer.data_format == "channels_first" else -1
    keras_layers.name_layer(layer, name)
    return layer


def _model_from_file(saved: ModelFile, path: Path, compile: bool) -> Any:
    from mnistlab.keras.models import Sequential

    check_digest(saved.weights, saved.digest, path)
    spec = saved.spec
    try:
        layers = [_keras_layer_from_config(c) for c in spec["layers"]]
        model = Sequential(layers, name=saved.name)
        model.dtype = np.dtype(spec["dtype"])
        model.preprocess = dict(spec.get("preprocess", {"scale": "unit"}))
        model.build(tuple(spec["input_shape"]))
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ModelFileError(f"{path}: invalid model spec ({exc})") from None
    check_weights(saved.weights, {**model.named_params(), **model.named_state()}, path)
    model.set_named_weights(saved.weights)
    if compile and saved.compile is not None:
        check_compile_digest(saved, path)
        _compile_from_settings(model, saved.compile, saved.optimizer, path)
    return model


def _compile_from_settings(model: Any, config: dict, state: dict[str, np.ndarray],
                           path: Path) -> None:
    """Compile ``model`` with settings ``check_compile`` accepted, then restore the
    optimizer's step count and state."""
    opt, loss = config["optimizer"], config["loss"]
    try:
        optimizer = OPTIMIZERS[opt["name"]](**opt["config"])
        loss_object = LOSSES[loss["name"]](**loss["config"])
        model.compile(optimizer=optimizer, loss=loss_object, metrics=config["metrics"])
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: invalid compile settings ({exc})") from None
    flat = {k: np.array(v) for k, v in state.items()}
    flat["iterations"] = np.array(opt["iterations"], dtype=np.int64)
    model.optimizer.set_state(flat)


# ---- weights ---------------------------------------------------------------------------------


def load_weights(model: Any, filepath: str | os.PathLike[str]) -> None:
    """Weights into ``model`` from ``save_weights``'s file, a model file of the same
    architecture, or a Keras 3 ``.weights.h5``/``.keras`` file of the same layers; every
    name and shape is checked against the model before anything is written."""
    path = Path(filepath)
    model._ensure_built()
    kind = _file_kind(path)
    if kind in ("zip", "hdf5"):
        if kind == "zip":
            _, data = _read_keras_archive(path)
        else:
            handle, size = open_regular_file(path, MAX_H5_BYTES, "Keras weights file")
            with handle:
                data = handle.read(size + 1)
            if len(data) != size:
                raise ModelFileError(f"{path}: the file changed size while it was read")
        entries = [(type(layer).__name__, layer) for layer in model.layers]
        weights = _read_h5_weights(data, entries, _model_shapes(model), path)
        model.set_named_weights(weights)
        return
    handle, size = open_regular_file(path, MAX_MODEL_BYTES, "weights file")
    with handle:
        header, _ = read_header(handle, size, path)
    metadata = header.get("__metadata__")
    if isinstance(metadata, dict) and "mnistlab.spec" in metadata:
        saved = read_model_file_full(path)
        check_digest(saved.weights, saved.digest, path)
        tensors = saved.weights
    else:
        tensors = _read_weights_file(path, model)
    expected = {**model.named_params(), **model.named_state()}
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    want = {k: tuple(v.shape) for k, v in expected.items()}
    if shapes != want:
        missing, extra = sorted(want.keys() - shapes.keys()), sorted(shapes.keys() - want)
        wrong = [k for k in want.keys() & shapes.keys() if want[k] != shapes[k]]
        detail = (f"missing {missing}" if missing else f"unexpected {extra}" if extra
                  else f"weight {wrong[0]!r} has shape {shapes[wrong[0]]}, the model needs "
                       f"{want[wrong[0]]}")
        raise ModelFileError(f"{path}: the weights do not fit this model ({detail})")
    check_weights({k: v.astype(expected[k].dtype, copy=False) for k, v in tensors.items()},
                  expected, path)
    model.set_named_weights(tensors)


def _read_weights_file(path: Path, model: Any) -> dict[str, np.ndarray]:
    """The tensors of ``save_weights``'s file, the header checked against ``model``'s spec
    (names, shapes, dtype, byte ranges) before the data is read."""
    handle, size = open_regular_file(path, MAX_MODEL_BYTES, "weights file")
    with handle:
        header, length = read_header(handle, size, path)
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str)
                                                     for v in metadata.values()):
            raise ModelFileError(f"{path}: unreadable safetensors header (metadata values "
                                 "must be strings)")
        spec = model.spec()
        dtypes = {e.get("dtype") for k, e in header.items()
                  if k != "__metadata__" and isinstance(e, dict)}
        if dtypes == {"F64"} or dtypes == {"F32"}:  # the file's own dtype; cast on load
            spec = {**spec, "dtype": "float64" if dtypes == {"F64"} else "float32"}
        check_header(header, spec, size - 8 - length, path)
        if any(k.startswith("optimizer/") for k in header):
            raise ModelFileError(f"{path}: a weights file holds no optimizer state")
        handle.seek(0)
        data = handle.read(size + 1)
    if len(data) != size:
        raise ModelFileError(f"{path}: the file changed size while it was read")
    try:
        tensors = safetensors.numpy.load(data)
    except SafetensorError as exc:
        raise ModelFileError(f"{path}: corrupt or truncated tensor data ({exc})") from None
    digest = metadata.get(DIGEST_KEY)
    if digest is not None:
        check_digest(tensors, digest, path)
    return tensors


def _model_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    return model.weight_shapes()


# ---- Keras 3's .keras files ------------------------------------------------------------------


def _read_keras_archive(path: Path) -> tuple[dict, bytes]:
    """(parsed config.json, the bytes of model.weights.h5) of a Keras 3 ``.keras`` zip,
    read in memory with every member's size and compression checked first."""
    handle, _ = open_regular_file(path, MAX_KERAS_BYTES, "Keras model file")
    with handle:
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
                NotImplementedError) as exc:
            raise ModelFileError(f"{path}: not a readable .keras file (a damaged or truncated "
                                 f"zip: {exc})") from None
        with archive:
            infos = archive.infolist()
            if len(infos) > MAX_MEMBERS:
                raise ModelFileError(f"{path}: {len(infos)} members in the archive, a .keras "
                                     f"file has at most {MAX_MEMBERS}")
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise ModelFileError(f"{path}: the archive holds a member twice")
            members = {i.filename: i for i in infos}
            for required in ("config.json", "model.weights.h5"):
                if required not in members:
                    raise ModelFileError(f"{path}: not a Keras 3 .keras file (no {required} "
                                         "in the archive)")
            config_bytes = _read_member(archive, members["config.json"], MAX_CONFIG_BYTES,
                                        path)
            weights_h5 = _read_member(archive, members["model.weights.h5"], MAX_H5_BYTES,
                                      path)
    try:
        config = loads_bounded(config_bytes, "config.json", max_depth=MAX_CONFIG_DEPTH)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: unreadable config.json ({exc})") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: config.json is not a JSON object")
    return config, weights_h5


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int,
                 path: Path) -> bytes:
    """A member's bytes: refused before decompressing when it is encrypted, compressed in a
    way Keras never writes, larger than ``limit``, or compressed more than ``MAX_RATIO``
    times (a zip bomb); read at most its declared size."""
    where = f"{path}: archive member {info.filename!r}"
    if info.flag_bits & 0x1:
        raise ModelFileError(f"{where} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ModelFileError(f"{where} uses compression method {info.compress_type}; "
                             ".keras files are stored or deflated")
    if info.file_size > limit:
        raise ModelFileError(f"{where} is {info.file_size} bytes uncompressed, at most "
                             f"{limit} are allowed")
    if info.file_size > 1 << 16 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise ModelFileError(f"{where} would decompress {info.file_size} bytes from "
                             f"{info.compress_size} (more than {MAX_RATIO} times: a zip bomb?)")
    try:
        with archive.open(info) as member:
            data = member.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError,
            NotImplementedError) as exc:
        raise ModelFileError(f"{where} is damaged or truncated ({exc})") from None
    if len(data) != info.file_size:
        raise ModelFileError(f"{where} holds {len(data)} bytes, its header says "
                             f"{info.file_size}")
    return data


# Per Keras layer class: (arguments passed on to the mnistlab.keras layer, options that must
# keep their default, options ignored whatever their value). Unknown options must be null.
_NONE_OPTIONS = ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                 "kernel_constraint", "bias_constraint", "quantization_config", "lora_rank")
_INITIALIZERS = {"kernel_initializer", "bias_initializer", "lora_alpha"}
_KERAS_LAYERS: dict[str, tuple[set[str], dict[str, Any], set[str]]] = {
    "Dense": ({"units", "activation"}, {"use_bias": True, **dict.fromkeys(_NONE_OPTIONS)},
              _INITIALIZERS),
    "Conv2D": ({"filters", "kernel_size", "strides", "padding", "data_format", "activation"},
               {"dilation_rate": [1, 1], "groups": 1, "use_bias": True,
                **dict.fromkeys(_NONE_OPTIONS)}, _INITIALIZERS),
    "MaxPooling2D": ({"pool_size", "strides", "padding", "data_format"}, {}, set()),
    "AveragePooling2D": ({"pool_size", "strides", "padding", "data_format"}, {}, set()),
    "GlobalAveragePooling2D": ({"data_format"}, {"keepdims": False}, set()),
    "GlobalMaxPooling2D": ({"data_format"}, {"keepdims": False}, set()),
    "Cropping2D": ({"cropping", "data_format"}, {}, set()),
    "Flatten": ({"data_format"}, {}, set()),
    "Reshape": ({"target_shape"}, {}, set()),
    "Dropout": ({"rate", "seed"}, {"noise_shape": None}, set()),
    "Activation": ({"activation"}, {}, set()),
    "BatchNormalization": ({"axis", "momentum", "epsilon", "center", "scale"},
                           {"beta_regularizer": None, "gamma_regularizer": None,
                            "beta_constraint": None, "gamma_constraint": None,
                            "synchronized": False, "renorm": False},
                           {"beta_initializer", "gamma_initializer", "moving_mean_initializer",
                            "moving_variance_initializer", "renorm_clipping",
                            "renorm_momentum"}),
    "ReLU": ({"max_value", "negative_slope", "threshold"}, {}, set()),
    "LeakyReLU": ({"negative_slope", "alpha"}, {}, set()),
    "Softmax": ({"axis"}, {}, set()),
    "Rescaling": ({"scale", "offset"}, {}, set()),
}
_COMMON = {"name", "trainable", "dtype"}


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | None) \
        else f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:60] + "..."


def _check_dtype(value: Any, where: str) -> None:
    """A Keras dtype or DTypePolicy config: float32 only."""
    name = value
    if isinstance(value, dict):
        inner = value.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
    if name not in (None, "float32"):
        raise ModelFileError(f"{where}: option dtype={_short(name)} is not supported by "
                             "mnistlab (float32 models only)")


def _default_holds(value: Any, default: Any) -> bool:
    if isinstance(default, list):  # [1, 1] also written 1 or (1, 1)
        return value == default or value == default[0]
    return value == default and type(value) is type(default)


def _keras_layer(entry: Any, index: int, path: Path) -> tuple[str, nn_layers.Layer | None,
                                                               tuple[int, ...] | None]:
    """(Keras class name, the mnistlab.keras layer or None for an InputLayer, the input
    shape an InputLayer gives) of config.json's layer ``index``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise ModelFileError(f"{path}: config.json layer {index} is not a Keras layer config")
    kind, config = entry.get("class_name"), entry["config"]
    name = config.get("name")
    label = f"{path}: layer {_short(name)} ({_short(kind)})"
    if entry.get("module") not in (None, "keras", "keras.layers") \
            or entry.get("registered_name") not in (None, kind):
        raise ModelFileError(f"{label}: a custom layer (module {_short(entry.get('module'))}, "
                             f"registered as {_short(entry.get('registered_name'))}) is not "
                             "supported by mnistlab")
    if name is not None and not (isinstance(name, str) and 0 < len(name) <= 128):
        raise ModelFileError(f"{label}: the layer name must be a string of 1 to 128 "
                             "characters")
    _check_dtype(config.get("dtype"), label)
    if config.get("trainable", True) is not True:
        raise ModelFileError(f"{label}: option trainable={_short(config['trainable'])} is "
                             "not supported by mnistlab")
    if kind == "InputLayer":
        shape = config.get("batch_shape", config.get("batch_input_shape"))
        if not (isinstance(shape, list) and 2 <= len(shape) <= 4 and shape[0] is None
                and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 20
                        for d in shape[1:])):
            raise ModelFileError(f"{label}: option batch_shape={_short(shape)} is not "
                                 "supported by mnistlab (a batch of fixed-size samples)")
        for option in ("sparse", "ragged", "optional"):
            if config.get(option, False) is not False:
                raise ModelFileError(f"{label}: option {option}={_short(config[option])} is "
                                     "not supported by mnistlab")
        return kind, None, tuple(shape[1:])
    if kind not in _KERAS_LAYERS:
        shown = "Functional, Model" if kind in ("Functional", "Model", "Sequential") else kind
        raise ModelFileError(f"{label}: layer type {_short(shown)} is not supported by "
                             f"mnistlab (it has {sorted(_KERAS_LAYERS)})")
    passed, fixed, ignored = _KERAS_LAYERS[kind]
    kwargs = {}
    for option, value in config.items():
        if option in _COMMON or option in ignored:
            continue
        if option in passed:
            if isinstance(value, dict | list) and option in ("activation",):
                raise ModelFileError(f"{label}: option {option}={_short(value)} (a serialized "
                                     "object) is not supported by mnistlab")
            kwargs[option] = tuple(value) if isinstance(value, list) else value
        elif option in fixed:
            if not _default_holds(value, fixed[option]):
                raise ModelFileError(f"{label}: option {option}={_short(value)} is not "
                                     f"supported by mnistlab (only {_short(fixed[option])})")
        elif value is not None:
            raise ModelFileError(f"{label}: option {option}={_short(value)} is not supported "
                                 "by mnistlab")
    for option, value in kwargs.items():
        if isinstance(value, tuple) and (len(value) > 8 or not all(
                isinstance(v, int | float | tuple | list) and not isinstance(v, bool)
                for v in value)):
            raise ModelFileError(f"{label}: option {option}={_short(list(value))} is not "
                                 "supported by mnistlab")
    if kind == "Cropping2D" and "cropping" in kwargs:
        kwargs["cropping"] = tuple(tuple(v) if isinstance(v, list) else v
                                   for v in kwargs["cropping"])
    try:
        layer = getattr(keras_layers, kind)(name=name, **kwargs)
    except (ValueError, TypeError, NotImplementedError, OverflowError) as exc:
        raise ModelFileError(f"{label}: not supported by mnistlab ({exc})") from None
    return kind, layer, None


def _model_from_keras(config: dict, weights_h5: bytes, path: Path, compile: bool) -> Any:
    """The mnistlab.keras Sequential of a Keras 3 config.json, its weights from the
    model.weights.h5 bytes."""
    from mnistlab.keras.models import Sequential

    kind = config.get("class_name")
    if kind != "Sequential" or not isinstance(config.get("config"), dict):
        raise ModelFileError(f"{path}: a {_short(kind)} model; mnistlab loads keras.Sequential "
                             "models only (Functional and subclassed models are not supported)")
    body = config["config"]
    _check_dtype(body.get("dtype"), f"{path}: the model")
    entries = body.get("layers")
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_LAYERS + 1:
        raise ModelFileError(f"{path}: config.json must list 1 to {MAX_LAYERS} layers")
    name = body.get("name")
    if not (isinstance(name, str) and re.fullmatch(r"[\w.\-]{1,128}", name)):
        name = None  # Keras's next automatic name
    input_shape, layers = None, []
    for index, entry in enumerate(entries):
        kind, layer, shape = _keras_layer(entry, index, path)
        if layer is None:
            if index != 0:
                raise ModelFileError(f"{path}: an InputLayer must come first")
            input_shape = shape
        else:
            layers.append((kind, layer))
    if not layers:
        raise ModelFileError(f"{path}: the model has no layers")
    if input_shape is None:
        build_config = config.get("build_config")
        built = body.get("build_input_shape")
        if built is None and isinstance(build_config, dict):
            built = build_config.get("input_shape")
        if not (isinstance(built, list) and 2 <= len(built) <= 4 and built[0] is None
                and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 20
                        for d in built[1:])):
            raise ModelFileError(f"{path}: the model was never built (no input shape in "
                                 "config.json)")
        input_shape = tuple(built[1:])
    spec = {"format": "mnistlab.model", "version": 1, "input_shape": list(input_shape),
            "dtype": "float32",
            "layers": [{**layer.get_config(), "name": layer.name} for _, layer in layers]}
    try:
        shapes = expected_shapes(spec)  # the bounds, before anything is allocated
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: the model is outside what mnistlab allows "
                             f"({exc})") from None
    weights = _read_h5_weights(weights_h5, layers, shapes, path)
    try:
        model = Sequential([layer for _, layer in layers], name=name)
        model.build(input_shape)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ModelFileError(f"{path}: the model cannot be built ({exc})") from None
    model.set_named_weights(weights)
    compile_config = config.get("compile_config")
    if compile and isinstance(compile_config, dict):
        _compile_from_keras(model, compile_config, path)
        warnings.warn(f"{path}: Keras's optimizer state is not restored (mnistlab starts the "
                      "optimizer's moments and step count again)", stacklevel=3)
    return model


def _read_h5_weights(data: bytes, layers: list[tuple[str, nn_layers.Layer]],
                     shapes: dict[str, tuple[int, ...]], path: Path) -> dict[str, np.ndarray]:
    """The weights of ``layers`` (Keras class name, layer) from a Keras 3 weights file's
    bytes, named as the engine names them ("0.W", ...), in its layouts. Keras keeps layer
    i's variables under "layers/<snake_case class name, numbered as Keras numbers repeats>/
    vars/<k>"; each dataset's shape and dtype is checked before it is read."""
    import h5py

    total = sum(math.prod(s) for s in shapes.values())
    if total > MAX_PARAMS:
        raise ModelFileError(f"{path}: the model would have over {MAX_PARAMS} weights")
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            group = h5.get("layers")
            if group is not None and not isinstance(group, h5py.Group):
                raise ModelFileError(f"{path}: not a Keras weights file ('layers' is not a "
                                     "group)")
            used: dict[str, int] = {}
            seen = set()
            for index, (kind, layer) in enumerate(layers):
                base = keras_layers.snake_case(kind)
                used[base] = used.get(base, -1) + 1
                key = base if used[base] == 0 else f"{base}_{used[base]}"
                seen.add(key)
                names = [n for n in shapes if n.split(".", 1)[0] == str(index)]
                stored = None if group is None else group.get(f"{key}/vars")
                count = 0 if stored is None else len(stored)
                if count != len(names):
                    raise ModelFileError(f"{path}: layer {layer.name!r} ({kind}) has "
                                         f"{count} weights in the file under layers/{key}, "
                                         f"the model needs {len(names)}")
                for k, name in enumerate(names):
                    want = shapes[name]
                    keras_shape = ((want[2], want[3], want[1], want[0])
                                   if kind == "Conv2D" and name.endswith(".W") else want)
                    dataset = stored.get(str(k))
                    where = (f"{path}: layer {layer.name!r} ({kind}) weight {k} "
                             f"(layers/{key}/vars/{k})")
                    if not isinstance(dataset, h5py.Dataset):
                        raise ModelFileError(f"{where} is missing or not a dataset")
                    if dataset.external or dataset.is_virtual:
                        raise ModelFileError(f"{where} refers to data outside the file")
                    if dataset.shape != keras_shape:
                        raise ModelFileError(f"{where} has shape {dataset.shape}, the model "
                                             f"needs {keras_shape}")
                    if dataset.dtype != np.float32:
                        raise ModelFileError(f"{where} is {dataset.dtype}, the model needs "
                                             "float32")
                    value = np.asarray(dataset[()], dtype=np.float32)
                    if value.shape != keras_shape:
                        raise ModelFileError(f"{where} reads back as shape {value.shape}")
                    if not np.isfinite(value).all():
                        raise ModelFileError(f"{where} holds NaN or infinite values")
                    if kind == "Conv2D" and name.endswith(".W"):
                        value = np.ascontiguousarray(value.transpose(3, 2, 0, 1))
                    out[name] = value
            if group is not None and len(group) > MAX_LAYERS + 1:
                raise ModelFileError(f"{path}: the weights file lists {len(group)} layers")
            extra = sorted(k for k in (group.keys() if group is not None else ())
                           if k not in seen and len(group[k].get("vars", {})) > 0)
            if extra:
                raise ModelFileError(f"{path}: the weights file has weights for layers the "
                                     f"model does not have: {extra[:5]}")
    except ModelFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError,
            IndexError) as exc:
        raise ModelFileError(f"{path}: unreadable Keras weights (HDF5: "
                             f"{str(exc)[:200]})") from None
    return out


# Keras optimizer options mnistlab's optimizers do without, while they keep these values.
_OPTIMIZER_DEFAULTS = {"weight_decay": None, "clipnorm": None, "global_clipnorm": None,
                       "clipvalue": None, "use_ema": False, "ema_overwrite_frequency": None,
                       "loss_scale_factor": None, "gradient_accumulation_steps": None,
                       "amsgrad": False, "nesterov": False, "centered": False,
                       "momentum": 0.0}
_OPTIMIZER_IGNORED = {"name", "ema_momentum"}
_LOSS_DEFAULTS = {"reduction": "sum_over_batch_size", "label_smoothing": 0.0, "axis": -1,
                  "ignore_class": None, "from_logits": False}


def _compile_from_keras(model: Any, config: dict, path: Path) -> None:
    """Compile ``model`` from a Keras compile_config: optimizer and loss by name with the
    settings mnistlab's classes take; a setting mnistlab cannot honour is an error."""
    where = f"{path}: compile_config"
    optimizer = config.get("optimizer")
    if isinstance(optimizer, str):
        opt_name, opt_config = optimizer.lower(), {}
    elif isinstance(optimizer, dict) and isinstance(optimizer.get("config", {}), dict):
        opt_config = dict(optimizer.get("config", {}))
        opt_name = str(optimizer.get("class_name", "")).lower()  # "Adam", "RMSprop"
        if opt_name not in OPTIMIZERS and isinstance(opt_config.get("name"), str):
            opt_name = re.sub(r"_[0-9]+$", "", opt_config["name"])  # "adam_1": its instance
    else:
        raise ModelFileError(f"{where}: unreadable optimizer {_short(optimizer)}")
    if opt_name not in OPTIMIZERS:
        raise ModelFileError(f"{where}: optimizer {_short(opt_name)} is not supported by "
                             f"mnistlab (it has {sorted(OPTIMIZERS)}); "
                             "load_model(..., compile=False) loads the model uncompiled")
    cls = OPTIMIZERS[opt_name]
    kwargs = _keras_settings(opt_config, constructor_arguments(cls), _OPTIMIZER_DEFAULTS,
                             _OPTIMIZER_IGNORED, f"{where}: optimizer {opt_name}")
    loss = config.get("loss")
    if isinstance(loss, str):
        loss_name, loss_config = loss, {}
    elif isinstance(loss, dict) and isinstance(loss.get("config", {}), dict):
        loss_config = dict(loss.get("config", {}))
        loss_name = keras_layers.snake_case(str(loss.get("class_name", "")))
        loss_config.pop("name", None)
    else:
        raise ModelFileError(f"{where}: loss {_short(loss)} is not supported by mnistlab "
                             "(a loss by name or Keras class)")
    if loss_name not in LOSSES:
        raise ModelFileError(f"{where}: loss {_short(loss_name)} is not supported by mnistlab "
                             f"(it has {sorted(LOSSES)})")
    loss_kwargs = _keras_settings(loss_config, constructor_arguments(LOSSES[loss_name]),
                                  _LOSS_DEFAULTS, {"name", "dtype"}, f"{where}: loss "
                                                                    f"{loss_name}")
    from mnistlab.engines.base import METRICS

    metrics = []
    for metric in config.get("metrics") or []:
        metric_name = metric if isinstance(metric, str) else (
            metric.get("config", {}).get("name") if isinstance(metric, dict)
            and isinstance(metric.get("config"), dict) else None)
        if metric_name in METRICS:
            metrics.append(metric_name)
        else:
            warnings.warn(f"{where}: metric {_short(metric_name)} is not computed by "
                          "mnistlab (only accuracy); dropped", stacklevel=4)
    try:
        model.compile(optimizer=cls(**kwargs), loss=LOSSES[loss_name](**loss_kwargs),
                      metrics=metrics)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{where}: not supported by mnistlab ({exc})") from None


def _keras_settings(config: dict, arguments: set[str], defaults: dict[str, Any],
                    ignored: set[str], where: str) -> dict[str, Any]:
    """The constructor arguments of a Keras optimizer or loss config (learning_rate as
    ``lr`` where the class calls it so); other options must hold their default."""
    kwargs = {}
    for option, value in config.items():
        target = option
        if option == "learning_rate" and "learning_rate" not in arguments:
            target = "lr"
        if target in arguments:
            if not (isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value)) and not isinstance(value, bool):
                raise ModelFileError(f"{where}: option {option}={_short(value)} is not "
                                     "supported by mnistlab (a plain number only)")
            kwargs[target] = value
        elif option in ignored:
            continue
        elif option in defaults:
            if value != defaults[option]:
                raise ModelFileError(f"{where}: option {option}={_short(value)} is not "
                                     f"supported by mnistlab (only {_short(defaults[option])})")
        elif value is not None:
            raise ModelFileError(f"{where}: option {option}={_short(value)} is not supported "
                                 "by mnistlab")
    return kwargs
