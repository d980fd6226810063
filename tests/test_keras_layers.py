"""Keras's other layers, activations and initializers (groundwork for Keras compatibility):
values against independent formulas on small hand-made inputs, gradients against central
differences (float64), the rules every layer keeps, config round trips, and the torch
engine computing the same as the NumPy one (forward, dL/dx, dL/dparams, moving statistics).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mnistlab import Sequential
from mnistlab.nn import (
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Flatten,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    LeakyReLU,
    ReLU,
    Rescaling,
    Reshape,
    Softmax,
    get_activation,
    gradcheck,
    layer_from_config,
)
from mnistlab.nn.initializers import INITIALIZERS, initialize

RNG = np.random.default_rng(0)
IMAGES = RNG.standard_normal((3, 2, 5, 5))
FLAT = RNG.standard_normal((4, 5))
LABELS3, LABELS4 = np.array([0, 2, 1]), np.array([2, 0, 1, 2])
NEW_ACTIVATIONS = ["elu", "selu", "leaky_relu", "softplus", "swish", "silu", "gelu", "exponential"]


def built(layer, input_shape, seed=0, dtype="float64"):
    layer.build(tuple(input_shape), np.random.default_rng(seed), np.dtype(dtype))
    return layer


# --- AveragePooling2D ------------------------------------------------------------------------


def reference_avgpool(x, dy, pool, stride, pads):
    """y and dx by a loop over every window, averaging only the real pixels it covers."""
    top, _, left, _ = pads
    h, w = x.shape[2:]
    y, dx = np.empty_like(dy), np.zeros_like(x)
    for i, ch, r, s in np.ndindex(*dy.shape):
        r0, s0 = r * stride[0] - top, s * stride[1] - left
        rows = slice(max(r0, 0), min(r0 + pool[0], h))
        cols = slice(max(s0, 0), min(s0 + pool[1], w))
        window = x[i, ch, rows, cols]
        y[i, ch, r, s] = window.mean()
        dx[i, ch, rows, cols] += dy[i, ch, r, s] / window.size
    return y, dx


def test_avgpool_averages_each_window() -> None:
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    layer = built(AveragePooling2D(2), (1, 4, 4))
    np.testing.assert_array_equal(layer.forward(x)[0, 0], [[2.5, 4.5], [10.5, 12.5]])


def test_avgpool_same_padding_counts_only_real_pixels_like_keras() -> None:
    x = np.arange(9.0).reshape(1, 1, 3, 3)  # 2x2 pool, stride 2: pads 0 above, 1 below
    layer = built(AveragePooling2D(2, padding="same"), (1, 3, 3))
    # windows [[0 1][3 4]], [[2][5]], [[6 7]], [[8]]
    np.testing.assert_array_equal(layer.forward(x)[0, 0], [[2.0, 3.5], [6.5, 8.0]])


@pytest.mark.parametrize(
    ("pool", "strides", "padding", "hw"),
    [
        (2, None, "valid", (6, 6)),
        (2, None, "same", (7, 5)),
        (3, 1, "same", (5, 6)),
        ((2, 3), (1, 2), "same", (5, 7)),
        (3, 2, "valid", (7, 7)),
        (2, 1, "same", (4, 4)),
    ],
)
def test_avgpool_matches_a_loop_over_windows(pool, strides, padding, hw) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, *hw))
    layer = built(AveragePooling2D(pool, strides=strides, padding=padding), (3, *hw))
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    expected_y, expected_dx = reference_avgpool(x, dy, layer.pool_size, layer.strides, layer.pads)
    np.testing.assert_allclose(y, expected_y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.backward(dy), expected_dx, rtol=1e-12, atol=1e-14)


# --- global pooling, Reshape ------------------------------------------------------------------


def test_global_pooling_reduces_each_channel_image() -> None:
    x = np.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5) % 7
    avg, top = built(GlobalAveragePooling2D(), (3, 4, 5)), built(GlobalMaxPooling2D(), (3, 4, 5))
    np.testing.assert_allclose(avg.forward(x), x.mean(axis=(2, 3)))
    np.testing.assert_array_equal(top.forward(x), x.max(axis=(2, 3)))
    assert avg.output_shape == top.output_shape == (3,)
    dy = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(
        avg.backward(dy), np.broadcast_to(dy[:, :, None, None] / 20, x.shape)
    )


def test_global_max_sends_the_gradient_to_the_first_maximum_only() -> None:
    x = np.array([[[[1.0, 3.0], [3.0, 0.0]]]])  # a tie: the first 3 (row-major) wins
    layer = built(GlobalMaxPooling2D(), (1, 2, 2))
    np.testing.assert_array_equal(layer.forward(x), [[3.0]])
    np.testing.assert_array_equal(layer.backward(np.array([[5.0]]))[0, 0], [[0, 5], [0, 0]])


def test_reshape_follows_the_logical_order_and_resolves_minus_one() -> None:
    x = np.arange(2 * 12.0).reshape(2, 12)
    layer = built(Reshape((3, -1, 2)), (12,))
    assert layer.output_shape == (3, 2, 2)
    np.testing.assert_array_equal(layer.forward(x), x.reshape(2, 3, 2, 2))
    np.testing.assert_array_equal(layer.backward(np.ones((2, 3, 2, 2))), np.ones((2, 12)))
    with pytest.raises(ValueError, match="cannot reshape"):
        built(Reshape((5, -1)), (12,))
    for bad in [(-1, -1), (0, 3), (2.5,), ()]:
        with pytest.raises(ValueError, match="target_shape"):
            Reshape(bad)


# --- BatchNormalization -----------------------------------------------------------------------


def test_batchnorm_training_normalizes_by_batch_statistics_and_moves_the_averages() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 2, 3, 3)) * 3 + 1
    layer = built(BatchNormalization(momentum=0.9, epsilon=1e-3), (2, 3, 3))
    assert set(layer.params) == {"gamma", "beta"}
    assert set(layer.state) == {"moving_mean", "moving_variance"}
    layer.params["gamma"][...], layer.params["beta"][...] = [2.0, 0.5], [-1.0, 3.0]
    y = layer.forward(x, training=True)
    for c in range(2):
        xc = x[:, c]
        expected = (xc - xc.mean()) / np.sqrt(xc.var() + 1e-3)  # biased variance
        expected = expected * layer.params["gamma"][c] + layer.params["beta"][c]
        np.testing.assert_allclose(y[:, c], expected, rtol=1e-12, atol=1e-12)
        # Keras 3: moving = moving * momentum + batch * (1 - momentum), biased var in both
        np.testing.assert_allclose(layer.state["moving_mean"][c], 0.1 * xc.mean())
        np.testing.assert_allclose(layer.state["moving_variance"][c], 0.9 + 0.1 * xc.var())


def test_batchnorm_inference_uses_the_moving_averages_and_leaves_them_alone() -> None:
    x = np.array([[1.0, -2.0, 4.0], [3.0, 0.0, 0.0]])  # flat inputs: the features axis
    layer = built(BatchNormalization(epsilon=0.5), (3,))
    layer.state["moving_mean"][...] = [1.0, 2.0, 3.0]
    layer.state["moving_variance"][...] = [3.5, 1.5, 0.5]
    layer.params["gamma"][...] = [1.0, 2.0, 3.0]
    y = layer.forward(x, training=False)
    expected = (x - [1.0, 2.0, 3.0]) / np.sqrt([4.0, 2.0, 1.0]) * [1.0, 2.0, 3.0]
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_array_equal(layer.state["moving_mean"], [1.0, 2.0, 3.0])
    dx = layer.backward(np.ones_like(y))
    np.testing.assert_allclose(dx, np.broadcast_to([1 / 2, 2 / np.sqrt(2), 3.0], x.shape))


def test_batchnorm_without_center_and_scale_has_no_parameters() -> None:
    layer = built(BatchNormalization(center=False, scale=False), (2, 3, 3))
    assert layer.params == {} and set(layer.state) == {"moving_mean", "moving_variance"}
    y = layer.forward(IMAGES[:, :, :3, :3], training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)


def test_a_model_trains_batchnorm_weights_but_not_its_moving_statistics() -> None:
    model = Sequential(
        [Dense(6), BatchNormalization(momentum=0.5), Dense(3, "softmax")], seed=0, input_shape=(5,)
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.build()
    bn = model.layers[1]
    h = FLAT.astype("float32") @ model.layers[0].params["W"] + model.layers[0].params["b"]
    before = {k: v.copy() for k, v in bn.params.items()}
    model.train_step(FLAT.astype("float32"), LABELS4)
    assert set(model.named_params()) == {"0.W", "0.b", "1.gamma", "1.beta", "2.W", "2.b"}
    assert {"1.moving_mean", "1.moving_variance"} <= set(model.get_weights())  # saved too
    assert not np.array_equal(bn.params["gamma"], before["gamma"])
    np.testing.assert_allclose(bn.state["moving_mean"], 0.5 * h.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.state["moving_variance"], 0.5 + 0.5 * h.var(axis=0), rtol=1e-5)
    moving = bn.state["moving_mean"].copy()
    model.predict(FLAT.astype("float32"))  # inference: the averages stay
    np.testing.assert_array_equal(bn.state["moving_mean"], moving)


# --- ReLU, LeakyReLU, Softmax, Rescaling ------------------------------------------------------

X_LINE = np.array([[-2.0, -0.5, 0.25, 0.75, 1.0, 3.0, 7.0]])


def test_relu_layer_follows_the_keras_formula() -> None:
    layer = built(ReLU(max_value=6.0, negative_slope=0.1, threshold=0.5), (7,))
    # max_value if x >= max_value; x if threshold < x < max_value; slope * (x - threshold)
    expected = [[-0.25, -0.1, -0.025, 0.75, 1.0, 3.0, 6.0]]
    np.testing.assert_allclose(layer.forward(X_LINE), expected)
    np.testing.assert_allclose(
        layer.backward(np.ones_like(X_LINE)), [[0.1, 0.1, 0.1, 1.0, 1.0, 1.0, 0.0]]
    )
    np.testing.assert_array_equal(built(ReLU(), (7,)).forward(X_LINE), np.maximum(X_LINE, 0))
    with pytest.raises(ValueError, match="max_value"):
        ReLU(max_value=-1)


def test_leaky_relu_layer_defaults_to_keras_3s_slope_and_takes_keras_2s_alpha() -> None:
    layer = built(LeakyReLU(), (7,))
    assert layer.negative_slope == 0.3
    np.testing.assert_allclose(layer.forward(X_LINE), np.where(X_LINE > 0, X_LINE, 0.3 * X_LINE))
    np.testing.assert_allclose(layer.backward(np.ones_like(X_LINE)), np.where(X_LINE > 0, 1.0, 0.3))
    assert LeakyReLU(alpha=0.1).get_config() == {"type": "LeakyReLU", "negative_slope": 0.1}


def test_softmax_layer_normalizes_along_its_axis() -> None:
    layer = built(Softmax(axis=1), (2, 5, 5))
    y = layer.forward(IMAGES)
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
    e = np.exp(IMAGES)
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True))
    flat = built(Softmax(), (5,)).forward(np.array([[1000.0, 1000.0, -1000.0, 0.0, 0.0]]))
    np.testing.assert_allclose(flat, [[0.5, 0.5, 0.0, 0.0, 0.0]])  # no overflow
    with pytest.raises(ValueError, match="axis"):
        built(Softmax(axis=3), (5,))


def test_rescaling_is_scale_then_offset() -> None:
    x = np.array([[0.0, 127.5, 255.0]])
    layer = built(Rescaling(1 / 127.5, offset=-1.0), (3,))
    np.testing.assert_allclose(layer.forward(x), [[-1.0, 0.0, 1.0]])
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), np.full_like(x, 1 / 127.5))


# --- activations -------------------------------------------------------------------------------


def _reference(name, z):
    """Keras's formulas, one value at a time with math (no NumPy vector tricks)."""
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    f = {
        "elu": lambda v: v if v > 0 else math.exp(v) - 1,
        "selu": lambda v: scale * (v if v > 0 else alpha * (math.exp(v) - 1)),
        "leaky_relu": lambda v: v if v > 0 else 0.2 * v,
        "softplus": lambda v: math.log1p(math.exp(v)) if v < 30 else v,
        "swish": lambda v: v / (1 + math.exp(-v)),
        "silu": lambda v: v / (1 + math.exp(-v)),
        "gelu": lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))),
        "exponential": math.exp,
    }[name]
    return np.vectorize(f)(z)


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
def test_activation_values_follow_keras(name) -> None:
    z = np.array([[-40.0, -3.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 2.0, 10.0]])
    if name == "exponential":
        z = z[:, 1:]
    np.testing.assert_allclose(
        get_activation(name).forward(z), _reference(name, z), rtol=1e-13, atol=1e-300
    )


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
def test_activation_derivatives_match_central_differences(name) -> None:
    z = np.random.default_rng(1).standard_normal((6, 5)) * 2
    z[np.abs(z) < 1e-3] = 0.5  # no kinks under the step
    dy = np.random.default_rng(2).standard_normal(z.shape)
    act = get_activation(name)
    act.forward(z)
    eps = 1e-6
    numeric = get_activation(name).forward(z + eps) - get_activation(name).forward(z - eps)
    np.testing.assert_allclose(act.backward(dy), dy * numeric / (2 * eps), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
def test_new_activations_work_in_place_and_keep_float32(name) -> None:
    rng = np.random.default_rng(6)
    z = (rng.standard_normal((8, 5)) * 4).astype(np.float32)
    dy = rng.standard_normal((8, 5)).astype(np.float32)
    z_before = z.copy()
    reference = get_activation(name)
    expected_y = reference.forward(z)
    expected_dz = reference.backward(dy)
    np.testing.assert_array_equal(z, z_before)  # not mutated without out=
    assert expected_y.dtype == np.float32 and expected_dz.dtype == np.float32
    in_place = get_activation(name)
    y = in_place.forward(z, out=z)
    assert y is z
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(in_place.backward(dy), expected_dz)


# --- initializers ------------------------------------------------------------------------------

FAN_IN, FAN_OUT = 400, 300


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("glorot_uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
        ("he_uniform", math.sqrt(6 / FAN_IN)),
        ("lecun_uniform", math.sqrt(3 / FAN_IN)),
        ("random_uniform", 0.05),
    ],
)
def test_uniform_initializers_use_keras_limits(name, limit) -> None:
    w = initialize(name, (FAN_IN, FAN_OUT), FAN_IN, FAN_OUT, np.random.default_rng(0), "float64")
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.999 * limit
    assert abs(w.std() - limit / math.sqrt(3)) < 0.01 * limit


@pytest.mark.parametrize(
    ("name", "std"),
    [
        ("glorot_normal", math.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("he_normal", math.sqrt(2 / FAN_IN)),
        ("lecun_normal", math.sqrt(1 / FAN_IN)),
    ],
)
def test_truncated_normal_initializers_have_keras_std_and_cut_at_two_std(name, std) -> None:
    w = initialize(name, (FAN_IN, FAN_OUT), FAN_IN, FAN_OUT, np.random.default_rng(0), "float64")
    untruncated = std / 0.87962566103423978  # Keras's stddev before truncation
    assert np.abs(w).max() <= 2 * untruncated and np.abs(w).max() > 1.99 * untruncated
    assert abs(w.std() - std) < 0.01 * std
    assert abs(w.mean()) < 0.01 * std


def test_he_normal_draws_what_it_drew_before() -> None:
    w = initialize("he_normal", (50, 40), 50, 40, np.random.default_rng(5), "float64")
    rng = np.random.default_rng(5)
    draws = rng.standard_normal((50, 40))  # the original algorithm, written out
    while (outside := np.abs(draws) > 2).any():
        draws[outside] = rng.standard_normal(int(outside.sum()))
    np.testing.assert_array_equal(w, draws * (math.sqrt(2 / 50) / 0.87962566103423978))


def test_constant_and_default_random_initializers() -> None:
    rng = np.random.default_rng(0)
    assert np.all(initialize("ones", (3, 4), 3, 4, rng) == 1)
    assert np.all(initialize("zeros", (3, 4), 3, 4, rng) == 0)
    w = initialize("random_normal", (500, 400), 500, 400, rng, "float64")
    assert abs(w.std() - 0.05) < 0.001 and abs(w.mean()) < 0.001
    w = initialize("truncated_normal", (500, 400), 500, 400, rng, "float64")
    assert np.abs(w).max() <= 0.1
    assert {"xavier", "uniform", "normal", "zeros", "glorot_uniform"} <= set(INITIALIZERS)


def test_conv_kernels_use_receptive_field_times_channels_as_fans() -> None:
    layer = built(Conv2D(64, 3, kernel_initializer="he_uniform"), (32, 8, 8))
    limit = math.sqrt(6 / (32 * 3 * 3))
    assert limit * 0.99 < np.abs(layer.params["W"]).max() <= limit
    layer = built(Conv2D(64, 3, kernel_initializer="glorot_uniform"), (32, 8, 8))
    limit = math.sqrt(6 / (32 * 9 + 64 * 9))
    assert limit * 0.99 < np.abs(layer.params["W"]).max() <= limit


# --- gradients of whole models against central differences -----------------------------------

CASES = {
    "conv, batchnorm, relu, same average pool": (
        [
            Conv2D(3, 3, padding="same", activation="tanh"),
            BatchNormalization(momentum=0.8),
            ReLU(max_value=1.5, negative_slope=0.1, threshold=0.05),
            AveragePooling2D(2, padding="same"),
            Flatten(),
            Dense(3, "softmax"),
        ],
        IMAGES,
        LABELS3,
        "categorical_crossentropy",
        True,
    ),
    "batchnorm at inference": (
        [Dense(6, "tanh"), BatchNormalization(), Dense(3, "softmax")],
        FLAT,
        LABELS4,
        "categorical_crossentropy",
        False,
    ),
    "batchnorm first, without center or scale, on flat inputs": (
        [
            BatchNormalization(center=False, scale=False),
            Dense(6, "elu"),
            BatchNormalization(),
            Dense(3, "softmax"),
        ],
        FLAT,
        LABELS4,
        "categorical_crossentropy",
        True,
    ),
    "overlapping average pool, global average": (
        [
            Conv2D(3, 2, activation="selu"),
            AveragePooling2D(3, strides=1, padding="same"),
            GlobalAveragePooling2D(),
            Dense(3, "softmax"),
        ],
        IMAGES,
        LABELS3,
        "categorical_crossentropy",
        True,
    ),
    "global max, leaky relu, rescaling": (
        [
            Rescaling(0.5, offset=0.1),
            Conv2D(3, 3, activation="gelu"),
            GlobalMaxPooling2D(),
            LeakyReLU(),
            Dense(3, "softmax"),
        ],
        IMAGES,
        LABELS3,
        "categorical_crossentropy",
        True,
    ),
    "reshape both ways, softmax layer with mse": (
        [
            Dense(8, "swish"),
            Reshape((2, 2, 2)),
            Conv2D(2, 1, activation="softplus"),
            Reshape((-1,)),
            Dense(3),
            Softmax(),
        ],
        FLAT,
        LABELS4,
        "mse",
        True,
    ),
    "softmax over image channels": (
        [
            Conv2D(3, 1, activation="leaky_relu"),
            Softmax(axis=1),
            Flatten(),
            Dense(3, "exponential"),
            Dense(3, "softmax"),
        ],
        IMAGES,
        LABELS3,
        "categorical_crossentropy",
        True,
    ),
}


CASES["softmax layer last, cross-entropy on its outputs"] = (
    [Dense(6, "selu"), Dense(3), Softmax()], FLAT, LABELS4, "sparse_categorical_crossentropy",
    True)


@pytest.mark.parametrize("case", list(CASES))
def test_backprop_matches_central_differences(case) -> None:
    layers, x, y, loss, training = CASES[case]
    model = Sequential(layers, seed=1, dtype="float64", input_shape=x.shape[1:])
    model.compile("sgd", loss)
    report = gradcheck(model, x, y, training=training)
    assert report.max_rel_error < 1e-6, str(report)
    assert {p.name for p in report.params} == set(model.named_params())


# --- rules every layer keeps --------------------------------------------------------------------

LAYERS = [
    (lambda: AveragePooling2D(2), (2, 4, 4)),
    (lambda: AveragePooling2D(3, strides=2, padding="same"), (2, 5, 4)),
    (lambda: GlobalAveragePooling2D(), (2, 3, 3)),
    (lambda: GlobalMaxPooling2D(), (2, 3, 3)),
    (lambda: Reshape((3, -1)), (2, 3, 3)),
    (lambda: BatchNormalization(), (2, 3, 3)),
    (lambda: BatchNormalization(momentum=0.5, epsilon=1e-5, center=False), (6,)),
    (lambda: BatchNormalization(scale=False), (6,)),
    (lambda: ReLU(), (6,)),
    (lambda: ReLU(max_value=1.0, negative_slope=0.2, threshold=-0.5), (6,)),
    (lambda: LeakyReLU(), (6,)),
    (lambda: LeakyReLU(negative_slope=0.01), (2, 3, 3)),
    (lambda: Softmax(), (6,)),
    (lambda: Softmax(axis=-3), (2, 3, 3)),
    (lambda: Rescaling(1 / 255), (6,)),
    (lambda: Rescaling(2.0, offset=-1.0), (2, 3, 3)),
]


@pytest.mark.parametrize(("make", "shape"), LAYERS)
@pytest.mark.parametrize("training", [True, False])
def test_forward_and_backward_never_mutate_their_inputs(make, shape, training) -> None:
    layer = built(make(), shape)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, *shape))
    x_before = x.copy()
    y = layer.forward(x, training=training)
    assert y.shape == (3, *layer.output_shape)
    dy = rng.standard_normal(y.shape)
    dy_before = dy.copy()
    dx = layer.backward(dy)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)
    assert dx.shape == x.shape


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_every_layer_config_rebuilds_the_same_layer(make, shape) -> None:
    layer = make()
    config = layer.get_config()
    assert layer_from_config(config).get_config() == config
    assert json.loads(json.dumps(config)) == config  # JSON-safe


# --- the torch engine computes the same ----------------------------------------------------------


def _torch_matches(layer, shape, dtype, training, tol, seed=1):
    """The NumPy layer and its torch twin (``torch_layer``): same y, dL/dx, dL/dparams and,
    for BatchNormalization, the same moving statistics after the step."""
    torch = pytest.importorskip("torch")
    from mnistlab.engines.torch import torch_layer

    rng = np.random.default_rng(seed)
    layer = built(layer, shape, dtype=dtype)
    for name, p in layer.params.items():  # not the initial ones and zeros
        p[...] = rng.normal(1.0 if name == "gamma" else 0.0, 0.5, p.shape)
    module = torch_layer(layer, getattr(torch, dtype)).train(training)
    x = rng.normal(size=(4, *shape)).astype(dtype)
    y = layer.forward(x, training=training)
    dy = rng.normal(size=y.shape).astype(dtype)
    dx = layer.backward(dy)

    xt = torch.tensor(x, requires_grad=True)
    yt = module(xt)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(yt.detach().numpy(), y, rtol=tol, atol=tol)
    np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=tol, atol=tol)
    assert set(module.numpy_params()) == set(layer.params)
    for name, (param, transposed) in module.numpy_params().items():
        grad = param.grad.T if transposed else param.grad
        np.testing.assert_allclose(
            grad.numpy(), layer.grads[name], rtol=tol, atol=tol, err_msg=name
        )
    assert set(module.numpy_state()) == set(getattr(layer, "state", {}))
    for name, buffer in module.numpy_state().items():
        np.testing.assert_allclose(
            buffer.numpy(), layer.state[name], rtol=tol, atol=tol, err_msg=name
        )


TORCH_LAYERS = [
    *LAYERS,
    (lambda: AveragePooling2D((2, 3), strides=(1, 2), padding="same"), (2, 5, 7)),
    (lambda: BatchNormalization(momentum=0.9), (3, 4, 4)),
    (lambda: Dense(5, "gelu"), (4,)),
]


@pytest.mark.parametrize(("make", "shape"), TORCH_LAYERS)
@pytest.mark.parametrize("training", [True, False])
def test_torch_layer_matches_numpy_in_float64(make, shape, training) -> None:
    _torch_matches(make(), shape, "float64", training, tol=1e-10)


@pytest.mark.parametrize(("make", "shape"), TORCH_LAYERS)
def test_torch_layer_matches_numpy_in_float32(make, shape) -> None:
    _torch_matches(make(), shape, "float32", True, tol=1e-6)


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
def test_torch_activations_match_numpy(name) -> None:
    _torch_matches(Dense(5, name), (4,), "float64", True, tol=1e-10)
    _torch_matches(Dense(5, name), (4,), "float32", True, tol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_a_torch_model_of_the_new_layers_matches_the_numpy_model(training) -> None:
    pytest.importorskip("torch")
    from mnistlab.engines.torch import to_torch

    layers = [Rescaling(2.0, offset=-0.5), Conv2D(3, 3, padding="same", activation="gelu"),
              BatchNormalization(momentum=0.9), LeakyReLU(),
              AveragePooling2D(2, padding="same"), Reshape((-1,)), Dense(4, "swish"),
              Reshape((1, 2, 2)), GlobalMaxPooling2D(), ReLU(max_value=2.0), Dense(3, "softmax")]
    model = Sequential(layers, seed=3, dtype="float64", input_shape=IMAGES.shape[1:])
    model.compile("sgd", "sparse_categorical_crossentropy")
    twin = to_torch(model)
    loss, grads = model.loss_and_grads(IMAGES, LABELS3, training=training)
    twin_loss, twin_grads = twin.loss_and_grads(IMAGES, LABELS3, training=training)
    assert twin_loss == pytest.approx(loss, rel=1e-10)
    assert set(twin_grads) == set(grads)
    for name, grad in grads.items():
        np.testing.assert_allclose(twin_grads[name], grad, rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(twin.predict(IMAGES), model.predict(IMAGES), rtol=1e-10)
