"""Activation functions as small objects: ``forward`` caches what ``backward`` needs.

Each class is one screen: the forward formula, then its derivative. None of them
mutates the array it is given unless asked to with ``out=z``: a Dense or Conv2D layer
does that with its own fresh pre-activation, which saves an array the size of the
layer's output (and the time to fill it) on every call.
"""

from __future__ import annotations

import math

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


# ---- Keras's other activations, by Keras 3's names and defaults ---------------------------


class Elu(ActivationFunction):
    """y = z if z > 0 else exp(z) - 1 (alpha = 1);  dz = dy where y > 0, else dy * (y + 1)."""

    name = "elu"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        negative = np.expm1(np.minimum(z, 0))  # exp(z) - 1 for z <= 0, no overflow for z > 0
        self.y = np.where(z > 0, z, negative) if out is None else _select(z > 0, z, negative, out)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * np.where(self.y > 0, 1.0, self.y + 1.0).astype(dy.dtype, copy=False)


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


class Selu(ActivationFunction):
    """y = scale * (z if z > 0 else alpha * (exp(z) - 1)), Keras's constants;
    dz = dy * scale where y > 0, else dy * (y + scale * alpha)."""

    name = "selu"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        negative = np.expm1(np.minimum(z, 0)) * (SELU_SCALE * SELU_ALPHA)
        positive = z * SELU_SCALE
        y = np.where(z > 0, positive, negative) if out is None else _select(
            z > 0, positive, negative, out)
        self.y = y.astype(z.dtype, copy=False)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        slope = np.where(self.y > 0, SELU_SCALE, self.y + SELU_SCALE * SELU_ALPHA)
        return dy * slope.astype(dy.dtype, copy=False)


class LeakyReLU(ActivationFunction):
    """y = z if z > 0 else slope * z, slope 0.2 (Keras 3's "leaky_relu");
    dz = dy where z > 0, else slope * dy."""

    name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.2) -> None:
        self.negative_slope = float(negative_slope)

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        self.positive = z > 0  # kept before ``out`` (maybe z) is written
        scaled = z * z.dtype.type(self.negative_slope)
        self.y = np.where(self.positive, z, scaled) if out is None else _select(
            self.positive, z, scaled, out)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return np.where(self.positive, dy, dy * dy.dtype.type(self.negative_slope))


def softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + exp(z)) without overflow: max(z, 0) + log(1 + exp(-|z|))."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


class Softplus(ActivationFunction):
    """y = log(1 + exp(z));  dz = dy * sigmoid(z) = dy * (1 - exp(-y))."""

    name = "softplus"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        y = softplus(z)
        self.y = y if out is None else _copied(y, out)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * -np.expm1(-self.y)  # 1 - exp(-y), exact also where y is tiny


class Swish(ActivationFunction):
    """y = z * sigmoid(z) (Keras's "swish", also "silu");  with s = sigmoid(z),
    dz = dy * (s + z * s * (1 - s)) = dy * (s + y * (1 - s))."""

    name = "swish"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        self.s = sigmoid(z)  # a new array, computed before ``out`` (maybe z) is written
        self.y = np.multiply(z, self.s, out=out)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * (self.s + self.y * (1.0 - self.s))


class Silu(Swish):
    """The same function as "swish", under the other name Keras accepts."""

    name = "silu"


_erf = np.vectorize(math.erf, otypes=[np.float64])  # exact (libm's erf), element by element


def erf(z: np.ndarray) -> np.ndarray:
    """The error function, elementwise, in float64 (NumPy has none; no SciPy needed)."""
    return _erf(np.asarray(z, dtype=np.float64))


class Gelu(ActivationFunction):
    """Keras 3's gelu (approximate=False): y = z * Phi(z), Phi(z) = (1 + erf(z / sqrt 2)) / 2
    the standard normal CDF;  dz = dy * (Phi(z) + z * phi(z)), phi the normal density."""

    name = "gelu"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        self.z = z.copy() if out is z else z  # backward needs z itself
        self.cdf = (0.5 * (1.0 + erf(z / math.sqrt(2.0)))).astype(z.dtype, copy=False)
        self.y = np.multiply(z, self.cdf, out=out)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        pdf = np.exp(-0.5 * self.z * self.z) / math.sqrt(2.0 * math.pi)
        return dy * (self.cdf + self.z * pdf)


class Exponential(ActivationFunction):
    """y = exp(z);  dz = dy * y."""

    name = "exponential"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        self.y = np.exp(z, out=out)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self.y


def _select(condition: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """np.where(condition, a, b) written into ``out`` (which may be ``a``)."""
    np.copyto(out, a)
    np.copyto(out, b, where=~condition)
    return out


def _copied(y: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.copyto(out, y)
    return out


ACTIVATIONS: dict[str, type[ActivationFunction]] = {
    "linear": Linear,
    "sigmoid": Sigmoid,
    "relu": ReLU,
    "tanh": Tanh,
    "softmax": Softmax,
    "elu": Elu,
    "selu": Selu,
    "leaky_relu": LeakyReLU,
    "softplus": Softplus,
    "swish": Swish,
    "silu": Silu,
    "gelu": Gelu,
    "exponential": Exponential,
}


def get_activation(name: str | None) -> ActivationFunction:
    """A fresh activation object for ``name`` (None means "linear")."""
    key = "linear" if name is None else name
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[key]()
