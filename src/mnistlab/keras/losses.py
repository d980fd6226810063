"""Keras's ``keras.losses``: the loss classes (``from_logits`` included) and names Keras
takes, which are the NumPy engine's own losses (``mnistlab.nn.losses``)."""

from __future__ import annotations

from mnistlab.nn.losses import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    Loss,
    MeanSquaredError,
    SparseCategoricalCrossentropy,
    get_loss,
)

__all__ = ["BinaryCrossentropy", "CategoricalCrossentropy", "Loss", "MeanSquaredError",
           "SparseCategoricalCrossentropy", "get"]


def get(identifier: str | dict | Loss) -> Loss:
    """A loss from a Keras name ("sparse_categorical_crossentropy", "mse", ...), a config or
    the object."""
    return get_loss(identifier)
