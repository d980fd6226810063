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


# 0.8796... is the std of a unit normal truncated to [-2, 2]: Keras divides by it, so the
# truncated draws have the std it asks for.
TRUNCATED_STD = 0.87962566103423978


def truncated_normal(shape: Shape, std: float, rng: np.random.Generator) -> np.ndarray:
    """Normal draws with std ``std``, truncated at 2 std: values outside are redrawn."""
    w = rng.standard_normal(size=shape)
    outside = np.abs(w) > 2.0
    while outside.any():
        w[outside] = rng.standard_normal(size=int(outside.sum()))
        outside = np.abs(w) > 2.0
    return w * std


def he_normal(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """Keras he_normal: normal with std sqrt(2 / fan_in), truncated at 2 std (redrawn)."""
    return truncated_normal(shape, np.sqrt(2.0 / fan_in) / TRUNCATED_STD, rng)


def glorot_normal(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator,
                  ) -> np.ndarray:
    """Keras glorot_normal: std sqrt(2 / (fan_in + fan_out)), truncated at 2 std."""
    return truncated_normal(shape, np.sqrt(2.0 / (fan_in + fan_out)) / TRUNCATED_STD, rng)


def lecun_normal(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator,
                 ) -> np.ndarray:
    """Keras lecun_normal: std sqrt(1 / fan_in), truncated at 2 std."""
    return truncated_normal(shape, np.sqrt(1.0 / fan_in) / TRUNCATED_STD, rng)


def he_uniform(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """Keras he_uniform: U(-l, l) with l = sqrt(6 / fan_in)."""
    limit = np.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape)


def lecun_uniform(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator,
                  ) -> np.ndarray:
    """Keras lecun_uniform: U(-l, l) with l = sqrt(3 / fan_in)."""
    limit = np.sqrt(3.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape)


def random_normal(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator,
                  ) -> np.ndarray:
    """Keras RandomNormal's defaults: N(0, 0.05**2)."""
    return rng.normal(0.0, 0.05, size=shape)


def random_uniform(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator,
                   ) -> np.ndarray:
    """Keras RandomUniform's defaults: U(-0.05, 0.05)."""
    return rng.uniform(-0.05, 0.05, size=shape)


def truncated_normal_default(shape: Shape, fan_in: int, fan_out: int,
                             rng: np.random.Generator) -> np.ndarray:
    """Keras TruncatedNormal's defaults: std 0.05 before truncation at 2 std (Keras does
    not rescale this one)."""
    return truncated_normal(shape, 0.05, rng)


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


def ones(shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """All ones (BatchNormalization's gamma and moving variance); draws nothing."""
    return np.ones(shape)


INITIALIZERS: dict[str, Callable[[Shape, int, int, np.random.Generator], np.ndarray]] = {
    # the course's names
    "xavier": xavier,
    "uniform": uniform,
    "normal": normal,
    # Keras 3's names and formulas (fans of a conv kernel: receptive field * channels)
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "lecun_uniform": lecun_uniform,
    "lecun_normal": lecun_normal,
    "random_normal": random_normal,
    "random_uniform": random_uniform,
    "truncated_normal": truncated_normal_default,
    "zeros": zeros,
    "ones": ones,
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
