"""Keras's ``keras.activations``: functions by Keras's names (``activations.relu(x)``), which
layers also take in place of the name (``Dense(10, activation=activations.softmax)``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mnistlab.nn.activations import ACTIVATIONS, get_activation

__all__ = [*sorted(ACTIVATIONS), "get"]


def _function(name: str) -> Callable[[np.ndarray], np.ndarray]:
    def activation(x: np.ndarray) -> np.ndarray:
        return get_activation(name).forward(np.asarray(x, dtype=np.float32))

    activation.__name__ = activation.__qualname__ = name
    activation.__doc__ = f"Keras's ``{name}`` activation, computed by mnistlab.nn.activations."
    return activation


globals().update({name: _function(name) for name in ACTIVATIONS})


def get(identifier: str | Callable | None) -> Callable:
    """The activation function for a name (or the function itself)."""
    if identifier is None:
        return globals()["linear"]
    if callable(identifier):
        return identifier
    if identifier not in ACTIVATIONS:
        raise ValueError(f"unknown activation {identifier!r}; choose one of {sorted(ACTIVATIONS)}")
    return globals()[identifier]
