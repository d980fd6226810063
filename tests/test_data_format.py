"""data_format: the layers over images take Keras's channels_last (N, H, W, C) batches as
well as the engine's channels_first (N, C, H, W), with the same weights, results and
gradients; an image whose channels are plainly on the other side is an error naming
data_format."""

from __future__ import annotations

import numpy as np
import pytest

from mnistlab import Sequential
from mnistlab.nn import (
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Cropping2D,
    Dense,
    Flatten,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    MaxPooling2D,
)
from mnistlab.nn.gradcheck import gradcheck


def _pair_of_models(make_layers):
    """The same net twice, channels_first and channels_last, with the same weights."""
    first = Sequential(make_layers("channels_first"), seed=3, dtype="float64",
                       input_shape=(2, 9, 8))
    last = Sequential(make_layers("channels_last"), seed=3, dtype="float64",
                      input_shape=(9, 8, 2))
    first.build()
    last.build()
    last.set_weights(first.get_weights())
    return first, last


def _conv_net(fmt):
    return [Conv2D(4, 3, padding="same", activation="relu", data_format=fmt),
            BatchNormalization(data_format=fmt),
            MaxPooling2D(2, data_format=fmt),
            Cropping2D(((1, 0), (0, 1)), data_format=fmt),
            AveragePooling2D(2, strides=1, padding="same", data_format=fmt),
            Conv2D(3, 2, strides=2, data_format=fmt)]


@pytest.mark.parametrize("head", ["global_avg", "global_max"])
def test_channels_last_computes_what_channels_first_computes(head):
    pool = GlobalAveragePooling2D if head == "global_avg" else GlobalMaxPooling2D

    def layers(fmt):
        return [*_conv_net(fmt), pool(data_format=fmt), Dense(5, "softmax")]

    first, last = _pair_of_models(layers)
    x = np.random.default_rng(0).normal(size=(6, 2, 9, 8))
    nhwc = x.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(last.predict(nhwc), first.predict(x), atol=1e-12)
    for model in (first, last):
        model.compile("sgd", "sparse_categorical_crossentropy")
    y = np.arange(6) % 5
    loss_first, grads_first = first.loss_and_grads(x, y)
    loss_last, grads_last = last.loss_and_grads(nhwc, y)
    assert loss_last == pytest.approx(loss_first, abs=1e-12)
    for name, grad in grads_first.items():
        np.testing.assert_allclose(grads_last[name], grad, atol=1e-10, err_msg=name)


def test_channels_last_shapes_are_reported_channels_last():
    model = Sequential([Conv2D(32, 5, padding="same", data_format="channels_last"),
                        MaxPooling2D(2, data_format="channels_last"), Flatten(), Dense(10)],
                       input_shape=(28, 28, 1))
    model.build()
    assert [layer.output_shape for layer in model.layers] == [
        (28, 28, 32), (14, 14, 32), (14 * 14 * 32,), (10,)]
    assert model.get_weights()["0.W"].shape == (32, 1, 5, 5)  # the engine's layout


def test_channels_last_gradients_check_numerically():
    model = Sequential([*_conv_net("channels_last"), Flatten(), Dense(3, "softmax")], seed=1,
                       dtype="float64", input_shape=(9, 8, 2))
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(1).normal(size=(4, 9, 8, 2))
    report = gradcheck(model, x, np.array([0, 1, 2, 1]))
    assert report.passed(1e-6), str(report)


@pytest.mark.parametrize(("fmt", "shape", "hint"), [
    ("channels_first", (28, 28, 1), "data_format='channels_last'"),
    ("channels_last", (1, 28, 28), "data_format='channels_first'"),
])
def test_channels_on_the_wrong_side_are_an_error_naming_data_format(fmt, shape, hint):
    model = Sequential([Conv2D(32, 5, data_format=fmt), Flatten(), Dense(10)],
                       input_shape=shape)
    with pytest.raises(ValueError, match=hint):
        model.build()


def test_channels_last_survives_a_model_file(tmp_path):
    model = Sequential([Conv2D(4, 3, data_format="channels_last"),
                        BatchNormalization(data_format="channels_last"), Flatten(),
                        Dense(3, "softmax")], seed=0, input_shape=(8, 8, 1))
    model.build()
    model.save(tmp_path / "m.safetensors")
    from mnistlab import load_model

    back = load_model(tmp_path / "m.safetensors")
    x = np.random.default_rng(2).random((3, 8, 8, 1), dtype=np.float32)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_channels_last_runs_the_same_on_torch():
    torch_engine = pytest.importorskip("mnistlab.engines.torch")
    model = Sequential([*_conv_net("channels_last"), Flatten(), Dense(3, "softmax")], seed=2,
                       input_shape=(9, 8, 2))
    model.compile("adam", "sparse_categorical_crossentropy")
    on_torch = torch_engine.to_torch(model)
    x = np.random.default_rng(3).random((5, 9, 8, 2), dtype=np.float32)
    np.testing.assert_allclose(on_torch.predict(x), model.predict(x), atol=1e-5)
    y = np.array([0, 1, 2, 0, 1])
    _, grads = model.loss_and_grads(x, y)
    _, torch_grads = on_torch.loss_and_grads(x, y)
    for name, grad in grads.items():
        np.testing.assert_allclose(torch_grads[name], grad, atol=1e-4, err_msg=name)
