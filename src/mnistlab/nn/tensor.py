"""TensorFlow's eager style, for ``import mnistlab as tf``: arrays that answer ``.numpy()``
and the ``tf.nn`` functions a tutorial calls on a model's outputs.

``mnistlab.keras``'s ``model(x)`` and loss calls return an ``EagerArray`` (a NumPy array
with TensorFlow's ``numpy()``), and ``tf.nn.softmax``, ``tf.nn.relu`` and
``tf.nn.sigmoid`` (this package's ``softmax``, ``relu``, ``sigmoid``) do too, so that the
TensorFlow quickstart's ``tf.nn.softmax(model(x).numpy()).numpy()`` runs unchanged. The
engine itself computes with the plain functions of ``nn.activations``."""

from __future__ import annotations

from typing import Any

import numpy as np

from mnistlab.nn import activations

__all__ = ["EagerArray", "eager", "relu", "sigmoid", "softmax"]


class EagerArray(np.ndarray):
    """A NumPy array with TensorFlow's ``numpy()``; NumPy's functions keep the type."""

    def numpy(self) -> np.ndarray | np.generic:
        """The values as a plain NumPy array (a 0-d one as a NumPy scalar, as TF)."""
        plain = np.asarray(self).view(np.ndarray)
        return plain[()] if plain.ndim == 0 else plain


def eager(value: Any) -> EagerArray:
    """``value`` as an EagerArray (a view of an array; a new 0-d array of a number)."""
    return np.asarray(value).view(EagerArray)


def _floats(x: Any) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def softmax(logits: Any, axis: int = -1) -> EagerArray:
    """``tf.nn.softmax``: exp(x) / sum(exp(x)) along ``axis`` (the last by default)."""
    x = np.moveaxis(_floats(logits), axis, -1)
    return eager(np.moveaxis(activations.softmax(x), -1, axis))


def relu(features: Any) -> EagerArray:
    """``tf.nn.relu``: max(x, 0), elementwise."""
    return eager(np.maximum(_floats(features), 0))


def sigmoid(x: Any) -> EagerArray:
    """``tf.nn.sigmoid``: 1 / (1 + exp(-x)), elementwise."""
    return eager(activations.sigmoid(_floats(x)))
