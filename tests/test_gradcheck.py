"""Backprop is right: for every layer type and every loss, the analytic gradients agree with
central differences to a relative error below 1e-6 (float64, small shapes)."""

from __future__ import annotations

import numpy as np
import pytest

from mnistlab import Sequential
from mnistlab.nn import (
    Activation,
    Conv2D,
    Cropping2D,
    Dense,
    Dropout,
    Flatten,
    MaxPooling2D,
    gradcheck,
)
from mnistlab.nn.losses import one_hot

RNG = np.random.default_rng(0)
IMAGES = RNG.standard_normal((3, 2, 6, 6))
FLAT = RNG.standard_normal((4, 5))
LABELS3, LABELS4 = np.array([0, 2, 1]), np.array([2, 0, 1, 2])

CASES = {
    "dense sigmoid + softmax, sparse CE": (
        [Dense(6, "sigmoid"), Dense(3, "softmax")], FLAT, LABELS4,
        "sparse_categorical_crossentropy"),
    "dense tanh + softmax, one-hot CE": (
        [Dense(6, "tanh"), Dense(3, "softmax")], FLAT, one_hot(LABELS4, 3, "float64"),
        "categorical_crossentropy"),
    "dense relu + separate softmax layer, CE": (
        [Dense(6, "relu"), Dense(3), Activation("softmax")], FLAT, LABELS4,
        "categorical_crossentropy"),
    "softmax output with mse (softmax backward unfused)": (
        [Dense(6, "relu"), Dense(3, "softmax")], FLAT, LABELS4, "mse"),
    "sigmoid outputs with the course's summed BCE": (
        [Dense(6, "sigmoid"), Dense(3, "sigmoid")], FLAT, one_hot(LABELS4, 3, "float64"),
        "binary_crossentropy_sum"),
    "the same with the course's gradient y - t (outputs away from 0 and 1)": (
        [Dense(6, "sigmoid"), Dense(3, "sigmoid")], FLAT, one_hot(LABELS4, 3, "float64"),
        "sigmoid_crossentropy_sum"),
    "linear outputs with mse": (
        [Dense(6, "tanh"), Dense(2)], FLAT, RNG.standard_normal((4, 2)), "mse"),
    "dropout with a fixed mask": (
        [Dense(8, "tanh"), Dropout(0.4, seed=3), Dense(3, "softmax")], FLAT, LABELS4,
        "categorical_crossentropy"),
    "conv same 3x3 + maxpool + dense": (
        [Conv2D(3, 3, padding="same", activation="tanh"), MaxPooling2D(2), Flatten(),
         Dense(3, "softmax")], IMAGES, LABELS3, "categorical_crossentropy"),
    "conv same with an even 2x2 kernel": (
        [Conv2D(2, 3, activation="sigmoid"), Conv2D(3, 2, padding="same", activation="tanh"),
         Flatten(), Dense(3, "softmax")], IMAGES, LABELS3, "categorical_crossentropy"),
    "conv valid, stride 2, relu": (
        [Conv2D(2, 1, activation="tanh"), Conv2D(3, 3, strides=2, activation="relu"),
         Flatten(), Dense(3, "softmax")], IMAGES, LABELS3, "categorical_crossentropy"),
    "conv same, stride 2, non-square kernel": (
        [Conv2D(2, 1), Conv2D(3, (3, 2), strides=(2, 1), padding="same"), Flatten(),
         Dense(3, "softmax")], IMAGES, LABELS3, "categorical_crossentropy"),
    "overlapping maxpool with same padding, then dropout": (
        [Conv2D(3, 3, activation="tanh"), MaxPooling2D(3, strides=1, padding="same"),
         Dropout(0.3), Flatten(), Dense(3, "softmax")], IMAGES, LABELS3,
        "categorical_crossentropy"),
    "cropping between two convolutions": (
        [Conv2D(2, 1, activation="tanh"), Cropping2D(((1, 0), (0, 2))),
         Conv2D(3, 2, activation="relu"), Flatten(), Dense(3, "softmax")], IMAGES, LABELS3,
        "categorical_crossentropy"),
    "the course CNN shape, scaled down": (
        [Conv2D(4, 5, padding="same", activation="relu"), MaxPooling2D(2),
         Conv2D(4, 2, padding="same", activation="relu"), MaxPooling2D(2), Dropout(0.25),
         Flatten(), Dense(5, "relu"), Dense(3, "softmax")], IMAGES, LABELS3,
        "sparse_categorical_crossentropy"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_backprop_matches_central_differences(case: str) -> None:
    layers, x, y, loss = CASES[case]
    model = Sequential(layers, seed=1, dtype="float64", input_shape=x.shape[1:])
    model.compile("sgd", loss)
    report = gradcheck(model, x, y)
    assert report.max_rel_error < 1e-6, str(report)
    assert {p.name for p in report.params} == set(model.get_weights())


def test_gradcheck_catches_a_wrong_backward() -> None:
    model = Sequential([Dense(4, "tanh"), Dense(3, "softmax")], seed=0, dtype="float64",
                       input_shape=(5,))
    model.compile("sgd", "categorical_crossentropy")
    layer = model.layers[0]
    correct = layer.linear_backward

    def off_by_a_bit(dz):
        dx = correct(dz)
        layer.grads["b"] *= 1.01  # a 1% error in one gradient
        return dx

    layer.linear_backward = off_by_a_bit
    report = gradcheck(model, FLAT, LABELS4)
    worst = max(report.params, key=lambda p: p.rel_error)
    assert worst.name == "0.b" and worst.rel_error > 1e-3


def test_gradcheck_can_sample_entries_of_large_parameters() -> None:
    model = Sequential([Dense(50, "relu"), Dense(3, "softmax")], seed=0, dtype="float64",
                       input_shape=(5,))
    model.compile("sgd", "categorical_crossentropy")
    report = gradcheck(model, FLAT, LABELS4, max_entries=20)
    assert [p.checked for p in report.params] == [20, 20, 20, 3]
    assert report.passed(1e-6)
    assert "max relative error" in str(report)


def test_gradcheck_leaves_the_weights_as_they_were() -> None:
    model = Sequential([Dense(4, "tanh"), Dense(3, "softmax")], seed=0, dtype="float64",
                       input_shape=(5,))
    model.compile("sgd", "categorical_crossentropy")
    before = model.get_weights()
    gradcheck(model, FLAT, LABELS4)
    after = model.get_weights()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_gradcheck_refuses_float32_models() -> None:
    model = Sequential([Dense(3, "softmax")], input_shape=(5,))
    model.compile("sgd", "categorical_crossentropy")
    with pytest.raises(ValueError, match="float64"):
        gradcheck(model, FLAT, LABELS4)
