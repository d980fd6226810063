"""Real Keras 3 (on torch) as the oracle for the losses, per-sample weights and optimizers:
same initial weights and data, the same numbers on both of our engines."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from mnistlab import Sequential  # noqa: E402
from mnistlab.engines.torch import to_torch  # noqa: E402
from mnistlab.nn import Dense, get_loss, get_optimizer  # noqa: E402
from mnistlab.nn import optimizers as ours  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(size=(24, 4)).astype("float32")
LABELS = RNG.integers(0, 3, size=24)
W0 = RNG.normal(scale=0.5, size=(4, 3)).astype("float32")
B0 = RNG.normal(scale=0.1, size=3).astype("float32")
WEIGHTS = np.linspace(0.0, 2.0, 24).astype("float32")

# (our optimizer, the same in Keras)
OPTIMIZERS = [
    (lambda: ours.SGD(learning_rate=0.1), lambda: keras.optimizers.SGD(learning_rate=0.1)),
    (lambda: ours.SGD(0.1, momentum=0.9),
     lambda: keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)),
    (lambda: ours.SGD(0.1, momentum=0.9, nesterov=True),
     lambda: keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True)),
    (lambda: ours.Adam(learning_rate=0.05), lambda: keras.optimizers.Adam(learning_rate=0.05)),
    (lambda: ours.Adam(0.05, amsgrad=True),
     lambda: keras.optimizers.Adam(learning_rate=0.05, amsgrad=True)),
    (lambda: ours.AdamW(learning_rate=0.05, weight_decay=0.1),
     lambda: keras.optimizers.AdamW(learning_rate=0.05, weight_decay=0.1)),
    (lambda: ours.RMSprop(learning_rate=0.01), lambda: keras.optimizers.RMSprop(0.01)),
    (lambda: ours.RMSprop(0.01, rho=0.8, momentum=0.5, centered=True),
     lambda: keras.optimizers.RMSprop(0.01, rho=0.8, momentum=0.5, centered=True)),
]
OPTIMIZER_IDS = ["sgd", "momentum", "nesterov", "adam", "amsgrad", "adamw", "rmsprop",
                 "rmsprop-centered-momentum"]


def keras_fit(optimizer, loss, y, activation=None, steps=5, batch_size=24, **fit):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation=activation)])
    model.set_weights([W0, B0])
    model.compile(optimizer, loss)
    history = model.fit(X, y, batch_size=batch_size, epochs=steps, shuffle=False, verbose=0,
                        **fit)
    kernel, bias = model.get_weights()
    return kernel, bias, history.history["loss"]


def our_fit(engine, optimizer, loss, y, activation=None, steps=5, batch_size=24, **fit):
    model = Sequential([Dense(3, activation, input_shape=(4,))], seed=0)
    model.set_weights({"0.W": W0, "0.b": B0})
    if engine == "torch":
        model = to_torch(model)
    model.compile(optimizer, loss)
    history = model.fit(X, y, batch_size=batch_size, epochs=steps, shuffle=False, verbose=0,
                        **fit)
    weights = model.get_weights()
    return weights["0.W"], weights["0.b"], history.history["loss"]


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize(("make_ours", "make_keras"), OPTIMIZERS, ids=OPTIMIZER_IDS)
def test_five_steps_of_each_optimizer_give_keras_weights(engine, make_ours, make_keras):
    loss = "sparse_categorical_crossentropy"
    kernel, bias, k_losses = keras_fit(make_keras(), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), LABELS)
    W, b, losses = our_fit(engine, make_ours(), get_loss({"name": loss, "from_logits": True}),
                           LABELS)
    np.testing.assert_allclose(W, kernel, atol=1e-5)
    np.testing.assert_allclose(b, bias, atol=1e-5)
    np.testing.assert_allclose(losses, k_losses, rtol=1e-5)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_sample_weight_and_class_weight_train_as_keras(engine):
    for fit in ({"sample_weight": WEIGHTS}, {"class_weight": {0: 1.0, 1: 3.0, 2: 0.5}}):
        kernel, bias, k_losses = keras_fit(keras.optimizers.SGD(0.1),
                                           "sparse_categorical_crossentropy", LABELS, "softmax",
                                           steps=2, batch_size=8, **fit)
        W, b, losses = our_fit(engine, ours.SGD(0.1), "sparse_categorical_crossentropy", LABELS,
                               "softmax", steps=2, batch_size=8, **fit)
        np.testing.assert_allclose(W, kernel, atol=1e-5)
        np.testing.assert_allclose(b, bias, atol=1e-5)
        np.testing.assert_allclose(losses, k_losses, rtol=1e-5)


def test_keras_does_not_weight_the_accuracy_it_logs():
    """Keras 3 passes sample weights to the loss only: ``metrics=["accuracy"]`` stays the
    plain fraction right (only ``weighted_metrics`` would be weighted); so does ours."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.set_weights([W0, B0])
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    plain = np.mean(model.predict(X, verbose=0).argmax(1) == LABELS)
    history = model.fit(X, LABELS, epochs=1, sample_weight=WEIGHTS, verbose=0).history
    assert history["accuracy"][0] == pytest.approx(plain)
    mine = Sequential([Dense(3, "softmax", input_shape=(4,))], seed=0)
    mine.set_weights({"0.W": W0, "0.b": B0})
    mine.compile(ours.SGD(0.0), "sparse_categorical_crossentropy")
    assert mine.fit(X, LABELS, sample_weight=WEIGHTS, verbose=0).history["accuracy"][0] == \
        pytest.approx(plain)


# ---- each loss's value and gradient, with and without weights --------------------------------
def _keras_value_and_grad(loss, t, y, w):
    y_t = torch.tensor(y, requires_grad=True)
    value = loss(torch.tensor(t), y_t, sample_weight=None if w is None else torch.tensor(w))
    value.backward()
    return float(value), y_t.grad.numpy()


PROBS = np.abs(RNG.normal(size=(6, 3))).astype("float32") + 0.05
PROBS /= PROBS.sum(axis=1, keepdims=True)
LINEAR = RNG.normal(size=(6, 3)).astype("float32")  # a linear layer's outputs: not probabilities
SIGMOIDS = (1 / (1 + np.exp(-LINEAR))).astype("float32")
INDEX = RNG.integers(0, 3, size=6)
ONE_HOT = np.eye(3, dtype="float32")[INDEX]
BITS = RNG.integers(0, 2, size=(6, 3)).astype("float32")
W6 = np.array([0.0, 0.5, 1.0, 2.0, 1.5, 3.0], dtype="float32")

LOSS_CASES = [  # (our name, Keras loss, targets for Keras, targets for ours, outputs)
    ("categorical_crossentropy", keras.losses.CategoricalCrossentropy(), ONE_HOT, ONE_HOT, PROBS),
    ("categorical_crossentropy", keras.losses.CategoricalCrossentropy(), ONE_HOT, ONE_HOT,
     LINEAR),  # Keras normalizes by the row sum and clips to [eps, 1 - eps]
    ("sparse_categorical_crossentropy", keras.losses.SparseCategoricalCrossentropy(), INDEX,
     INDEX, PROBS),
    ("binary_crossentropy", keras.losses.BinaryCrossentropy(), BITS, BITS, SIGMOIDS),
    ("mse", keras.losses.MeanSquaredError(), ONE_HOT, ONE_HOT, LINEAR),
]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("name", "keras_loss", "kt", "t", "y"), LOSS_CASES)
def test_each_loss_and_its_gradient_match_keras(name, keras_loss, kt, t, y, weighted):
    w = W6 if weighted else None
    value, grad = _keras_value_and_grad(keras_loss, kt, y, w)
    loss = get_loss(name)
    assert loss.forward(y, t, w) == pytest.approx(value, rel=1e-5)
    np.testing.assert_allclose(loss.backward(), grad, atol=1e-5)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("name", "keras_loss", "kt", "t"), [
    ("categorical_crossentropy", keras.losses.CategoricalCrossentropy(from_logits=True),
     ONE_HOT, ONE_HOT),
    ("sparse_categorical_crossentropy",
     keras.losses.SparseCategoricalCrossentropy(from_logits=True), INDEX, INDEX),
    ("binary_crossentropy", keras.losses.BinaryCrossentropy(from_logits=True), BITS, BITS),
])
def test_from_logits_losses_match_keras_on_both_paths(name, keras_loss, kt, t, weighted):
    w = W6 if weighted else None
    value, grad = _keras_value_and_grad(keras_loss, kt, LINEAR, w)
    loss = get_loss({"name": name, "from_logits": True})
    assert loss.forward_logits(LINEAR, t, w) == pytest.approx(value, rel=1e-5)
    np.testing.assert_allclose(loss.backward_logits(), grad, atol=1e-6)
    assert loss.forward(LINEAR, t, w) == pytest.approx(value, rel=1e-5)  # outputs as logits
    np.testing.assert_allclose(loss.backward(), grad, atol=1e-6)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize(("loss", "activation", "y"), [
    ("categorical_crossentropy", None, ONE_HOT),  # Keras's clip on a linear output
    ("binary_crossentropy", "sigmoid", BITS),
    ("mse", None, ONE_HOT),
])
def test_engines_compute_keras_losses_and_gradients(engine, loss, activation, y):
    """The whole model's loss and weight gradients, with sample weights, against Keras."""
    x = X[:6]
    k = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation=activation)])
    k.set_weights([W0, B0])
    out = k(torch.tensor(x))
    value = keras.losses.get(loss)(torch.tensor(y), out)
    value = (value * torch.tensor(W6)).sum() / len(x)
    value.backward()
    k_grads = [v.value.grad.numpy() for v in k.trainable_variables]
    model = Sequential([Dense(3, activation, input_shape=(4,))], seed=0)
    model.set_weights({"0.W": W0, "0.b": B0})
    model = to_torch(model) if engine == "torch" else model
    model.compile("sgd", loss)
    if engine == "torch":
        xb, (tb, ab) = model.as_input(x), model.as_targets(y)
        v, surrogate, _ = model._scores(xb, tb, ab, model._weight_tensor(W6))
        surrogate.backward()
        grads = {n: p.grad.numpy().T if tr else p.grad.numpy()
                 for n, p, tr in model._param_table()}
        ours_value = float(v)
    else:
        ours_value, _ = model.forward_loss(model.prepare_input(x), y, True, sample_weight=W6)
        model.backward()
        grads = model.named_grads()
    assert ours_value == pytest.approx(float(value), rel=1e-5)
    np.testing.assert_allclose(grads["0.W"], k_grads[0], atol=1e-5)
    np.testing.assert_allclose(grads["0.b"], k_grads[1], atol=1e-5)


def test_optimizer_names_are_keras_names_and_configs_rebuild_them():
    for name in ("sgd", "SGD", "adam", "Adam", "adamw", "AdamW", "rmsprop", "RMSprop"):
        optimizer = get_optimizer(name)
        assert optimizer.name == name.lower()
        config = optimizer.get_config()
        rebuilt = type(get_optimizer(config.pop("name")))(**config)
        assert rebuilt.get_config() == optimizer.get_config()


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_learning_rate_is_readable_and_settable_with_lr_as_its_alias(engine):
    model = Sequential([Dense(3, input_shape=(4,))], seed=0)
    model = to_torch(model) if engine == "torch" else model
    model.compile(ours.Adam(learning_rate=0.01), "mse")
    assert model.optimizer.learning_rate == model.optimizer.lr == 0.01
    model.optimizer.learning_rate = 0.5
    assert model.optimizer.lr == 0.5
    assert ours.SGD(lr=0.3).learning_rate == 0.3


@pytest.mark.parametrize("make", [lambda: ours.RMSprop(0.01, momentum=0.5, centered=True),
                                  lambda: ours.AdamW(0.05, amsgrad=True),
                                  lambda: ours.SGD(0.1, momentum=0.9, nesterov=True)],
                         ids=["rmsprop", "adamw-amsgrad", "nesterov"])
def test_training_moves_between_engines_mid_run(make):
    """Two epochs on NumPy, then two on torch (state carried by get_state/set_state), give
    the weights of four on NumPy."""
    from mnistlab.engines.torch import to_numpy

    def model():
        m = Sequential([Dense(3, input_shape=(4,))], seed=0)
        m.set_weights({"0.W": W0, "0.b": B0})
        m.compile(make(), {"name": "sparse_categorical_crossentropy", "from_logits": True})
        return m

    straight, moved = model(), model()
    straight.fit(X, LABELS, batch_size=8, epochs=4, shuffle=False, verbose=0)
    moved.fit(X, LABELS, batch_size=8, epochs=2, shuffle=False, verbose=0)
    on_torch = to_torch(moved)
    assert on_torch.loss.from_logits
    on_torch.fit(X, LABELS, batch_size=8, epochs=2, shuffle=False, verbose=0)
    back = to_numpy(on_torch)
    assert back.optimizer.iterations == straight.optimizer.iterations == 12
    for name, w in straight.get_weights().items():
        np.testing.assert_allclose(back.get_weights()[name], w, atol=1e-5)
    state = back.optimizer.get_state()
    for key, value in straight.optimizer.get_state().items():
        np.testing.assert_allclose(state[key], value, rtol=1e-4, atol=1e-6)
