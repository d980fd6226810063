"""Activation functions as small objects: ``forward`` caches what ``backward`` needs.

Each class is one screen: the forward formula, then its derivative. None of them
mutates the array it is given unless asked to with ``out=z``: a Dense or Conv2D layer
does that with its own fresh pre-activation, which saves an array the size of the
layer's output (and the time to fill it) on every call.
"""

from __future__ import annotations

import numpy as np


class ActivationFunction:
    """Elementwise (or row-wise, for softmax) nonlinearity with a cached backward."""

    name = "linear"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """y = f(z), written into ``out`` if given (``out`` may be ``z`` itself)."""
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. the input z, given dy = dL/dy; never mutates dy."""
        raise NotImplementedError


class Linear(ActivationFunction):
    """y = z (no activation); returns its input unchanged, no copy."""

    name = "linear"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None or out is z:
            return z
        np.copyto(out, z)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow: exp only ever sees arguments <= 0.

    z >= 0: 1 / (1 + exp(-z));   z < 0: exp(z) / (1 + exp(z))   (same value, no overflow)
    Both cases at once: exp(min(z, 0)) / (1 + exp(-|z|)).
    """
    denominator = np.exp(-np.abs(z))  # computed before ``out`` (maybe z) is written
    denominator += 1.0
    y = np.minimum(z, 0, out=out)
    np.exp(y, out=y)
    y /= denominator
    return y


class Sigmoid(ActivationFunction):
    """y = sigmoid(z);  dz = dy * y * (1 - y)."""

    name = "sigmoid"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        self.y = sigmoid(z, out)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self.y * (1.0 - self.y)


class ReLU(ActivationFunction):
    """y = max(z, 0);  dz = dy where z > 0, else 0."""

    name = "relu"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        self.y = np.maximum(z, 0, out=out)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * (self.y > 0)  # y > 0 exactly where z > 0


class Tanh(ActivationFunction):
    """y = tanh(z);  dz = dy * (1 - y**2)."""

    name = "tanh"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        self.y = np.tanh(z, out=out)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * (1.0 - self.y * self.y)


def softmax(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise exp(z) / sum(exp(z)); subtracting the row max keeps exp <= 1."""
    e = np.subtract(z, z.max(axis=-1, keepdims=True), out=out)
    np.exp(e, out=e)
    e /= e.sum(axis=-1, keepdims=True)
    return e


class Softmax(ActivationFunction):
    """y = softmax(z) over the last axis;  dz = y * (dy - sum(dy * y)).

    With a cross-entropy loss the model skips this backward and uses the fused,
    exact gradient (y - t) / N instead (see ``losses.CategoricalCrossentropy``).
    """

    name = "softmax"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        self.y = softmax(z, out)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self.y
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


ACTIVATIONS: dict[str, type[ActivationFunction]] = {
    "linear": Linear,
    "sigmoid": Sigmoid,
    "relu": ReLU,
    "tanh": Tanh,
    "softmax": Softmax,
}


def get_activation(name: str | None) -> ActivationFunction:
    """A fresh activation object for ``name`` (None means "linear")."""
    key = "linear" if name is None else name
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[key]()
