"""Keras 3's ``keras.models``: ``Sequential`` and ``load_model``, on the NumPy engine.

``Sequential`` is mnistlab's NumPy-engine model (``mnistlab.Sequential``: the same layers,
loop, files and speed) with Keras's API where the two differ:

- ``Sequential([keras.Input((28, 28, 1)), layers.Conv2D(...), ...], name=None)``, ``add``,
  ``pop``, ``get_layer``; layer and model names made as Keras makes them;
- ``compile(optimizer="rmsprop", loss=None, metrics=None)``: Keras's defaults and names;
- ``fit`` with Keras's arguments and defaults (``batch_size`` 32, ``verbose="auto"``,
  ``validation_split``, ``class_weight``, ``sample_weight``, ``initial_epoch``), returning
  the History (also ``model.history``);
- ``evaluate`` returns the loss alone without metrics, else ``[loss, accuracy]`` (a dict with
  ``return_dict=True``); ``predict(x, batch_size=None, verbose="auto")``;
- ``get_weights``/``set_weights`` as Keras's flat list, in Keras's layouts (a Conv2D kernel
  is (kh, kw, in, out)); the named dict is ``named_weights``;
- ``summary()`` is Keras's table ("Total params: 795,010 (3.03 MB)");
- ``save(path)``/``load_model(path)`` and ``save_weights``/``load_weights``: the file is
  mnistlab's safetensors model file whatever the extension (".keras" included), never a
  pickle; ``load_model`` also opens a ``.keras`` file that Keras 3 wrote.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mnistlab.engines.numpy import Sequential as NumpySequential
from mnistlab.keras import layers as keras_layers
from mnistlab.keras.layers import InputLayer, from_keras_layout, to_keras_layout
from mnistlab.nn.layers import Layer
from mnistlab.nn.tensor import EagerArray, eager
from mnistlab.training.loop import History, check_verbose

__all__ = ["Sequential", "load_model"]

KERAS_BATCH_SIZE = 32  # Keras's default batch size, for fit and for the steps it reports


def global_seed() -> int | None:
    """The seed ``keras.utils.set_random_seed`` set (None: weights differ run to run)."""
    from mnistlab.keras import utils

    return utils.current_seed()


class Sequential(NumpySequential):
    """``keras.Sequential`` / ``keras.models.Sequential`` (see the module docstring)."""

    def __init__(self, layers: Sequence[Any] | None = None, trainable: bool = True,
                 name: str | None = None, *, seed: int | None = None) -> None:
        if trainable is not True:
            raise NotImplementedError("Sequential(trainable=False) is not implemented")
        super().__init__(None, seed=global_seed() if seed is None else seed,
                         name=name or keras_layers.unique_name("sequential"))
        for layer in layers or ():
            self.add(layer)

    # ---- building --------------------------------------------------------------------------
    def add(self, layer: Any) -> None:
        """Append a layer; ``keras.Input(shape)`` only as the first entry; a Sequential's
        layers themselves (``Sequential([model, layers.Softmax()])``, sharing their weights
        with it, as in Keras)."""
        if isinstance(layer, Sequential):
            if not self.layers and self.input_shape is None and layer.input_shape is not None:
                self.input_shape = layer.input_shape
            for inner in layer.layers:
                self.add(inner)
            return
        if isinstance(layer, InputLayer):
            if self.layers:
                raise ValueError("keras.Input must come first in a Sequential")
            self.input_shape = layer.shape
            self.built = False
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"a Sequential holds layers (keras.layers.Dense, ...), got "
                            f"{type(layer).__name__}")
        if layer.name is None:
            keras_layers.name_layer(layer)
        if any(other.name == layer.name for other in self.layers):
            raise ValueError(f"all layers in a model need unique names; {layer.name!r} is "
                             "there already")
        super().add(layer)

    def build(self, input_shape: Sequence[int] | None = None, seed: int | None = None) -> None:
        """Create the weights of the layers that have none yet. A layer built before (a
        model's layers after ``pop``, or shared with another model) keeps its weights, as in
        Keras, where a layer is built once."""
        kept = {id(layer): (layer.input_shape, dict(layer.params), dict(layer.state))
                for layer in self.layers if layer.output_shape is not None}
        super().build(input_shape, seed)
        for layer in self.layers:
            if id(layer) in kept and kept[id(layer)][0] == layer.input_shape:
                _, params, state = kept[id(layer)]
                for new, old in ((layer.params, params), (layer.state, state)):
                    for key, value in old.items():
                        if key in new and new[key].shape == value.shape:
                            new[key] = value  # the very arrays: shared layers stay shared
                layer.grads = {key: np.zeros_like(value) for key, value in layer.params.items()}

    def pop(self) -> Layer:
        """Remove and return the last layer (Keras's ``pop``)."""
        if not self.layers:
            raise TypeError("there are no layers in the model to pop")
        self.built = False
        return self.layers.pop()

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """The layer called ``name``, or at ``index``."""
        if index is not None:
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"the model has {len(self.layers)} layers, asked for index "
                                 f"{index}")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no such layer: {name!r}; the layers are "
                         f"{[layer.name for layer in self.layers]}")

    # ---- compile, fit, evaluate, predict -----------------------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, loss_weights: Any = None,
                metrics: Any = None, weighted_metrics: Any = None,
                run_eagerly: bool = False, steps_per_execution: int = 1,
                jit_compile: Any = "auto", auto_scale_loss: bool = True) -> None:
        """Keras's compile: optimizer and loss by name or object, metrics by name."""
        if loss is None:
            raise ValueError("compile needs a loss, e.g. loss='sparse_categorical_crossentropy'")
        for argument, value in (("loss_weights", loss_weights),
                                ("weighted_metrics", weighted_metrics)):
            if value is not None:
                raise NotImplementedError(f"compile({argument}=...) is not implemented in "
                                          "mnistlab.keras")
        if steps_per_execution != 1:
            raise NotImplementedError("compile(steps_per_execution=...) is not implemented")
        names = [getattr(m, "name", m) for m in ([metrics] if isinstance(metrics, str)
                                                  else metrics or [])]
        super().compile(optimizer, loss, names)

    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None,
            epochs: int = 1, verbose: int | str = "auto",
            callbacks: Sequence[Any] | None = None, validation_split: float = 0.0,
            validation_data: tuple[Any, ...] | None = None, shuffle: bool = True,
            class_weight: dict | None = None, sample_weight: Any = None,
            initial_epoch: int = 0, steps_per_epoch: int | None = None,
            validation_steps: int | None = None, validation_batch_size: int | None = None,
            validation_freq: int = 1, **kwargs: Any) -> History:
        """Keras's fit (see ``mnistlab.training.loop.fit``); returns the History."""
        if y is None:
            raise NotImplementedError("fit(x) without y (datasets, generators) is not "
                                      "implemented in mnistlab.keras: pass arrays x and y")
        for argument, value, default in (("steps_per_epoch", steps_per_epoch, None),
                                         ("validation_steps", validation_steps, None),
                                         ("validation_batch_size", validation_batch_size, None),
                                         ("validation_freq", validation_freq, 1)):
            if value != default:
                raise NotImplementedError(f"fit({argument}=...) is not implemented in "
                                          "mnistlab.keras")
        return super().fit(x, y, batch_size, epochs, verbose, callbacks, validation_split,
                           validation_data, shuffle, class_weight, sample_weight, initial_epoch,
                           **kwargs)

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None,
                 verbose: int | str = "auto", sample_weight: Any = None,
                 steps: int | None = None, callbacks: Any = None,
                 return_dict: bool = False) -> Any:
        """Keras's evaluate: the loss alone when compiled without metrics, else
        ``[loss, accuracy, ...]``, or ``{"loss": ..., "accuracy": ...}``."""
        verbose = check_verbose(verbose)
        if sample_weight is not None or steps is not None:
            raise NotImplementedError("evaluate(sample_weight=..., steps=...) is not "
                                      "implemented in mnistlab.keras")
        started = time.perf_counter()
        scores = super().evaluate(x, y, batch_size, return_dict=True)
        result = {"loss": scores["loss"], **{m: scores["accuracy"] for m in self.metrics}}
        if verbose:
            _report(len(x), batch_size, time.perf_counter() - started, result)
        if return_dict:
            return result
        return result["loss"] if len(result) == 1 else list(result.values())

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = "auto",
                steps: int | None = None, callbacks: Any = None) -> np.ndarray:
        """Keras's predict: the outputs for all of x (computed in chunks)."""
        verbose = check_verbose(verbose)
        if steps is not None:
            raise NotImplementedError("predict(steps=...) is not implemented in mnistlab.keras")
        started = time.perf_counter()
        out = super().predict(x, batch_size)
        if verbose:
            _report(len(out), batch_size, time.perf_counter() - started, {})
        return out

    def __call__(self, x: Any, training: bool = False) -> EagerArray:
        """``model(x)``: the outputs for one batch, as Keras's call (an array that also
        answers TensorFlow's ``.numpy()``)."""
        return eager(self.forward(x, training))

    # ---- weights ---------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """All weights as Keras's flat list: layer by layer, Keras's order and layouts."""
        self._ensure_built()
        named = self.named_weights()
        return [to_keras_layout(layer, key, named[f"{i}.{key}"])
                for i, layer in enumerate(self.layers)
                for key in (*layer.params, *layer.state)]

    def set_weights(self, weights: Sequence[np.ndarray] | dict[str, np.ndarray]) -> None:
        """Keras's flat list (as ``get_weights`` returns it), or the named dict."""
        if isinstance(weights, dict):
            self.set_named_weights(weights)
            return
        self._ensure_built()
        slots = [(i, layer, key) for i, layer in enumerate(self.layers)
                 for key in (*layer.params, *layer.state)]
        weights = list(weights)
        if len(weights) != len(slots):
            raise ValueError(f"the model has {len(slots)} weights, got a list of "
                             f"{len(weights)}")
        named = {}
        for (i, layer, key), value in zip(slots, weights, strict=True):
            value = np.asarray(value)
            target = layer.params[key] if key in layer.params else layer.state[key]
            want = to_keras_layout(layer, key, target)
            if value.shape != want.shape:
                raise ValueError(f"weight {len(named)} (layer {layer.name!r}, {key}) has shape "
                                 f"{value.shape}, the model needs {want.shape}")
            named[f"{i}.{key}"] = from_keras_layout(layer, key, value)
        self.set_named_weights(named)

    @property
    def weights(self) -> list[np.ndarray]:
        return self.get_weights()

    def count_params(self) -> int:
        return super().count_params()

    # ---- summary ---------------------------------------------------------------------------
    def summary(self, line_length: int | None = None, positions: Any = None,
                print_fn: Callable[..., Any] | None = None, expand_nested: bool = False,
                show_trainable: bool = False, layer_range: Any = None) -> None:
        """Keras 3's table: name (type), output shape, parameter count, then the totals with
        their size in bytes (float32)."""
        self._ensure_built()
        rows = []
        for layer in self.layers:
            params = sum(v.size for v in (*layer.params.values(), *layer.state.values()))
            rows.append((f"{layer.name} ({type(layer).__name__})",
                         str((None, *layer.output_shape)), f"{params:,}"))
        total = self.count_params()
        frozen = sum(v.size for layer in self.layers for v in layer.state.values())
        lines = [f'Model: "{self.name}"', *_table(("Layer (type)", "Output Shape", "Param #"),
                                                  rows, (33, 24, 15))]
        item = self.dtype.itemsize
        lines += [f" Total params: {total:,} ({_size(total * item)})",
                  f" Trainable params: {total - frozen:,} ({_size((total - frozen) * item)})",
                  f" Non-trainable params: {frozen:,} ({_size(frozen * item)})"]
        if self.optimizer is not None and getattr(self.optimizer, "state", None):
            slots = sum(v.size for name, state in self.optimizer.state.items()
                        for slot, v in state.items() if slot != "scratch")
            if slots:
                lines.append(f" Optimizer params: {slots + 2:,} ({_size((slots + 2) * item)})")
        text = "\n".join(lines)
        if print_fn is None:
            print(text)
        else:
            for line in lines:
                print_fn(line)
        return None

    # ---- files -----------------------------------------------------------------------------
    def save(self, filepath: str | os.PathLike[str], overwrite: bool = True,
             **kwargs: Any) -> None:
        """The model (spec, weights, compile settings) as mnistlab's safetensors model file,
        whatever the extension (".keras" included); atomic."""
        from mnistlab.keras.saving import save_model

        save_model(self, filepath, overwrite=overwrite)

    def save_weights(self, filepath: str | os.PathLike[str], overwrite: bool = True) -> None:
        """The weights alone (safetensors, whatever the extension; atomic)."""
        from mnistlab.keras.saving import save_weights

        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath: str | os.PathLike[str], skip_mismatch: bool = False) -> None:
        """Weights from ``save_weights`` (or from a model file of the same architecture)."""
        from mnistlab.keras.saving import load_weights

        load_weights(self, filepath)

    def __repr__(self) -> str:
        return f"<Sequential name={self.name}, built={self.built}>"


def load_model(filepath: str | os.PathLike[str], custom_objects: Any = None,
               compile: bool = True, safe_mode: bool = True) -> Sequential:
    """A model saved by ``Sequential.save`` (mnistlab's file), or a ``.keras`` file Keras 3
    saved, for the layers mnistlab has (a clear error names any other)."""
    from mnistlab.keras.saving import load_model as load

    return load(filepath, compile=compile)


# ---- Keras's text ------------------------------------------------------------------------------


def _table(header: tuple[str, str, str], rows: list[tuple[str, str, str]],
           widths: tuple[int, int, int]) -> list[str]:
    """Keras 3's box-drawn table; a name too long for its column wraps onto a second line."""
    widths = tuple(max(w, *(len(r[c]) + 2 for r in rows if c)) if c else w
                   for c, w in enumerate(widths))

    def cells(row: tuple[str, ...], bar: str) -> str:
        parts = [f" {row[0]:<{widths[0] - 1}}", f" {row[1]:<{widths[1] - 1}}",
                 f"{row[2]:>{widths[2] - 1}} "]
        return bar + bar.join(parts) + bar

    def rule(left: str, mid: str, right: str, fill: str) -> str:
        return left + mid.join(fill * w for w in widths) + right

    lines = [rule("┏", "┳", "┓", "━"), cells(header, "┃"), rule("┡", "╇", "┩", "━")]
    for k, (name, shape, params) in enumerate(rows):
        first, rest = _wrap(name, widths[0] - 2)
        lines.append(cells((first, shape, params), "│"))
        if rest:
            lines.append(cells((rest, "", ""), "│"))
        lines.append(rule("├", "┼", "┤", "─") if k < len(rows) - 1 else rule("└", "┴", "┘", "─"))
    return lines


def _wrap(text: str, width: int) -> tuple[str, str]:
    """Keras puts "(Type)" on a second line when "name (Type)" does not fit."""
    if len(text) <= width or " (" not in text:
        return text, ""
    name, kind = text.split(" (", 1)
    return name, "(" + kind


def _size(nbytes: int) -> str:
    """Keras's sizes: "0.00 B", "346.29 KB", "3.03 MB" (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def _report(n: int, batch_size: int | None, seconds: float, logs: dict[str, float]) -> None:
    """The line Keras prints after evaluate/predict: "313/313 - 1s - 3ms/step - ..."."""
    steps = math.ceil(n / (batch_size or KERAS_BATCH_SIZE))
    each = seconds / steps
    per_step = f"{each * 1e6:.0f}us/step" if each < 1e-3 else f"{each * 1e3:.0f}ms/step"
    metrics = "".join(f" - {k}: {v:.4f}" for k, v in sorted(logs.items()))
    print(f"{steps}/{steps} - {seconds:.0f}s - {per_step}{metrics}", file=sys.stdout,
          flush=True)
