"""mnistlab.keras against real Keras 3 (on torch, KERAS_BACKEND=torch): the same script,
from the same initial weights, gives the same losses step by step, the same weights after
training, the same parameter counts and the same predictions."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
real = pytest.importorskip("keras")
if real.backend.backend() != "torch":  # pragma: no cover - another backend was chosen first
    pytest.skip("real Keras must run on torch here", allow_module_level=True)

from mnistlab import keras as ours  # noqa: E402

# Keras's torch backend converts tensors with np.array(x), which NumPy 2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


class BatchLosses:
    """The running epoch loss Keras reports after each batch, for either library."""

    def __init__(self, keras_module):
        outer = self

        class Spy(keras_module.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                outer.losses.append(float(logs["loss"]))

        self.losses: list[float] = []
        self.callback = Spy()


def _data(shape, n=96, classes=10, seed=0):
    """Random images and labels. Kept small enough that no true class's probability falls
    below 1e-7 in these few steps: there Keras on torch clips the probability (its loss
    stops at 16.1 and its gradient at 0), while mnistlab, as Keras on TensorFlow, computes a
    softmax's cross-entropy from the logits, exactly."""
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32) * 0.5, rng.integers(0, classes, n)


def _mlp(k):
    return k.Sequential([k.Input((784,)), k.layers.Dense(64, activation="relu"),
                         k.layers.Dense(10, activation="softmax")])


def _cnn(k):
    return k.Sequential([
        k.Input((28, 28, 1)),
        k.layers.Conv2D(8, kernel_size=(5, 5), padding="same", activation="relu"),
        k.layers.MaxPooling2D(pool_size=(2, 2)),
        k.layers.Conv2D(16, (2, 2), padding="same", activation="relu"),
        k.layers.MaxPooling2D(pool_size=(2, 2)),
        k.layers.Flatten(),
        k.layers.Dense(32, activation="relu"),
        k.layers.Dense(10, activation="softmax"),
    ])


def _bn_cnn(k):
    return k.Sequential([
        k.Input((28, 28, 1)), k.layers.Conv2D(6, 3), k.layers.ReLU(),
        k.layers.BatchNormalization(), k.layers.AveragePooling2D(2), k.layers.Flatten(),
        k.layers.Dense(10, activation="softmax")])


def _twins(make, seed=0):
    """The same architecture in both libraries, mnistlab's with Keras's initial weights
    (seeded: the same test, the same numbers, every run)."""
    real.utils.set_random_seed(seed)
    theirs, mine = make(real), make(ours)
    mine.set_weights(theirs.get_weights())
    return theirs, mine


def _train_both(theirs, mine, x, y, compile_args, **fit_args):
    spies = BatchLosses(real), BatchLosses(ours)
    for model, spy in zip((theirs, mine), spies, strict=True):
        model.compile(**compile_args(model is mine))
        history = model.fit(x, y, shuffle=False, verbose=0, callbacks=[spy.callback],
                            **fit_args)
        spy.history = history.history
    return spies


@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_same_parameter_counts_and_predictions_from_the_same_weights(make):
    theirs, mine = _twins(make)
    assert mine.count_params() == theirs.count_params()
    assert [w.shape for w in mine.get_weights()] == [tuple(w.shape) for w in
                                                       theirs.get_weights()]
    x, _ = _data(theirs.input_shape[1:], n=16)
    np.testing.assert_allclose(mine.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_same_losses_step_by_step(make, optimizer):
    theirs, mine = _twins(make)
    x, y = _data(theirs.input_shape[1:])
    spies = _train_both(theirs, mine, x, y, lambda _: {
        "optimizer": optimizer, "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"]}, batch_size=32, epochs=2)
    np.testing.assert_allclose(spies[1].losses, spies[0].losses, rtol=1e-4, atol=1e-5)
    for a, b in zip(mine.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, np.asarray(b), atol=2e-5)
    np.testing.assert_allclose(spies[1].history["accuracy"], spies[0].history["accuracy"])


def test_validation_split_and_batch_normalization_as_keras():
    theirs, mine = _twins(_bn_cnn)
    x, y = _data((28, 28, 1), n=80)
    spies = _train_both(theirs, mine, x, y, lambda _: {
        "optimizer": "adam", "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"]}, batch_size=16, epochs=2, validation_split=0.2)
    np.testing.assert_allclose(spies[1].losses, spies[0].losses, rtol=1e-4, atol=1e-5)
    for key in ("val_loss", "val_accuracy"):
        np.testing.assert_allclose(spies[1].history[key], spies[0].history[key], rtol=1e-4,
                                   atol=1e-5)
    for a, b in zip(mine.get_weights(), theirs.get_weights(), strict=True):  # moving stats too
        np.testing.assert_allclose(a, np.asarray(b), atol=2e-5)


def test_one_hot_labels_and_categorical_crossentropy_as_keras():
    theirs, mine = _twins(_mlp)
    x, y = _data((784,))
    onehot = ours.utils.to_categorical(y, 10)
    np.testing.assert_array_equal(onehot, real.utils.to_categorical(y, 10))
    spies = _train_both(theirs, mine, x, onehot, lambda _: {
        "optimizer": "adam", "loss": "categorical_crossentropy"}, batch_size=32, epochs=1)
    np.testing.assert_allclose(spies[1].losses, spies[0].losses, rtol=1e-4, atol=1e-5)


def test_evaluate_matches_keras():
    theirs, mine = _twins(_cnn)
    x, y = _data((28, 28, 1), n=50)
    for model in (theirs, mine):
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    np.testing.assert_allclose(mine.evaluate(x, y, verbose=0), theirs.evaluate(x, y, verbose=0),
                               rtol=1e-5)


@pytest.mark.parametrize("name", ["rmsprop", "nesterov", "adamw", "adam_lr"])
def test_same_losses_with_keras_s_other_optimizers(name):
    def optimizer(k):
        return {"rmsprop": lambda: k.optimizers.RMSprop(learning_rate=0.002),
                "nesterov": lambda: k.optimizers.SGD(learning_rate=0.05, momentum=0.9,
                                                     nesterov=True),
                "adamw": lambda: k.optimizers.AdamW(learning_rate=0.003),
                "adam_lr": lambda: k.optimizers.Adam(learning_rate=0.003)}[name]()

    theirs, mine = _twins(_mlp)
    x, y = _data((784,))
    spies = _train_both(theirs, mine, x, y, lambda is_mine: {
        "optimizer": optimizer(ours if is_mine else real),
        "loss": "sparse_categorical_crossentropy"}, batch_size=32, epochs=2)
    np.testing.assert_allclose(spies[1].losses, spies[0].losses, rtol=1e-4, atol=1e-5)
    for a, b in zip(mine.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, np.asarray(b), atol=5e-5)
    assert mine.optimizer.learning_rate == pytest.approx(
        float(np.asarray(theirs.optimizer.learning_rate)))


def test_from_logits_with_a_linear_output_as_keras():
    def logits_mlp(k):
        return k.Sequential([k.Input((784,)), k.layers.Dense(32, activation="relu"),
                             k.layers.Dense(10)])

    theirs, mine = _twins(logits_mlp)
    x, y = _data((784,))
    spies = _train_both(theirs, mine, x, y, lambda is_mine: {
        "optimizer": "adam", "metrics": ["accuracy"],
        "loss": (ours if is_mine else real).losses.SparseCategoricalCrossentropy(
            from_logits=True)}, batch_size=32, epochs=2)
    np.testing.assert_allclose(spies[1].losses, spies[0].losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(spies[1].history["accuracy"], spies[0].history["accuracy"])


def test_class_weight_and_sample_weight_as_keras():
    theirs, mine = _twins(_mlp)
    x, y = _data((784,))
    class_weight = {0: 3.0, 1: 0.5, 7: 2.0}
    spies = _train_both(theirs, mine, x, y, lambda _: {
        "optimizer": "sgd", "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"]}, batch_size=32, epochs=2, class_weight=class_weight)
    np.testing.assert_allclose(spies[1].losses, spies[0].losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(spies[1].history["accuracy"], spies[0].history["accuracy"],
                               atol=1e-6)

    theirs, mine = _twins(_mlp)
    weights = np.random.default_rng(5).random(len(x)).astype(np.float32)
    spies = _train_both(theirs, mine, x, y, lambda _: {
        "optimizer": "adam", "loss": "sparse_categorical_crossentropy"}, batch_size=32,
        epochs=1, sample_weight=weights)
    np.testing.assert_allclose(spies[1].losses, spies[0].losses, rtol=1e-4, atol=1e-5)
