"""Losses: values match their textbook formulas, integer and one-hot labels agree, the fused
softmax cross-entropy is stable and its gradient is (y - t) / N."""

from __future__ import annotations

import numpy as np
import pytest

from mnistlab.nn import accuracy, get_loss, softmax
from mnistlab.nn.losses import (
    BinaryCrossentropySum,
    CategoricalCrossentropy,
    MeanSquaredError,
    SigmoidCrossentropySum,
    one_hot,
)

RNG = np.random.default_rng(0)
Z = RNG.standard_normal((6, 4))
LABELS = np.array([0, 3, 1, 1, 2, 0])


def numeric_grad(f, y, eps=1e-6):
    g = np.zeros_like(y)
    for idx in np.ndindex(y.shape):
        old = y[idx]
        y[idx] = old + eps
        plus = f(y)
        y[idx] = old - eps
        minus = f(y)
        y[idx] = old
        g[idx] = (plus - minus) / (2 * eps)
    return g


def test_cross_entropy_is_the_same_for_integer_and_one_hot_labels() -> None:
    loss = CategoricalCrossentropy()
    by_index = loss.forward_logits(Z, LABELS)
    by_one_hot = loss.forward_logits(Z, one_hot(LABELS, 4, "float64"))
    assert by_index == pytest.approx(by_one_hot, rel=1e-12)
    assert by_index == pytest.approx(-np.mean(np.log(softmax(Z)[np.arange(6), LABELS])))


def test_fused_softmax_cross_entropy_gradient_is_y_minus_t_over_n() -> None:
    for labels in (LABELS, one_hot(LABELS, 4, "float64")):
        loss = CategoricalCrossentropy()
        loss.forward_logits(Z, labels)
        expected = (softmax(Z) - one_hot(LABELS, 4, "float64")) / len(Z)
        np.testing.assert_allclose(loss.backward_logits(), expected, atol=1e-15)
        numeric = numeric_grad(lambda z, t=labels: CategoricalCrossentropy().forward_logits(z, t),
                               Z.copy())
        np.testing.assert_allclose(loss.backward_logits(), numeric, atol=1e-9)


def test_cross_entropy_from_logits_stays_finite_for_huge_logits() -> None:
    z = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], dtype=np.float32)
    loss = CategoricalCrossentropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss.forward_logits(z, np.array([1, 1]))
        grad = loss.backward_logits()
    assert value == pytest.approx(1000.0, rel=1e-6)  # half the batch is 2000 nats off
    assert np.all(np.isfinite(grad))


def test_cross_entropy_on_probabilities_is_the_course_formula() -> None:
    y, t = softmax(Z), one_hot(LABELS, 4, "float64")
    loss = CategoricalCrossentropy()
    assert loss.forward(y, LABELS) == pytest.approx(-np.sum(t * np.log(y + 1e-7)) / 6)
    np.testing.assert_allclose(loss.backward(),
                               numeric_grad(lambda p: CategoricalCrossentropy().forward(p, t),
                                            y.copy()), atol=1e-8)


def test_binary_cross_entropy_sum_is_the_course_formula_and_its_exact_gradient() -> None:
    y = 1 / (1 + np.exp(-Z))
    t = one_hot(LABELS, 4, "float64")
    loss = BinaryCrossentropySum()
    expected = -np.sum(t * np.log(y + 1e-7) + (1 - t) * np.log(1 - y + 1e-7))
    assert loss.forward(y, LABELS) == pytest.approx(expected)
    np.testing.assert_allclose(loss.backward(),
                               numeric_grad(lambda p: BinaryCrossentropySum().forward(p, t),
                                            y.copy()), rtol=1e-6)
    assert loss.reduction == "sum"


def test_sigmoid_crossentropy_sum_is_the_same_value_with_the_course_gradient() -> None:
    t = one_hot(LABELS, 4, "float64")
    y = 1 / (1 + np.exp(-Z))
    loss = SigmoidCrossentropySum()
    assert loss.forward(y, t) == BinaryCrossentropySum().forward(y, t)
    np.testing.assert_allclose(loss.backward_logits(), y - t)  # w.r.t. the logits
    assert loss.gradient_activation == "sigmoid" and loss.fused_activation is None


def test_mse_is_the_mean_over_all_elements_like_keras() -> None:
    y, t = Z, one_hot(LABELS, 4, "float64")
    loss = MeanSquaredError()
    assert loss.forward(y, LABELS) == pytest.approx(np.mean((y - t) ** 2))
    np.testing.assert_allclose(loss.backward(), 2 * (y - t) / y.size)


def test_accuracy_counts_argmax_matches_for_integer_and_one_hot_labels() -> None:
    y = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert accuracy(y, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    assert accuracy(y, one_hot(np.array([0, 1, 1]), 2)) == pytest.approx(2 / 3)
    assert accuracy(np.array([[0.7], [0.2]]), np.array([1, 1])) == 0.5  # one sigmoid output


def test_losses_are_found_by_their_compile_names() -> None:
    assert isinstance(get_loss("categorical_crossentropy"), CategoricalCrossentropy)
    assert isinstance(get_loss("sparse_categorical_crossentropy"), CategoricalCrossentropy)
    assert type(get_loss("binary_crossentropy_sum")) is BinaryCrossentropySum
    assert isinstance(get_loss("sigmoid_crossentropy_sum"), SigmoidCrossentropySum)
    assert isinstance(get_loss("mse"), MeanSquaredError)
    with pytest.raises(ValueError, match="mse"):
        get_loss("hinge")


def test_labels_that_do_not_fit_the_outputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="do not match"):
        MeanSquaredError().forward(Z, np.zeros((6, 3)))
