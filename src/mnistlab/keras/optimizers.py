"""Keras's ``keras.optimizers``: SGD (momentum, nesterov), Adam, AdamW and RMSprop with
Keras 3's arguments and formulas, which are the NumPy engine's own optimizers
(``mnistlab.nn.optimizers``); ``optimizer.learning_rate`` is readable and settable."""

from __future__ import annotations

from mnistlab.nn.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop, get_optimizer

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "get"]


def get(identifier: str | Optimizer) -> Optimizer:
    """An optimizer from a Keras name ("adam", "SGD", "rmsprop", ...) or the object."""
    return get_optimizer(identifier)
