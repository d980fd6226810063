"""Numerical gradients: the fast path computes the naive loop's central differences, both agree
with backprop, and the course's per-sample training updates parameter groups in order."""

from __future__ import annotations

import numpy as np
import pytest

from mnistlab.engines.numpy import Sequential
from mnistlab.errors import TrainingDivergedError
from mnistlab.experiments.course import course_inputs, course_targets
from mnistlab.nn.layers import Conv2D, Dense, Dropout, Flatten
from mnistlab.nn.numgrad import (
    COURSE_LOSS,
    numerical_gradients,
    numerical_gradients_fast,
    numerical_gradients_naive,
    param_groups,
    train_numerical,
)

RTOL = 1e-6


def assert_grads_close(got: dict, want: dict, rtol: float = RTOL) -> None:
    """Every parameter agrees to ``rtol`` relative; the absolute floor (1e-9 of the largest
    gradient of that array) only admits the rounding noise of differences that are ~0."""
    assert got.keys() == want.keys()
    for name in want:
        floor = 1e-9 * max(float(np.max(np.abs(want[name]))), 1e-12)
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=floor, err_msg=name)


def mlp(
    sizes: tuple[int, ...],
    activations: tuple[str, ...],
    seed: int = 0,
    dtype: str = "float64",
    dropout: bool = False,
) -> Sequential:
    layers = []
    for units, act in zip(sizes[1:], activations, strict=True):
        layers.append(
            Dense(units, activation=act, kernel_initializer="xavier", bias_initializer="normal")
        )
        if dropout and len(layers) == 1:
            layers.append(Dropout(0.5))
    model = Sequential(layers, seed=seed, dtype=dtype, input_shape=(sizes[0],))
    model.build()
    return model


@pytest.fixture(scope="module")
def course_data(mnist):
    """The first training images in the course's form: [0.01, 1] inputs, 0.01/0.99 targets."""
    (x, t), _ = mnist
    return course_inputs(x[:8]), course_targets(t[:8]), t[:8].astype(np.int64)


@pytest.fixture(scope="module")
def small_images(mnist):
    """Real digits at 14x14 (every other pixel), textbook scaling [0, 1] (many exact zeros)."""
    (x, t), _ = mnist
    return (x[:6, ::2, ::2].reshape(6, -1) / 255.0), t[:6].astype(np.int64)


# ---- fast == naive ----------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [slice(0, 1), slice(1, 2), slice(2, 5)], ids=["s0", "s1", "b3"])
def test_fast_matches_naive_on_the_course_net(course_data, rows: slice) -> None:
    x, t, _ = course_data
    model = mlp((784, 8, 10), ("sigmoid", "sigmoid"))
    naive = numerical_gradients_naive(model, x[rows], t[rows], COURSE_LOSS)
    fast = numerical_gradients_fast(model, x[rows], t[rows], COURSE_LOSS)
    assert_grads_close(fast, naive)


def test_fast_matches_naive_at_the_real_size(course_data) -> None:
    """784-30-10, one sample: the naive loop takes about a second here."""
    x, t, _ = course_data
    model = mlp((784, 30, 10), ("sigmoid", "sigmoid"), seed=3)
    naive = numerical_gradients_naive(model, x[3:4], t[3:4], COURSE_LOSS)
    fast = numerical_gradients_fast(model, x[3:4], t[3:4], COURSE_LOSS)
    assert_grads_close(fast, naive)


@pytest.mark.parametrize(
    "acts, loss, labels",
    [
        (("relu", "softmax"), "categorical_crossentropy", "int"),  # fused: loss from logits
        (("relu", "softmax"), "categorical_crossentropy", "onehot"),
        (("tanh", "linear"), "mse", "onehot"),
        (("sigmoid", "softmax"), "mse", "onehot"),  # softmax not fused: full perturbed rows
        (("linear", "sigmoid"), COURSE_LOSS, "onehot"),
    ],
)
@pytest.mark.parametrize("batch", [1, 3])
def test_fast_matches_naive_across_activations_and_losses(
    small_images, acts: tuple[str, str], loss: str, labels: str, batch: int
) -> None:
    x, t = small_images
    targets = t[:batch] if labels == "int" else np.eye(10)[t[:batch]]
    model = mlp((196, 6, 10), acts, seed=1)
    naive = numerical_gradients_naive(model, x[:batch], targets, loss)
    fast = numerical_gradients_fast(model, x[:batch], targets, loss)
    assert_grads_close(fast, naive)


def test_zero_inputs_give_exact_zeros(small_images) -> None:
    """Textbook-scaled digits are mostly 0: those rows of dL/dW are exactly 0 in both paths."""
    x, t = small_images
    model = mlp((196, 6, 10), ("sigmoid", "sigmoid"), seed=2)
    naive = numerical_gradients_naive(model, x[:1], np.eye(10)[t[:1]], COURSE_LOSS)
    fast = numerical_gradients_fast(model, x[:1], np.eye(10)[t[:1]], COURSE_LOSS)
    zero_rows = x[0] == 0
    assert zero_rows.sum() > 100
    assert np.all(naive["0.W"][zero_rows] == 0) and np.all(fast["0.W"][zero_rows] == 0)
    assert_grads_close(fast, naive)


def test_three_layers_with_dropout_and_small_chunks(small_images) -> None:
    """Rank-one updates reach across Dropout (identity at inference); chunking changes nothing."""
    x, t = small_images
    model = mlp((196, 7, 5, 10), ("sigmoid", "tanh", "softmax"), seed=4, dropout=True)
    onehot = np.eye(10)[t[:2]]
    naive = numerical_gradients_naive(model, x[:2], onehot, "categorical_crossentropy")
    fast = numerical_gradients_fast(
        model, x[:2], onehot, "categorical_crossentropy", chunk_bytes=512
    )
    assert_grads_close(fast, naive)


def test_conv_layers_fall_back_to_the_naive_loop(small_images) -> None:
    x, t = small_images
    images = x[:2].reshape(2, 1, 14, 14)[:, :, 3:11, 3:11]  # (2, 1, 8, 8)
    # tanh, not relu: all-zero windows put z exactly on the relu kink (central difference 0.5)
    model = Sequential(
        [Conv2D(2, 3, activation="tanh"), Flatten(), Dense(10, activation="softmax")],
        seed=0,
        dtype="float64",
        input_shape=(1, 8, 8),
    )
    model.build()
    model.compile("sgd", "categorical_crossentropy")
    naive = numerical_gradients_naive(model, images, t[:2])  # the compiled loss
    fast = numerical_gradients_fast(model, images, t[:2])
    assert_grads_close(fast, naive)
    _, backprop = model.loss_and_grads(images, t[:2], training=False)
    assert_grads_close(fast, backprop)


# ---- numerical == backprop ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fast", "naive"])
def test_course_net_agrees_with_backprop(course_data, method: str) -> None:
    x, t, _ = course_data
    model = mlp((784, 8, 10), ("sigmoid", "sigmoid"), seed=5)
    model.compile("sgd", COURSE_LOSS)
    _, backprop = model.loss_and_grads(x[:2], t[:2], training=False)
    numerical = numerical_gradients(model, x[:2], t[:2], method=method)
    assert_grads_close(numerical, backprop)


@pytest.mark.parametrize(
    "acts, loss", [(("relu", "softmax"), "categorical_crossentropy"), (("tanh", "linear"), "mse")]
)
def test_other_losses_agree_with_backprop(course_data, acts: tuple[str, str], loss: str) -> None:
    x, _, labels = course_data
    model = mlp((784, 8, 10), acts, seed=6)
    model.compile("sgd", loss)
    _, backprop = model.loss_and_grads(x[:3], labels[:3], training=False)
    assert_grads_close(numerical_gradients_fast(model, x[:3], labels[:3]), backprop)


# ---- training --------------------------------------------------------------------------------


def _step_by_hand(
    model: Sequential, x: np.ndarray, t: np.ndarray, lr: float, sequential: bool
) -> None:
    """One sample of the course's loop written out: each group's gradient, then its update."""
    if not sequential:
        grads = numerical_gradients_naive(model, x, t, COURSE_LOSS)
    for i, name in param_groups(model):
        if sequential:
            grads = numerical_gradients_naive(model, x, t, COURSE_LOSS)
        model.layers[i].params[name] -= lr * grads[f"{i}.{name}"]


def test_sequential_updates_follow_the_course_order(small_images) -> None:
    """W0 is updated, then b0's gradient is taken with the new W0, ...; the order matters."""
    x = course_inputs(small_images[0][:2] * 255)
    t = course_targets(small_images[1][:2])
    lr = 3.0  # large, so that the order visibly changes the result
    start = mlp((196, 5, 10), ("sigmoid", "sigmoid"), seed=7).get_weights()

    results = {}
    for method in ("fast", "naive"):
        for sequential in (True, False):
            model = mlp((196, 5, 10), ("sigmoid", "sigmoid"), seed=7)
            train_numerical(
                model,
                x,
                t,
                lr,
                COURSE_LOSS,
                method=method,
                sequential_updates=sequential,
                log_every=1,
            )
            results[method, sequential] = model.get_weights()
    for sequential in (True, False):
        by_hand = mlp((196, 5, 10), ("sigmoid", "sigmoid"), seed=7)
        for n in range(2):
            _step_by_hand(by_hand, x[n : n + 1], t[n : n + 1], lr, sequential)
        assert_grads_close(results["naive", sequential], by_hand.get_weights(), rtol=1e-9)
        assert_grads_close(results["fast", sequential], by_hand.get_weights(), rtol=1e-6)
    # One sample: the first group gets the same update either way; later groups see the
    # earlier groups' new values only when sequential.
    one = {}
    for sequential in (True, False):
        model = mlp((196, 5, 10), ("sigmoid", "sigmoid"), seed=7)
        train_numerical(model, x[:1], t[:1], lr, COURSE_LOSS, sequential_updates=sequential)
        one[sequential] = model.get_weights()
    seq, sim = one[True], one[False]
    np.testing.assert_array_equal(seq["0.W"], sim["0.W"])
    for name in ("0.b", "1.W", "1.b"):
        moved = np.abs(seq[name] - start[name]).max()
        assert np.abs(seq[name] - sim[name]).max() > 1e-3 * moved, name


def test_training_logs_every_n_samples_and_learns(course_data, mnist) -> None:
    (x_all, t_all), _ = mnist
    x, t = course_inputs(x_all[:400]), course_targets(t_all[:400])
    model = mlp((784, 30, 10), ("sigmoid", "sigmoid"), seed=0)
    records = []
    history = train_numerical(model, x, t, lr=0.1, log_every=100, callback=records.append)
    assert history.steps == [100, 200, 300, 400]
    assert [r["step"] for r in records] == history.steps
    assert set(records[0]) == {"epoch", "step", "loss", "seconds"}
    assert len(history.epoch_loss) == 1
    assert history.loss[-1] < history.loss[0]
    assert set(history.as_dict()) == {"steps", "epochs", "loss", "seconds", "epoch_loss"}


def test_divergence_and_bad_arguments(course_data) -> None:
    x, t, _ = course_data
    model = mlp((784, 4, 10), ("sigmoid", "sigmoid"))
    bad = x[:2].copy()
    bad[1, 0] = np.nan
    with pytest.raises(TrainingDivergedError, match="epoch 1, sample 2"):
        train_numerical(model, bad, t[:2], 0.01)
    with pytest.raises(ValueError, match="method"):
        train_numerical(model, x[:1], t[:1], 0.01, method="backprop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pass a loss"):
        numerical_gradients_fast(model, x[:1], t[:1])


def test_course_form_of_the_data() -> None:
    pixels = np.array([[0, 255, 128]], dtype=np.uint8)
    np.testing.assert_allclose(course_inputs(pixels), [[0.01, 1.0, 128 / 255 * 0.99 + 0.01]])
    t = course_targets(np.array([2, 0]), classes=3)
    np.testing.assert_array_equal(t, [[0.01, 0.01, 0.99], [0.99, 0.01, 0.01]])


def test_bench_numgrad_command_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    """`mnistlab bench numgrad` with a tiny net and few samples (the epoch run cut to 50)."""
    import argparse

    from mnistlab.cli.bench import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    argv = ["bench", "numgrad", "--hidden", "3", "--naive-samples", "1", "--fast-samples", "5"]
    args = parser.parse_args([*argv, "--epoch", "--train-limit", "50"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "naive" in out and "fast" in out and "test accuracy" in out
    gap = float(out.split("max relative difference")[1].split()[0])
    assert gap < 1e-6
