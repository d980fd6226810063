"""Weight initializers: ``initialize(name, shape, fan_in, fan_out, rng, dtype)``.

Every draw goes through the ``np.random.Generator`` passed in, so a model built
with the same seed gets identical weights. Values are drawn in float64 and then
cast, so a float32 and a float64 model with the same seed start from the same
numbers (up to rounding).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Shape = tuple[int, ...]


def glorot_uniform(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out)); the Keras default."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def he_normal(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """Keras he_normal: normal with std sqrt(2 / fan_in), truncated at 2 std (redrawn)."""
    # 0.8796... is the std of a unit normal truncated to [-2, 2]; Keras divides by it.
    std = np.sqrt(2.0 / fan_in) / 0.87962566103423978
    w = rng.standard_normal(size=shape)
    outside = np.abs(w) > 2.0
    while outside.any():
        w[outside] = rng.standard_normal(size=int(outside.sum()))
        outside = np.abs(w) > 2.0
    return w * std


def xavier(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """The course's "Xavier": randn(n_in, n_out) / sqrt(n_in)."""
    return rng.standard_normal(size=shape) / np.sqrt(fan_in)


def uniform(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """U(-1, 1), as in the course's first networks."""
    return rng.uniform(-1.0, 1.0, size=shape)


def normal(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """N(0, 1), as in the course's softmax regression (weights and biases)."""
    return rng.standard_normal(size=shape)


def zeros(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """All zeros (the default for biases); draws nothing from rng."""
    return np.zeros(shape)


INITIALIZERS: dict[str, Callable[[Shape, int, int, np.random.Generator], np.ndarray]] = {
    "glorot_uniform": glorot_uniform,
    "he_normal": he_normal,
    "xavier": xavier,
    "uniform": uniform,
    "normal": normal,
    "zeros": zeros,
}


def check_initializer(name: str) -> str:
    """Return ``name`` if it is a known initializer, else raise ValueError listing them."""
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; choose one of {sorted(INITIALIZERS)}")
    return name


def initialize(
    name: str,
    shape: Shape,
    fan_in: int,
    fan_out: int,
    rng: np.random.Generator,
    dtype: np.dtype | str = "float32",
) -> np.ndarray:
    """A new C-contiguous array of ``shape`` filled by initializer ``name``."""
    values = INITIALIZERS[check_initializer(name)](shape, fan_in, fan_out, rng)
    return np.ascontiguousarray(values, dtype=dtype)
