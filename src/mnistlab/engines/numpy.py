"""Sequential: a list of layers with the Keras workflow (compile, fit, evaluate, predict).

The whole of backprop is in ``_forward_loss`` and ``_backward``: forward through the
layers, loss, then the layers' backward in reverse order. When the output activation
is softmax and the loss cross-entropy, the output layer hands its logits to the loss
and receives dL/dz = (y - t) / N straight back (stable and exact).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from mnistlab.engines.io import check_digest, check_weights, read_model_file, save_model
from mnistlab.errors import ModelFileError, TrainingDivergedError
from mnistlab.nn.layers import Conv2D, Layer, layer_from_config
from mnistlab.nn.losses import Loss, accuracy, get_loss
from mnistlab.nn.optimizers import Optimizer, get_optimizer
from mnistlab.nn.parallel import default_threads, run_each, single_threaded_blas
from mnistlab.training import History, check_batch_size, fit

SPEC_FORMAT, SPEC_VERSION = "mnistlab.model", 1
DTYPES = ("float32", "float64")
MIN_PARALLEL_ROWS = 256  # per thread; fewer rows are not worth a thread hand-off
CHUNKS_PER_THREAD = 4  # at least, in a parallel predict or evaluate
R = TypeVar("R")


class Sequential:
    """A stack of layers. ``seed`` fixes every random choice (weights, dropout masks)."""

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
        if str(np.dtype(dtype)) not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.seed, self.name = seed, name
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.preprocess = dict(preprocess) if preprocess is not None else {"scale": "unit"}
        self.layers: list[Layer] = []
        self.loss: Loss | None = None
        self.optimizer: Optimizer | None = None
        self.metrics: list[str] = []
        self.stop_training = False  # a callback sets this to end fit() early
        self.built = False
        for layer in layers or ():
            self.add(layer)

    def add(self, layer: Layer) -> None:
        """Append a layer; the model is (re)built, from its seed, on next use."""
        if not isinstance(layer, Layer):
            raise TypeError(f"expected a Layer, got {type(layer).__name__}")
        self.layers.append(layer)
        self.built = False

    # ---- building -------------------------------------------------------------------
    def build(self, input_shape: Sequence[int] | None = None, seed: int | None = None) -> None:
        """Create all weights for inputs of ``input_shape`` (no batch axis), from ``seed``."""
        if not self.layers:
            raise ValueError("the model has no layers")
        shape = input_shape or self.input_shape or self.layers[0].input_shape
        if shape is None:
            raise ValueError("unknown input shape: pass input_shape= to the first layer, "
                             "to Sequential, or to build()")
        if shape[0] is None:  # Keras style, with the batch axis: (None, 784)
            shape = shape[1:]
        if seed is not None:
            self.seed = seed
        rng = np.random.default_rng(self.seed)
        self.input_shape = shape = tuple(int(d) for d in shape)
        for layer in self.layers:
            layer.needs_input_grad = True
            shape = layer.build(shape, rng, self.dtype)
        # Backward stops at the first layer with weights: nothing before it needs gradients.
        trainable = [i for i, layer in enumerate(self.layers) if layer.params]
        self._first_trainable = trainable[0] if trainable else len(self.layers)
        if trainable:
            self.layers[self._first_trainable].needs_input_grad = False
        self.built = True

    def _ensure_built(self, x: np.ndarray | None = None) -> None:
        if not self.built:
            has_shape = self.input_shape or (self.layers and self.layers[0].input_shape)
            self.build(None if has_shape or x is None else x.shape[1:])

    def compile(
        self,
        optimizer: str | Optimizer = "adam",
        loss: str | Loss = "categorical_crossentropy",
        metrics: Sequence[str] | None = ("accuracy",),
    ) -> None:
        """Choose optimizer and loss (names or objects). Accuracy is the only metric."""
        unknown = [m for m in metrics or () if m not in ("accuracy", "acc")]
        if unknown:
            raise ValueError(f"unsupported metrics {unknown}; only 'accuracy' is computed")
        self.optimizer, self.loss = get_optimizer(optimizer), get_loss(loss)
        self.metrics = ["accuracy"] if metrics else []

    def _output_activation_is(self, name: str | None) -> bool:
        act = self.layers[-1].activation if self.layers else None
        return name is not None and act is not None and act.name == name

    @property
    def fused(self) -> bool:
        """True when the loss is computed from the output layer's logits (softmax + CE)."""
        return self.loss is not None and self._output_activation_is(self.loss.fused_activation)

    @property
    def gradient_from_logits(self) -> bool:
        """True when backprop starts at the logits with the loss's ``backward_logits``."""
        return self.fused or (self.loss is not None
                              and self._output_activation_is(self.loss.gradient_activation))

    # ---- forward and backward ----------------------------------------------------------
    def prepare_input(self, x: np.ndarray) -> np.ndarray:
        """``x`` in the model's dtype (no copy if it already is), shape-checked."""
        x = self._checked(x)
        return x.astype(self.dtype, copy=False)

    def _checked(self, x: np.ndarray) -> np.ndarray:
        """``x`` as an array of inputs of this model's shape (building it if need be)."""
        x = np.asarray(x)
        self._ensure_built(x)
        if x.shape[1:] != self.input_shape:
            want = ", ".join(map(str, self.input_shape))
            raise ValueError(f"expected inputs of shape (N, {want}), got {x.shape}; reshape them")
        return x

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Outputs for one batch (probabilities after a softmax)."""
        h = self.prepare_input(x)
        for layer in self.layers:
            h = layer.forward(h, training)
        return h

    def _forward_loss(
        self, x: np.ndarray, t: np.ndarray, training: bool,
        layers: list[Layer] | None = None, loss: Loss | None = None,
    ) -> tuple[float, np.ndarray]:
        """(loss, outputs) for a batch already in the model's dtype, through the model's
        layers and loss or through replicas of them (``layers``, ``loss``)."""
        layers, loss = layers or self.layers, loss or self.loss
        if loss is None:
            raise RuntimeError("call compile(optimizer, loss) first")
        h = x
        for layer in layers[:-1]:
            h = layer.forward(h, training)
        last = layers[-1]
        if self.fused:  # softmax + cross-entropy from the logits
            value = loss.forward_logits(last.linear_forward(h), t)
            return value, loss.y
        y = last.forward(h, training)
        return loss.forward(y, t), y

    def _backward(self) -> None:
        """Backprop the last ``_forward_loss``: every layer's ``grads`` is filled."""
        last = self.layers[-1]
        if self.gradient_from_logits:  # e.g. softmax + cross-entropy: dL/dz = (y - t) / N
            d = last.linear_backward(self.loss.backward_logits())
        else:
            d = last.backward(self.loss.backward())
        for layer in reversed(self.layers[self._first_trainable : -1]):
            d = layer.backward(d)

    def named_params(self) -> dict[str, np.ndarray]:
        """The weight arrays themselves (not copies), named "{layer index}.{param}"."""
        return {f"{i}.{k}": v for i, lay in enumerate(self.layers) for k, v in lay.params.items()}

    def named_grads(self) -> dict[str, np.ndarray]:
        """The gradients of the last backward, named like ``named_params``."""
        return {f"{i}.{k}": v for i, lay in enumerate(self.layers) for k, v in lay.grads.items()}

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray,
                       training: bool = True) -> tuple[float, dict[str, np.ndarray]]:
        """Forward and backward without updating: (loss, copies of all gradients)."""
        loss, _ = self._forward_loss(self.prepare_input(x), y, training)
        self._backward()
        return loss, {name: g.copy() for name, g in self.named_grads().items()}

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """One forward, backward and optimizer update on a batch: (loss, accuracy).

        Never applies a non-finite step: a NaN/infinite loss or update raises
        TrainingDivergedError and leaves the weights as they were."""
        loss, out = self._forward_loss(self.prepare_input(x), y, training=True)
        if not math.isfinite(loss):
            raise TrainingDivergedError(f"loss became {loss}; the weights were left unchanged")
        acc = accuracy(out, y)
        self._backward()
        self.optimizer.update(self.named_params(), self.named_grads())
        return loss, acc

    # ---- Keras-style workflow ---------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 1, batch_size: int = 32,
            validation_data: tuple[np.ndarray, np.ndarray] | None = None, shuffle: bool = True,
            seed: int | None = None, verbose: int = 1, callbacks: Sequence[Any] | None = None,
            log_every: int = 1) -> History:
        """Train; see ``mnistlab.training.fit``."""
        return fit(self, x, y, epochs=epochs, batch_size=batch_size,
                   validation_data=validation_data, shuffle=shuffle, seed=seed,
                   verbose=verbose, callbacks=callbacks, log_every=log_every)

    def predict_batch_size(self) -> int:
        """Rows per inference chunk: about 4M floats of the largest activation (or im2col)."""
        self._ensure_built()
        per_sample = 1
        for layer in self.layers:
            per_sample = max(per_sample, math.prod(layer.output_shape))
            if isinstance(layer, Conv2D):  # its im2col matrix
                c, (kh, kw), (oh, ow) = layer.input_shape[0], layer.kernel_size, layer.out_hw
                per_sample = max(per_sample, c * kh * kw * oh * ow)
        return max(1, 2**22 // per_sample)

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Outputs for all of ``x``, computed in chunks of at most ``batch_size`` rows (auto
        if None), on several threads when there are enough rows (see ``_each_chunk``)."""
        x = self._checked(x)  # before any thread starts
        size = self._chunk_rows(batch_size)
        if len(x) <= size and self._threads_for(len(x)) == 1:
            return self.forward(x)
        out = np.empty((len(x), *self.layers[-1].output_shape), dtype=self.dtype)

        def forward_chunk(layers: list[Layer], loss: Loss | None, rows: slice) -> None:
            h = x[rows].astype(self.dtype, copy=False)
            for layer in layers:
                h = layer.forward(h)
            out[rows] = h

        self._each_chunk(len(x), size, forward_chunk)
        return out

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int | None = None,
                 return_dict: bool = False) -> tuple[float, float] | dict[str, float]:
        """(loss, accuracy) over all of x (or a dict with those keys), computed in chunks as
        ``predict`` computes them, each chunk's loss from its logits where the loss can."""
        x, y = self._checked(x), np.asarray(y)
        if len(x) != len(y):
            raise ValueError(f"evaluate got {len(x)} inputs but {len(y)} labels")
        if len(x) == 0:
            raise ValueError("evaluate got no inputs")
        if self.loss is None:
            raise RuntimeError("call compile(optimizer, loss) first")
        summed = self.loss.reduction != "mean"

        def score_chunk(layers: list[Layer], loss: Loss | None, rows: slice) -> tuple[float, int]:
            xb, yb = x[rows].astype(self.dtype, copy=False), y[rows]
            value, out = self._forward_loss(xb, yb, training=False, layers=layers, loss=loss)
            return (value if summed else value * len(xb)), round(accuracy(out, yb) * len(xb))

        scores = self._each_chunk(len(x), self._chunk_rows(batch_size), score_chunk)
        losses, counts = zip(*scores, strict=True)
        total_loss, correct = math.fsum(losses), sum(counts)
        result = {"loss": total_loss if summed else total_loss / len(x),
                  "accuracy": correct / len(x)}
        return result if return_dict else (result["loss"], result["accuracy"])

    def _chunk_rows(self, batch_size: int | None) -> int:
        """``batch_size`` checked, or the automatic chunk size if it is None."""
        return self.predict_batch_size() if batch_size is None else check_batch_size(batch_size)

    def _threads_for(self, rows: int) -> int:
        """The engine's threads (``parallel.default_threads``) if ``rows`` rows are worth
        spreading over them, else 1."""
        threads = default_threads()
        return threads if rows >= threads * MIN_PARALLEL_ROWS else 1

    def _each_chunk(self, n: int, size: int,
                    visit: Callable[[list[Layer], Loss | None, slice], R]) -> list[R]:
        """[visit(layers, loss, rows) for consecutive ranges of rows covering range(n), each
        at most ``size``], in the order of the rows.

        With several threads (``_threads_for``) and enough rows, each thread
        takes whole chunks through its own replica of the layers (and copy of the loss,
        which caches its inputs too) while BLAS keeps each product on one thread: then
        biases, activations and small products run in parallel too, on chunks that are
        still in cache, and BLAS has no idle threads spinning on the cores.
        """
        threads = self._threads_for(n)
        if threads == 1:
            return [visit(self.layers, self.loss, slice(s, s + size)) for s in range(0, n, size)]
        # as many chunks for every thread, and several: a thread that starts late (its
        # core busy elsewhere) then leaves the others a few chunks more, not a whole share
        chunks = threads * max(CHUNKS_PER_THREAD, math.ceil(n / (threads * size)))
        rows = math.ceil(n / chunks)
        starts = iter(range(0, n, rows))  # shared: each thread takes the next chunk
        results: dict[int, R] = {}

        def work(layers: list[Layer], loss: Loss | None) -> None:
            for start in starts:
                results[start] = visit(layers, loss, slice(start, start + rows))

        replicas = [([layer.replica() for layer in self.layers], copy.copy(self.loss))
                    for _ in range(threads)]
        with single_threaded_blas():
            run_each(lambda replica: work(*replica), replicas)
        return [results[start] for start in sorted(results)]

    def count_params(self) -> int:
        self._ensure_built()
        return sum(p.size for layer in self.layers for p in layer.params.values())

    def summary(self, print_fn: Callable[[str], Any] = print) -> int:
        """Print a Keras-like table of layers, output shapes and parameter counts; return total."""
        self._ensure_built()
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for i, layer in enumerate(self.layers):
            act = layer.activation.name if layer.activation is not None else ""
            kind = type(layer).__name__ + (f", {act}" if act and act != "linear" else "")
            params = sum(p.size for p in layer.params.values())
            rows.append((f"{i} ({kind})", str((None, *layer.output_shape)), f"{params:,}"))
        widths = [max(len(r[c]) for r in rows) + 3 for c in range(3)]
        line = "".join(cell.ljust(w) for cell, w in zip(rows[0], widths, strict=True))
        total = self.count_params()
        print_fn(f'Model: "{self.name}"  (dtype {self.dtype}, input {(None, *self.input_shape)})')
        print_fn("_" * len(line))
        print_fn(line)
        print_fn("=" * len(line))
        for row in rows[1:]:
            print_fn("".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        print_fn("=" * len(line))
        print_fn(f"Total params: {total:,}")
        print_fn(f"Trainable params: {total:,}")
        print_fn("Non-trainable params: 0")
        print_fn("_" * len(line))
        return total

    # ---- weights and spec -------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """Copies of all weights, named "{layer index}.{param}" (e.g. "0.W")."""
        self._ensure_built()
        return {name: p.copy() for name, p in self.named_params().items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Copy ``weights`` (same names and shapes as ``get_weights``) into the model."""
        self._ensure_built()
        params = self.named_params()
        missing = sorted(params.keys() - weights.keys())
        extra = sorted(weights.keys() - params.keys())
        if missing or extra:
            raise ValueError(f"weight names do not match the model: missing {missing}, "
                             f"unexpected {extra}")
        for name, p in params.items():
            value = np.asarray(weights[name])
            if value.shape != p.shape:
                raise ValueError(f"weight {name!r} has shape {value.shape}, "
                                 f"the model needs {p.shape}")
            np.copyto(p, value, casting="same_kind")

    def spec(self) -> dict:
        """The JSON-safe model spec of docs/CONTRACTS.md."""
        self._ensure_built()
        return {"format": SPEC_FORMAT, "version": SPEC_VERSION,
                "input_shape": list(self.input_shape), "dtype": str(self.dtype),
                "layers": [layer.get_config() for layer in self.layers],
                "preprocess": dict(self.preprocess)}

    def save(self, path: Any) -> None:
        """Save spec and weights as one safetensors file (``mnistlab.engines.io``)."""
        save_model(self, path)

    def __repr__(self) -> str:
        return f"Sequential({self.layers!r}, dtype={str(self.dtype)!r})"


def model_from_spec(spec: dict, seed: int | None = 0) -> Sequential:
    """Build (uncompiled) the model a spec describes; ValueError says what is wrong."""
    if not isinstance(spec, dict):
        raise ValueError(f"a model spec must be a JSON object, got {type(spec).__name__}")
    if spec.get("format") != SPEC_FORMAT or spec.get("version") != SPEC_VERSION:
        raise ValueError(f"not a {SPEC_FORMAT} version {SPEC_VERSION} spec "
                         f"(format={spec.get('format')!r}, version={spec.get('version')!r})")
    shape = spec.get("input_shape")
    if not (isinstance(shape, list) and shape
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise ValueError(f"input_shape must be a list of positive ints, got {shape!r}")
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ValueError("spec has no layers")
    if spec.get("dtype") not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {spec.get('dtype')!r}")
    model = Sequential([layer_from_config(c) for c in layers], seed=seed, dtype=spec["dtype"],
                       input_shape=shape, preprocess=spec.get("preprocess"))
    model.build()
    return model


def load_model(path: Any, *, allow_unverified: bool = False) -> Sequential:
    """The NumPy model a file written by either engine describes; ModelFileError if anything
    in it is wrong. ``read_model_file`` checks the spec (``engines.spec.validate_spec``) and
    every tensor's header entry against it before reading tensor data; the weights must
    match their checksum, and a file without one loads only with ``allow_unverified=True``."""
    spec, tensors, digest = read_model_file(path)
    check_digest(tensors, digest, path, allow_unverified=allow_unverified)
    try:
        model = model_from_spec(spec)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: invalid model spec ({exc})") from None
    check_weights(tensors, model.named_params(), path)
    model.set_weights(tensors)
    return model
