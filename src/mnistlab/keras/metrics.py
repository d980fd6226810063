"""Keras's ``keras.metrics`` as far as mnistlab computes them: accuracy, under each of the
names Keras gives it (fit logs it under the name compile was given)."""

from __future__ import annotations

__all__ = ["Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy"]


class _Accuracy:
    name = "accuracy"

    def __init__(self, name: str | None = None, dtype: str | None = None) -> None:
        if name is not None and name != type(self).name:
            raise NotImplementedError("metrics under other names are not implemented")


class Accuracy(_Accuracy):
    """Keras's accuracy (logged as "accuracy")."""


class SparseCategoricalAccuracy(_Accuracy):
    """Integer labels against the argmax of the outputs."""

    name = "sparse_categorical_accuracy"


class CategoricalAccuracy(_Accuracy):
    """One-hot labels against the argmax of the outputs."""

    name = "categorical_accuracy"


class BinaryAccuracy(_Accuracy):
    """0/1 labels against outputs > 0.5."""

    name = "binary_accuracy"
