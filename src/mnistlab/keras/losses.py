"""Keras's ``keras.losses``: the loss classes (``from_logits`` included) and names Keras
takes. Each class is the NumPy engine's loss of the same name (``mnistlab.nn.losses``)
that can also be called as Keras's are, ``loss_fn(y_true, y_pred)``: the mean loss of the
batch, as an array with ``.numpy()``."""

from __future__ import annotations

from typing import Any

import numpy as np

from mnistlab.nn import losses as nn_losses
from mnistlab.nn.losses import Loss, get_loss
from mnistlab.nn.tensor import EagerArray, eager

__all__ = ["BinaryCrossentropy", "CategoricalCrossentropy", "Loss", "MeanSquaredError",
           "SparseCategoricalCrossentropy", "get"]


class KerasLoss:
    """Keras's call: ``loss_fn(y_true, y_pred, sample_weight=None)`` (targets first)."""

    from_logits: bool

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> EagerArray:
        y_pred = np.asarray(y_pred, dtype=np.float32)
        weights = {} if sample_weight is None else {"sample_weight": sample_weight}
        if self.from_logits:
            return eager(np.float32(self.forward_logits(y_pred, np.asarray(y_true), **weights)))
        return eager(np.float32(self.forward(y_pred, np.asarray(y_true), **weights)))


class SparseCategoricalCrossentropy(KerasLoss, nn_losses.SparseCategoricalCrossentropy):
    """Integer labels; ``from_logits=True`` after an output layer without activation."""


class CategoricalCrossentropy(KerasLoss, nn_losses.CategoricalCrossentropy):
    """One-hot labels; ``from_logits=True`` after an output layer without activation."""


class BinaryCrossentropy(KerasLoss, nn_losses.BinaryCrossentropy):
    """0/1 targets: Keras's mean over all outputs; ``from_logits=True`` for logits."""


class MeanSquaredError(KerasLoss, nn_losses.MeanSquaredError):
    """The mean of the squared differences."""


def get(identifier: str | dict | Loss) -> Loss:
    """A loss from a Keras name ("sparse_categorical_crossentropy", "mse", ...), a config or
    the object."""
    return get_loss(identifier)
