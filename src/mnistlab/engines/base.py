"""The ``Sequential`` contract both engines share, written once.

Layers (the NumPy layer objects, which also create the initial weights from the seed),
``add``, compile's checks, the spec, ``summary``, the weight get/set checks, input checks,
inference chunk sizes, ``fit`` (the one loop of ``mnistlab.training``) and ``save`` live
here. An engine supplies only what differs:

    _make_optimizer(optimizer)   # the optimizer object the engine runs
    _check_loss(loss)            # refuse a loss the engine cannot compute (optional)
    _read_weights() -> {name: array}     # NumPy names and layouts ("0.W" is (in, out)),
                                         # params and state, in weight_shapes() order
    _write_weight(name, value)           # value already checked against the shape
    fit_session(x, y, ...)       # data in the engine's form, one training step, reads
    predict(x, batch_size) / evaluate(x, y, batch_size, return_dict)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mnistlab.engines.io import save_model
from mnistlab.nn.layers import Conv2D, Layer
from mnistlab.nn.losses import Loss, check_targets, get_loss
from mnistlab.nn.network import LayerStack
from mnistlab.nn.optimizers import get_optimizer
from mnistlab.training.loop import History, check_batch_size, fit

SPEC_FORMAT, SPEC_VERSION = "mnistlab.model", 1
# The one metric computed, under the names Keras gives it; fit logs it under the name given.
METRICS = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy",
           "binary_accuracy")


class SequentialBase(LayerStack):
    """What every engine's ``Sequential`` is: a stack of layers with the Keras workflow
    (compile, fit, evaluate, predict, summary, get/set weights, save)."""

    CHUNK_FLOATS = 2**22  # inference chunks: about this many floats of the widest activation
    engine_note = ""  # what summary() says of the engine, e.g. "torch on cuda, "

    def __init__(
        self,
        layers: Sequence[Layer] | None = None,
        *,
        seed: int | None = None,
        dtype: str = "float32",
        input_shape: Sequence[int] | None = None,
        preprocess: dict | None = None,
        name: str = "sequential",
    ) -> None:
        super().__init__(layers, seed=seed, dtype=dtype, input_shape=input_shape)
        self.preprocess = dict(preprocess) if preprocess is not None else {"scale": "unit"}
        self.name = name
        self.metrics: list[str] = []
        self.stop_training = False  # a callback sets this to end fit() early

    # ---- compile and fit -------------------------------------------------------------------
    def compile(
        self,
        optimizer: Any = "adam",
        loss: str | Loss = "categorical_crossentropy",
        metrics: Sequence[str] | None = ("accuracy",),
    ) -> None:
        """Choose optimizer and loss (names or objects). Accuracy (by any of ``METRICS``'
        names) is the only metric."""
        metrics = [metrics] if isinstance(metrics, str) else list(metrics or ())
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unsupported metrics {unknown}; mnistlab computes accuracy, "
                             f"named one of {list(METRICS)}")
        loss = get_loss(loss)
        self._check_loss(loss)
        self.loss, self.optimizer = loss, self._make_optimizer(optimizer)
        self.metrics = list(dict.fromkeys(metrics))

    def _make_optimizer(self, optimizer: Any) -> Any:
        return get_optimizer(optimizer)

    def _check_loss(self, loss: Loss) -> None:
        """Raise ValueError for a loss this engine cannot compute (all are fine here)."""

    def _require_compiled(self) -> None:
        if self.loss is None or self.optimizer is None:
            raise RuntimeError("call compile(optimizer, loss) first")

    def fit(self, x: Any, y: Any, batch_size: int | None = None, epochs: int = 1,
            verbose: int | str = "auto", callbacks: Sequence[Any] | None = None,
            validation_split: float = 0.0, validation_data: tuple[Any, ...] | None = None,
            shuffle: bool = True, class_weight: dict | None = None, sample_weight: Any = None,
            initial_epoch: int = 0, *, seed: int | None = None, log_every: int = 1) -> History:
        """Train, with Keras's arguments in Keras's order (``batch_size`` None is 32); see
        ``mnistlab.training.loop.fit`` (the same loop on every engine)."""
        return fit(self, x, y, epochs=epochs, batch_size=batch_size,
                   validation_data=validation_data, validation_split=validation_split,
                   shuffle=shuffle, seed=seed, verbose=verbose, callbacks=callbacks,
                   class_weight=class_weight, sample_weight=sample_weight,
                   initial_epoch=initial_epoch, log_every=log_every)

    def check_pairs(self, x: Any, y: Any, what: str) -> None:
        """As many labels as inputs, and at least one; labels that fit the model's outputs
        and loss (``losses.check_targets``)."""
        if len(x) == 0:
            raise ValueError(f"{what} got no inputs")
        if len(x) != len(y):
            raise ValueError(f"{what} needs as many labels as inputs, got {len(x)} inputs "
                             f"and {len(y)} labels")
        out = self.output_shape
        if len(out) == 1:  # class or value vectors (image outputs are not checked)
            name = "y" if what in ("fit", "evaluate") else f"{what}'s y"
            check_targets(y, out[0], self.loss, name)

    # ---- inference chunks ------------------------------------------------------------------
    def predict_batch_size(self) -> int:
        """Rows per inference chunk: about ``CHUNK_FLOATS`` floats of the widest activation
        (or im2col matrix) of one sample."""
        self._ensure_built()
        per_sample = math.prod(self.input_shape)
        for layer in self.layers:
            per_sample = max(per_sample, math.prod(layer.output_shape))
            if isinstance(layer, Conv2D):  # its im2col matrix
                c, (kh, kw), (oh, ow) = layer.input_shape[0], layer.kernel_size, layer.out_hw
                per_sample = max(per_sample, c * kh * kw * oh * ow)
        return max(1, self.CHUNK_FLOATS // per_sample)

    def chunk_rows(self, batch_size: int | None) -> int:
        """``batch_size`` checked, or the automatic chunk size if it is None."""
        return self.predict_batch_size() if batch_size is None else check_batch_size(batch_size)

    # ---- weights, summary, spec --------------------------------------------------------------
    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """{name: shape} of every weight, in the NumPy layouts: layer by layer, each layer's
        ``params`` (trainable) then its ``state`` (non-trainable, e.g. "3.moving_mean")."""
        self._ensure_built()
        return {f"{i}.{k}": tuple(v.shape) for i, layer in enumerate(self.layers)
                for k, v in (*layer.params.items(), *layer.state.items())}

    def count_params(self) -> int:
        """All weights, trainable and not (Keras's total)."""
        return sum(math.prod(shape) for shape in self.weight_shapes().values())

    def named_weights(self) -> dict[str, np.ndarray]:
        """Copies of all weights, named "{layer index}.{name}" (e.g. "0.W", "3.moving_mean"),
        NumPy layouts, in ``weight_shapes`` order: params then state within a layer. (What
        model files, checkpoints and engine moves use; Keras's flat list is
        ``mnistlab.keras``'s ``get_weights``.)"""
        self._ensure_built()
        return self._read_weights()

    def get_weights(self) -> dict[str, np.ndarray]:
        """``named_weights()``: the NumPy API's named dict."""
        return self.named_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """``set_named_weights``: the NumPy API's named dict."""
        self.set_named_weights(weights)

    def set_named_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Copy ``weights`` (same names and shapes as ``named_weights``) into the model;
        every name, shape and dtype is checked before anything is written."""
        if not isinstance(weights, dict):
            raise TypeError(f"weights must be a dict {{name: array}} as named_weights() "
                            f"returns, got {type(weights).__name__}")
        shapes = self.weight_shapes()
        missing = sorted(shapes.keys() - weights.keys())
        extra = sorted(weights.keys() - shapes.keys())
        if missing or extra:
            raise ValueError(f"weight names do not match the model: missing {missing}, "
                             f"unexpected {extra}")
        values = {}
        for name, shape in shapes.items():
            value = np.asarray(weights[name])
            if value.shape != shape:
                raise ValueError(f"weight {name!r} has shape {value.shape}, "
                                 f"the model needs {shape}")
            if not np.can_cast(value.dtype, self.dtype, casting="same_kind"):
                raise ValueError(f"weight {name!r} is {value.dtype}, the model needs "
                                 f"{self.dtype}")
            values[name] = value
        for name, value in values.items():
            self._write_weight(name, value)

    def summary(self, print_fn: Callable[[str], Any] = print) -> int:
        """Print a Keras-like table of layers, output shapes and parameter counts; return total."""
        self._ensure_built()
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for i, layer in enumerate(self.layers):
            act = layer.activation.name if layer.activation is not None else ""
            kind = type(layer).__name__ + (f", {act}" if act and act != "linear" else "")
            params = sum(p.size for p in (*layer.params.values(), *layer.state.values()))
            rows.append((f"{i} ({kind})", str((None, *layer.output_shape)), f"{params:,}"))
        widths = [max(len(r[c]) for r in rows) + 3 for c in range(3)]
        line = "".join(cell.ljust(w) for cell, w in zip(rows[0], widths, strict=True))
        total = self.count_params()
        frozen = sum(v.size for layer in self.layers for v in layer.state.values())
        print_fn(f'Model: "{self.name}"  ({self.engine_note}dtype {self.dtype}, '
                 f"input {(None, *self.input_shape)})")
        print_fn("_" * len(line))
        print_fn(line)
        print_fn("=" * len(line))
        for row in rows[1:]:
            print_fn("".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        print_fn("=" * len(line))
        print_fn(f"Total params: {total:,}")
        print_fn(f"Trainable params: {total - frozen:,}")
        print_fn(f"Non-trainable params: {frozen:,}")
        print_fn("_" * len(line))
        return total

    def spec(self) -> dict:
        """The JSON-safe model spec of docs/CONTRACTS.md."""
        self._ensure_built()
        return {"format": SPEC_FORMAT, "version": SPEC_VERSION,
                "input_shape": list(self.input_shape), "dtype": str(self.dtype),
                "layers": [{**layer.get_config(), **({"name": layer.name} if layer.name else {})}
                           for layer in self.layers],
                "preprocess": dict(self.preprocess)}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save spec and weights as one safetensors file (``mnistlab.engines.io``): either
        engine loads it."""
        save_model(self, path)

    # ---- what each engine supplies -------------------------------------------------------
    def _read_weights(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _write_weight(self, name: str, value: np.ndarray) -> None:
        raise NotImplementedError

    def fit_session(self, x: Any, y: Any, *, validation_data: Any, seed: int | None,
                    batch_size: int, sample_weight: np.ndarray | None = None) -> Any:
        raise NotImplementedError
