"""Layers of the NumPy engine: shapes, values against independent references, and the rules
every layer keeps (backward never mutates its input, forward never mutates its input)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnistlab.nn import (
    Activation,
    Conv2D,
    Cropping2D,
    Dense,
    Dropout,
    Flatten,
    MaxPooling2D,
    get_activation,
    layer_from_config,
    sigmoid,
    softmax,
)
from mnistlab.nn.layers import output_size


def built(layer, input_shape, seed=0, dtype="float64"):
    layer.build(tuple(input_shape), np.random.default_rng(seed), np.dtype(dtype))
    return layer


def naive_conv(x, w, b, stride, pads):
    """Direct six-loop cross-correlation: the reference Conv2D must agree with."""
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, _, h, wd = xp.shape
    f, _, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, f, oh, ow))
    for i in range(n):
        for o in range(f):
            for r in range(oh):
                for s in range(ow):
                    patch = xp[i, :, r * stride : r * stride + kh, s * stride : s * stride + kw]
                    out[i, o, r, s] = np.sum(patch * w[o]) + b[o]
    return out


# --- Dense ---------------------------------------------------------------------------------


def test_dense_computes_activation_of_x_W_plus_b() -> None:
    layer = built(Dense(3, activation="tanh"), (4,))
    x = np.random.default_rng(1).standard_normal((5, 4))
    expected = np.tanh(x @ layer.params["W"] + layer.params["b"])
    np.testing.assert_allclose(layer.forward(x), expected)
    assert layer.params["W"].shape == (4, 3) and layer.params["b"].shape == (3,)


@pytest.mark.parametrize("use_kernels", [True, False])
def test_dense_backward_gives_textbook_gradients(use_kernels) -> None:
    layer = built(Dense(3), (4,))
    layer.use_kernels = use_kernels  # a small W: dx by kernels.small_matmul_t, or plainly
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    layer.forward(x)
    dx = layer.backward(dy)
    np.testing.assert_allclose(layer.grads["W"], x.T @ dy)
    np.testing.assert_allclose(layer.grads["b"], dy.sum(axis=0))
    np.testing.assert_allclose(dx, dy @ layer.params["W"].T)


def test_dense_needs_flat_input() -> None:
    with pytest.raises(ValueError, match="Flatten"):
        built(Dense(3), (1, 28, 28))


def test_dense_biases_start_at_zero_and_kernel_is_glorot_uniform_by_default() -> None:
    layer = built(Dense(1000), (784,))
    limit = np.sqrt(6 / (784 + 1000))
    assert np.all(layer.params["b"] == 0)
    assert np.abs(layer.params["W"]).max() <= limit
    assert np.abs(layer.params["W"]).max() > 0.9 * limit


# --- Conv2D --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "hw", "expected_hw"),
    [
        (5, 1, "same", 28, 28),
        (2, 1, "same", 14, 14),
        (3, 1, "valid", 28, 26),
        (3, 2, "valid", 7, 3),
        (3, 2, "same", 7, 4),
        (2, 2, "same", 7, 4),
    ],
)
def test_conv2d_output_shape_follows_keras(kernel, stride, padding, hw, expected_hw) -> None:
    layer = built(Conv2D(4, kernel, strides=stride, padding=padding), (2, hw, hw))
    assert layer.output_shape == (4, expected_hw, expected_hw)
    y = layer.forward(np.zeros((3, 2, hw, hw)))
    assert y.shape == (3, 4, expected_hw, expected_hw)


def test_same_padding_puts_the_odd_pixel_bottom_right_like_tensorflow() -> None:
    assert output_size(14, 2, 1, "same") == (14, 0, 1)  # 2x2 kernel: nothing above, 1 below
    assert output_size(28, 5, 1, "same") == (28, 2, 2)
    assert output_size(7, 2, 2, "same") == (4, 0, 1)
    assert output_size(8, 3, 2, "same") == (4, 0, 1)
    # A 2x2 all-ones kernel on a 2x2 image: the bottom-right output sees only x[1, 1].
    layer = built(Conv2D(1, 2, padding="same"), (1, 2, 2))
    layer.params["W"][...] = 1.0
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_array_equal(layer.forward(x)[0, 0], [[10.0, 6.0], [7.0, 4.0]])


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"),
    [(3, 1, "valid"), (3, 1, "same"), (2, 1, "same"), (3, 2, "same"), ((2, 3), (2, 1), "valid")],
)
def test_conv2d_matches_a_direct_loop_convolution(kernel, stride, padding) -> None:
    layer = built(Conv2D(3, kernel, strides=stride, padding=padding), (2, 7, 7))
    x = np.random.default_rng(3).standard_normal((2, 2, 7, 7))
    layer.params["b"][...] = [0.5, -1.0, 2.0]
    w, b = layer.params["W"], layer.params["b"]
    if isinstance(stride, tuple):  # the loop reference takes one stride; check this case by rows
        y = layer.forward(x)
        ref = naive_conv(x, w, b, 1, layer.pads)[:, :, ::2, :]
        np.testing.assert_allclose(y, ref, atol=1e-12)
        return
    np.testing.assert_allclose(layer.forward(x), naive_conv(x, w, b, stride, layer.pads),
                               atol=1e-12)


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(5, 1, "same"), (2, 1, "same"),
                                                           (3, 2, "valid"), (3, 2, "same")])
def test_conv2d_forward_and_gradients_match_pytorch(kernel, stride, padding) -> None:
    torch = pytest.importorskip("torch")
    layer = built(Conv2D(4, kernel, strides=stride, padding=padding), (3, 9, 9))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 9))
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)

    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.params["W"], requires_grad=True)
    bt = torch.tensor(layer.params["b"], requires_grad=True)
    top, bottom, left, right = layer.pads
    padded = torch.nn.functional.pad(xt, (left, right, top, bottom))
    yt = torch.nn.functional.conv2d(padded, wt, bt, stride=stride)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(layer.grads["W"], wt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(layer.grads["b"], bt.grad.numpy(), atol=1e-10)


def test_conv2d_weight_layout_is_out_in_kh_kw() -> None:
    layer = built(Conv2D(32, 5), (1, 28, 28))
    assert layer.params["W"].shape == (32, 1, 5, 5)
    assert layer.params["b"].shape == (32,)


# --- MaxPooling2D --------------------------------------------------------------------------


def test_maxpool_takes_the_max_of_each_window() -> None:
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    layer = built(MaxPooling2D(2), (1, 4, 4))
    np.testing.assert_array_equal(layer.forward(x)[0, 0], [[5, 7], [13, 15]])


@pytest.mark.parametrize("use_kernels", [True, False])
def test_maxpool_backward_routes_gradient_to_the_first_maximum_only(use_kernels) -> None:
    x = np.array([[[[1.0, 3.0], [3.0, 0.0]]]])  # a tie between two 3s
    layer = built(MaxPooling2D(2), (1, 2, 2))
    layer.use_kernels = use_kernels  # the tiled kernel, or the plain running max
    layer.forward(x)
    np.testing.assert_array_equal(layer.backward(np.array([[[[5.0]]]]))[0, 0],
                                  [[0.0, 5.0], [0.0, 0.0]])


def reference_maxpool(x: np.ndarray, dy: np.ndarray, pool: tuple[int, int],
                      stride: tuple[int, int], pads: tuple[int, int, int, int],
                      ) -> tuple[np.ndarray, np.ndarray]:
    """y and dx by a loop over every window, dy going to np.argmax's (first) maximum."""
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    dxp = np.zeros_like(xp)
    y = np.empty_like(dy)
    for n, c, r, s in np.ndindex(*dy.shape):
        window = xp[n, c, r * stride[0] : r * stride[0] + pool[0],
                    s * stride[1] : s * stride[1] + pool[1]]
        i, j = np.unravel_index(np.argmax(window), window.shape)
        y[n, c, r, s] = window[i, j]
        dxp[n, c, r * stride[0] + i, s * stride[1] + j] += dy[n, c, r, s]
    return y, dxp[:, :, top : top + x.shape[2], left : left + x.shape[3]]


@pytest.mark.parametrize(("pool", "strides", "padding", "hw"), [
    (2, None, "valid", (6, 6)), (2, None, "valid", (7, 5)), (2, None, "same", (7, 5)),
    (3, None, "valid", (7, 8)), ((2, 3), None, "same", (5, 7)), ((1, 2), None, "valid", (4, 4)),
    (3, 2, "valid", (7, 7)), (2, 1, "same", (5, 6)),
])
@pytest.mark.parametrize("use_kernels", [True, False])  # tiling pools: both paths
def test_maxpool_matches_a_loop_over_windows_ties_included(pool, strides, padding, hw,
                                                           use_kernels) -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, (2, 3, *hw)).astype(np.float64)  # few values: many ties
    layer = built(MaxPooling2D(pool, strides=strides, padding=padding), (3, *hw))
    layer.use_kernels = use_kernels
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    expected_y, expected_dx = reference_maxpool(x, dy, layer.pool_size, layer.strides,
                                                layer.pads)
    np.testing.assert_array_equal(y, expected_y)
    # overlapping windows add several dy into one pixel, maybe in another order
    np.testing.assert_allclose(layer.backward(dy), expected_dx, rtol=1e-12, atol=1e-15)


def test_maxpool_same_padding_ignores_the_padding() -> None:
    x = -np.ones((1, 1, 3, 3))  # all negative: a zero pad would win if it were counted
    layer = built(MaxPooling2D(2, padding="same"), (1, 3, 3))
    y = layer.forward(x)
    assert y.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(y, -1.0)


def test_overlapping_maxpool_adds_gradients_of_shared_pixels() -> None:
    x = np.array([[[[0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]]])
    layer = built(MaxPooling2D(2, strides=1), (1, 3, 3))
    assert np.all(layer.forward(x) == 9.0)  # the centre is the max of all four windows
    dx = layer.backward(np.ones((1, 1, 2, 2)))
    assert dx[0, 0, 1, 1] == 4.0 and dx.sum() == 4.0


# --- Cropping2D, Flatten, Dropout, Activation ----------------------------------------------


@pytest.mark.parametrize(("cropping", "expected"), [
    (2, ((2, 2), (2, 2))), ((1, 3), ((1, 1), (3, 3))), (((0, 1), (2, 3)), ((0, 1), (2, 3))),
])
def test_cropping_takes_the_three_keras_spellings(cropping, expected) -> None:
    assert Cropping2D(cropping).cropping == expected


def test_cropping_cuts_the_border_and_sends_no_gradient_there() -> None:
    x = np.arange(2 * 5 * 6.0).reshape(1, 2, 5, 6)
    layer = built(Cropping2D(((1, 0), (2, 1))), (2, 5, 6))
    y = layer.forward(x)
    np.testing.assert_array_equal(y, x[:, :, 1:, 2:5])
    dx = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape and dx.sum() == y.size
    np.testing.assert_array_equal(dx[:, :, 1:, 2:5], 1.0)


@pytest.mark.parametrize(("cropping", "message"), [
    (-1, "ints >= 0"), ((1, 2, 3), "must be an int"), (1.5, "must be an int"),
    (((1, 1), 2), "ints >= 0"),
])
def test_bad_croppings_are_refused(cropping, message) -> None:
    with pytest.raises(ValueError, match=message):
        Cropping2D(cropping)


def test_cropping_everything_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="leaves nothing of a 4x4 image"):
        built(Cropping2D(2), (1, 4, 4))


def test_flatten_keeps_c_h_w_order_like_pytorch() -> None:
    x = np.arange(24.0).reshape(2, 3, 2, 2)
    layer = built(Flatten(), (3, 2, 2))
    np.testing.assert_array_equal(layer.forward(x), x.reshape(2, 12))
    np.testing.assert_array_equal(layer.backward(np.ones((2, 12))).shape, x.shape)


def test_dropout_is_the_identity_at_inference() -> None:
    layer = built(Dropout(0.5, seed=0), (100,))
    x = np.ones((4, 100))
    assert layer.forward(x, training=False) is x
    assert layer.backward(x) is x


def test_dropout_in_training_zeroes_about_rate_and_scales_the_rest() -> None:
    layer = built(Dropout(0.25, seed=0), (1000,))
    y = layer.forward(np.ones((100, 1000)), training=True)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    dy = np.full(y.shape, 2.0)
    np.testing.assert_allclose(layer.backward(dy), np.where(kept, 2.0 / 0.75, 0.0))


def test_dropout_with_the_same_seed_draws_the_same_masks() -> None:
    a, b = built(Dropout(0.5, seed=7), (50,)), built(Dropout(0.5, seed=7), (50,))
    x = np.ones((3, 50))
    np.testing.assert_array_equal(a.forward(x, training=True), b.forward(x, training=True))


def test_activation_layer_applies_the_named_function() -> None:
    x = np.array([[-2.0, 0.5, 3.0]])
    np.testing.assert_allclose(built(Activation("relu"), (3,)).forward(x), [[0.0, 0.5, 3.0]])
    np.testing.assert_allclose(built(Activation("softmax"), (3,)).forward(x), softmax(x))


# --- activations ---------------------------------------------------------------------------


def test_sigmoid_does_not_overflow_on_raw_pixels_times_weights() -> None:
    z = np.random.default_rng(5).standard_normal((64, 784)) @ (255 * np.ones((784, 10)))
    for dtype in (np.float32, np.float64):
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y = sigmoid(z.astype(dtype))
        assert y.dtype == dtype and np.all((y >= 0) & (y <= 1))


def test_sigmoid_is_exact_in_both_tails() -> None:
    z = np.array([-800.0, -40.0, -1.0, 0.0, 1.0, 40.0, 800.0])
    with np.errstate(over="raise"):
        y = sigmoid(z)
    np.testing.assert_allclose(y[1:-1], 1 / (1 + np.exp(-z[1:-1])), rtol=1e-15)
    assert y[0] == 0.0 and y[-1] == 1.0
    np.testing.assert_allclose(sigmoid(-z), 1 - y, atol=1e-16)


def test_softmax_is_stable_for_huge_logits() -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(y, [[0.5, 0.5, 0.0]])


@pytest.mark.parametrize("name", ["linear", "sigmoid", "relu", "tanh", "softmax"])
def test_an_activation_can_work_in_place_with_the_same_result(name: str) -> None:
    rng = np.random.default_rng(6)
    z = rng.standard_normal((8, 5)).astype(np.float32) * 30
    dy = rng.standard_normal((8, 5)).astype(np.float32)
    reference = get_activation(name)
    expected_y, expected_dz = reference.forward(z), reference.backward(dy)
    in_place = get_activation(name)
    y = in_place.forward(z, out=z)
    assert y is z  # written over z: no array the size of the output is allocated
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(in_place.backward(dy), expected_dz)


def test_unknown_names_are_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match="relu"):
        get_activation("mish")
    with pytest.raises(ValueError, match="valid"):
        Conv2D(2, 3, padding="full")
    with pytest.raises(ValueError, match="glorot_uniform"):
        Dense(3, kernel_initializer="lecun")
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.0)


# --- rules every layer keeps ---------------------------------------------------------------

LAYERS = [
    (lambda: Dense(4, "sigmoid"), (6,)),
    (lambda: Dense(4, "softmax"), (6,)),
    (lambda: Dense(4, "tanh"), (6,)),
    (lambda: Conv2D(3, 3, padding="same", activation="relu"), (2, 5, 5)),
    (lambda: Conv2D(3, 2, strides=2, padding="valid"), (2, 5, 5)),
    (lambda: MaxPooling2D(2), (2, 4, 4)),
    (lambda: MaxPooling2D(3, strides=1, padding="same"), (2, 4, 4)),
    (lambda: Cropping2D(((1, 0), (2, 1))), (2, 5, 6)),
    (lambda: Flatten(), (2, 3, 3)),
    (lambda: Dropout(0.5, seed=1), (6,)),
    (lambda: Activation("relu"), (6,)),
    (lambda: Activation("softmax"), (6,)),
]


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_forward_and_backward_never_mutate_their_inputs(make, shape) -> None:
    layer = built(make(), shape)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, *shape))
    x_before = x.copy()
    y = layer.forward(x, training=True)
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


def test_layer_from_config_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="unknown layer type"):
        layer_from_config({"type": "LSTM", "units": 3})
    with pytest.raises(ValueError, match="bad config for Dense"):
        layer_from_config({"type": "Dense", "units": 3, "colour": "red"})
    with pytest.raises(ValueError, match="type"):
        layer_from_config({"units": 3})


# --- initializers ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "check"), [
    ("glorot_uniform", lambda w: np.abs(w).max() <= np.sqrt(6 / (400 + 300))),
    ("he_normal", lambda w: abs(w.std() - np.sqrt(2 / 400)) < 0.05 * np.sqrt(2 / 400)
     and np.abs(w).max() <= 2 * np.sqrt(2 / 400) / 0.87962566103423978),
    ("xavier", lambda w: abs(w.std() - 1 / np.sqrt(400)) < 0.02 / np.sqrt(400)),
    ("uniform", lambda w: -1 <= w.min() < -0.99 and 0.99 < w.max() <= 1),
    ("normal", lambda w: abs(w.std() - 1) < 0.02 and abs(w.mean()) < 0.02),
])
def test_kernel_initializers_draw_what_their_names_say(name, check) -> None:
    w = built(Dense(300, kernel_initializer=name), (400,)).params["W"]
    assert check(w)


def test_the_course_draws_biases_from_a_normal_when_asked() -> None:
    b = built(Dense(1000, bias_initializer="normal"), (10,)).params["b"]
    assert abs(b.std() - 1) < 0.1
