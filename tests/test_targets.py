"""Labels that do not fit the model are refused before any training step, on both engines,
by one ValueError that names the array, the first bad sample and the fix
(``losses.check_targets``, called by ``check_pairs`` from fit and evaluate)."""

from __future__ import annotations

import numpy as np
import pytest

from mnistlab import Sequential
from mnistlab.nn import Dense, SparseCategoricalCrossentropy, check_targets, get_loss

torch_engine = pytest.importorskip("mnistlab.engines.torch")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(30, 6)).astype("float32")
DIGITS = np.arange(30) % 10  # labels 0..9


def model(last: Dense, loss: str, engine: str) -> Sequential:
    m = Sequential([Dense(8, "relu", input_shape=(6,)), last], seed=0)
    m = torch_engine.to_torch(m) if engine == "torch" else m
    m.compile("sgd", loss)
    return m


def weights_unchanged(m: Sequential, before: dict) -> bool:
    return all(np.array_equal(m.get_weights()[k], v) for k, v in before.items())


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize(("last", "loss", "y", "message"), [
    # ten classes into five outputs
    (Dense(5, "softmax"), "sparse_categorical_crossentropy", DIGITS,
     r"y\[5\] is class 5, but the model has 5 outputs .*10 units"),
    # digits into a one-output sigmoid model (it used to train and report 0.898)
    (Dense(1, "sigmoid"), "binary_crossentropy", DIGITS,
     r"y\[2\] is 2, but a binary cross-entropy needs targets in \[0, 1\]"),
    # float labels that are not whole numbers
    (Dense(10, "softmax"), "sparse_categorical_crossentropy", DIGITS + 0.5,
     r"y\[0\] is 0.5: a model with 10 outputs takes class labels"),
    # one-hot rows of the wrong width
    (Dense(10, "softmax"), "categorical_crossentropy", np.eye(9)[DIGITS % 9],
     r"y has shape \(30, 9\).*10 outputs"),
    # a NaN label
    (Dense(10, "softmax"), "sparse_categorical_crossentropy",
     np.where(DIGITS == 7, np.nan, DIGITS), r"y\[7\] is not finite"),
])
def test_fit_refuses_labels_that_do_not_fit_before_any_step(engine, last, loss, y, message):
    m = model(last, loss, engine)
    before = m.get_weights()
    with pytest.raises(ValueError, match=message):
        m.fit(X, y, epochs=1, verbose=0)
    assert weights_unchanged(m, before)
    with pytest.raises(ValueError, match=message):
        m.evaluate(X, y)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_validation_labels_are_checked_before_training_too(engine):
    m = model(Dense(5, "softmax"), "sparse_categorical_crossentropy", engine)
    before = m.get_weights()
    with pytest.raises(ValueError, match=r"validation_data's y\[5\] is class 5"):
        m.fit(X, DIGITS % 5, validation_data=(X, DIGITS), verbose=0)
    assert weights_unchanged(m, before)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_whole_number_float_labels_work_as_keras_takes_them(engine):
    """np.loadtxt gives 3.0 for 3: the same training as integer labels."""
    results = []
    for y in (DIGITS, DIGITS.astype("float64")):
        m = model(Dense(10, "softmax"), "sparse_categorical_crossentropy", engine)
        history = m.fit(X, y, epochs=2, batch_size=10, shuffle=False, verbose=0).history
        results.append((history["loss"], m.evaluate(X, y)))
    assert results[0] == results[1]


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_a_linear_output_with_a_from_logits_loss_trains_from_the_logits(engine):
    """Keras's Dense(10) + SparseCategoricalCrossentropy(from_logits=True): softmax
    cross-entropy computed stably from the logits, no NaN even for huge logits."""
    m = Sequential([Dense(10, input_shape=(6,))], seed=0)
    m = torch_engine.to_torch(m) if engine == "torch" else m
    m.compile("sgd", SparseCategoricalCrossentropy(from_logits=True))
    assert m.loss_path == "logits"
    history = m.fit(X * 1e4, DIGITS, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()


def test_soft_binary_targets_and_regression_values_are_fine():
    check_targets(np.linspace(0, 1, 30), 1, get_loss("binary_crossentropy"))
    check_targets(np.linspace(-5, 50, 30), 1, get_loss("mse"))  # one regression output
    check_targets(np.full((30, 10), 0.1), 10, get_loss("categorical_crossentropy"))


def test_loss_configs_record_from_logits_and_rebuild_the_loss():
    loss = get_loss({"name": "binary_crossentropy", "from_logits": True})
    assert loss.get_config() == {"name": "binary_crossentropy", "from_logits": True}
    assert get_loss(loss.get_config()).from_logits
    for name in ("CategoricalCrossentropy", "SparseCategoricalCrossentropy",
                 "BinaryCrossentropy", "MeanSquaredError", "mean_squared_error", "mse"):
        assert get_loss(name).get_config()["from_logits"] is False
    with pytest.raises(ValueError, match="no from_logits"):
        get_loss({"name": "mse", "from_logits": True})
