"""The network: a stack of layers built from one seed, and backprop through it.

``LayerStack`` is what every engine shares: the layers, their shapes, and the weights the
NumPy layers create from the seed (the torch engine copies those in, so one seed gives one
set of initial weights everywhere). ``Network`` adds the NumPy engine's arithmetic; the
whole of backprop is ``forward_loss`` then ``backward``: forward through the layers, the
loss, then the layers' backward in reverse order.

How the loss meets the output layer is decided once, by ``losses.loss_path``: after a
softmax, cross-entropy takes the logits and hands dL/dz = (y - t) / N straight back (stable
and exact); after a sigmoid, the course's summed loss starts backprop at dL/dz = y - t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mnistlab.errors import TrainingDivergedError
from mnistlab.nn.layers import Layer
from mnistlab.nn.losses import Loss, accuracy, loss_path
from mnistlab.nn.optimizers import Optimizer

DTYPES = ("float32", "float64")


def check_finite(x: object, what: str) -> None:
    """ValueError naming the first NaN or infinity of a float array ``x`` (and the fix):
    a model given one would answer NaN, or train on nothing, without a word."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fc" or np.isfinite(x).all():
        return
    flat = int(np.flatnonzero(~np.isfinite(x.reshape(-1)))[0])
    index = np.unravel_index(flat, x.shape)
    raise ValueError(f"{what}[{', '.join(map(str, index))}] is {x.reshape(-1)[flat]}: inputs "
                     "must be finite; replace or drop the non-finite values (e.g. "
                     "np.nan_to_num, or a mask of np.isfinite(x).all(axis=...))")


class LayerStack:
    """Layers in order, built for inputs of ``input_shape`` (no batch axis) from ``seed``."""

    def __init__(
        self,
        layers: Sequence[Layer] | None = None,
        *,
        seed: int | None = None,
        dtype: str = "float32",
        input_shape: Sequence[int] | None = None,
    ) -> None:
        if str(np.dtype(dtype)) not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.layers: list[Layer] = []
        self.loss: Loss | None = None
        self.optimizer: Optimizer | None = None
        self.built = False
        for layer in layers or ():
            self.add(layer)

    def add(self, layer: Layer) -> None:
        """Append a layer; the stack is (re)built, from its seed, on next use."""
        if not isinstance(layer, Layer):
            raise TypeError(f"expected a mnistlab.nn Layer, got {type(layer).__name__}")
        self.layers.append(layer)
        self.built = False

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
        self.first_trainable = trainable[0] if trainable else len(self.layers)
        if trainable:
            self.layers[self.first_trainable].needs_input_grad = False
        self.built = True

    def _ensure_built(self, x: np.ndarray | None = None) -> None:
        if not self.built:
            has_shape = self.input_shape or (self.layers and self.layers[0].input_shape)
            self.build(None if has_shape or x is None else x.shape[1:])

    def checked_input(self, x: object) -> np.ndarray:
        """``x`` as an array of inputs of this model's shape (building the model if need be);
        ValueError naming both shapes otherwise."""
        x = x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)
        self._ensure_built(x)
        if tuple(x.shape[1:]) != self.input_shape:
            want = ", ".join(map(str, self.input_shape))
            hint = "reshape them"
            if sorted(x.shape[1:]) == sorted(self.input_shape) and len(x.shape) == 4:
                hint = ("the channels are on the other side: transpose them, or build the "
                        "model with the other data_format ('channels_last' is (N, H, W, C), "
                        "'channels_first' (N, C, H, W))")
            raise ValueError(f"expected inputs of shape (N, {want}), got {tuple(x.shape)}; "
                             f"{hint}")
        check_finite(x, "x")
        return x

    @property
    def output_shape(self) -> tuple[int, ...]:
        self._ensure_built()
        return tuple(self.layers[-1].output_shape)

    @property
    def loss_path(self) -> str:
        """How the compiled loss meets the output layer (see ``losses.loss_path``)."""
        if self.loss is None:
            raise RuntimeError("call compile(optimizer, loss) first")
        act = self.layers[-1].activation if self.layers else None
        return loss_path(self.loss, act.name if act is not None else None)

    def named_params(self) -> dict[str, np.ndarray]:
        """The NumPy layers' weight arrays themselves, named "{layer index}.{param}"."""
        return {f"{i}.{k}": v for i, lay in enumerate(self.layers) for k, v in lay.params.items()}

    def named_state(self) -> dict[str, np.ndarray]:
        """The layers' non-trainable arrays themselves (``Layer.state``, e.g. "3.moving_mean");
        no optimizer sees them, model files and ``get_weights`` hold them."""
        return {f"{i}.{k}": v for i, lay in enumerate(self.layers) for k, v in lay.state.items()}


class Network(LayerStack):
    """The NumPy engine: forward, loss, backward and update through the layers."""

    def prepare_input(self, x: object) -> np.ndarray:
        """``x`` in the model's dtype (no copy if it already is), shape-checked."""
        return np.asarray(self.checked_input(x)).astype(self.dtype, copy=False)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Outputs for one batch (probabilities after a softmax)."""
        h = self.prepare_input(x)
        for layer in self.layers:
            h = layer.forward(h, training)
        return h

    def forward_loss(
        self, x: np.ndarray, t: np.ndarray, training: bool,
        layers: list[Layer] | None = None, loss: Loss | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray]:
        """(loss, outputs) for a batch already in the model's dtype, through the model's
        layers and loss or through replicas of them (``layers``, ``loss``); each sample's
        loss weighted by ``sample_weight`` (N,) if given. The outputs are the model's
        (probabilities after a softmax, the logits for a from_logits loss)."""
        path = self.loss_path
        layers, loss = layers or self.layers, loss or self.loss
        h = x
        for layer in layers[:-1]:
            h = layer.forward(h, training)
        last = layers[-1]
        if path == "logits":  # softmax + cross-entropy (or a from_logits loss) from the logits
            z = last.linear_forward(h)
            value = loss.forward_logits(z, t, sample_weight)
            return value, (z if loss.from_logits else loss.y)
        y = last.forward(h, training)
        return loss.forward(y, t, sample_weight), y

    def backward(self) -> None:
        """Backprop the last ``forward_loss``: every layer's ``grads`` is filled."""
        last = self.layers[-1]
        if self.loss_path == "outputs":
            d = last.backward(self.loss.backward())
        else:  # the gradient starts at the logits, e.g. dL/dz = w (y - t) / N
            d = last.linear_backward(self.loss.backward_logits())
        for layer in reversed(self.layers[self.first_trainable : -1]):
            d = layer.backward(d)

    def named_grads(self) -> dict[str, np.ndarray]:
        """The gradients of the last backward, named like ``named_params``."""
        return {f"{i}.{k}": v for i, lay in enumerate(self.layers) for k, v in lay.grads.items()}

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray,
                       training: bool = True) -> tuple[float, dict[str, np.ndarray]]:
        """Forward and backward without updating: (loss, copies of all gradients)."""
        loss, _ = self.forward_loss(self.prepare_input(x), y, training)
        self.backward()
        return loss, {name: g.copy() for name, g in self.named_grads().items()}

    def train_step(self, x: np.ndarray, y: np.ndarray,
                   sample_weight: np.ndarray | None = None) -> tuple[float, float]:
        """One forward, backward and optimizer update on a batch: (loss, accuracy), the loss
        weighted per sample by ``sample_weight`` (N,) if given (Keras's sum(w l) / N; the
        accuracy unweighted, as Keras's compiled metrics).

        Never applies a non-finite step: a NaN/infinite loss or update raises
        TrainingDivergedError and leaves the weights as they were."""
        return self.train_batch(self.prepare_input(x), y, sample_weight)

    def train_batch(self, x: np.ndarray, y: np.ndarray,
                    sample_weight: np.ndarray | None = None) -> tuple[float, float]:
        """``train_step`` on a batch already checked and in the model's dtype (a fit session
        checks all of x once, not each batch again)."""
        loss, out = self.forward_loss(x, y, training=True, sample_weight=sample_weight)
        if not math.isfinite(loss):
            raise TrainingDivergedError(f"loss became {loss}; the weights were left unchanged")
        acc = accuracy(out, y)
        self.backward()
        self.optimizer.update(self.named_params(), self.named_grads())
        return loss, acc
