"""The course's numerical-derivative network and its data: 784-30-10 sigmoids, inputs in
[0.01, 1] and targets 0.01/0.99, float64 (central differences with delta 1e-4 lose about
half their digits to rounding in float32)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mnistlab.datasets import one_hot, scale_pixels
from mnistlab.engines.numpy import Sequential
from mnistlab.nn import SGD, Dense
from mnistlab.nn.numgrad import COURSE_LOSS

__all__ = ["course_inputs", "course_model", "course_targets"]


def course_inputs(images: np.ndarray, dtype: Any = "float64") -> np.ndarray:
    """Pixels 0..255 (any shape (N, ...)) -> flat (N, 784) in [0.01, 1].

    Scaled this way no input is zero, so every weight of the first layer learns from every
    sample (spec preprocess scale "0.01-1")."""
    images = np.asarray(images)
    return scale_pixels(images.reshape(len(images), -1), "0.01-1", dtype)


def course_targets(labels: np.ndarray, classes: int = 10, dtype: Any = "float64") -> np.ndarray:
    """Integer labels -> one-hot rows of 0.01 and 0.99 (a sigmoid never reaches 0 or 1)."""
    return one_hot(np.asarray(labels).reshape(-1), classes, off=0.01, on=0.99, dtype=dtype)


def course_model(hidden: int = 30, seed: int | None = 0, dtype: str = "float64") -> Sequential:
    """The course's 784-hidden-10 sigmoid/sigmoid net, built (weights randn / sqrt(fan_in),
    biases 0) and compiled with the summed binary cross-entropy and SGD lr 0.01."""
    model = Sequential(
        [
            Dense(hidden, activation="sigmoid", kernel_initializer="xavier"),
            Dense(10, activation="sigmoid", kernel_initializer="xavier"),
        ],
        seed=seed,
        dtype=dtype,
        input_shape=(784,),
        preprocess={"scale": "0.01-1"},
        name="course_numgrad",
    )
    model.build()
    model.compile(SGD(lr=0.01), COURSE_LOSS)
    return model
