"""Non-trainable layer state (BatchNormalization's moving statistics) as first-class weights:
get/set_weights, summary, model files, both engines, conversions and the spec schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from mnistlab.engines.io import DIGEST_KEY, weights_digest
from mnistlab.engines.numpy import Sequential, load_model
from mnistlab.engines.spec import expected_shapes, validate_spec
from mnistlab.errors import ModelFileError
from mnistlab.nn.gradcheck import gradcheck
from mnistlab.nn.layers import (
    LAYER_TYPES,
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Cropping2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    LeakyReLU,
    MaxPooling2D,
    ReLU,
    Rescaling,
    Reshape,
    Softmax,
)

RNG = np.random.default_rng(7)
IMAGES = RNG.random((48, 1, 10, 10)).astype("float32")
LABELS = RNG.integers(0, 3, 48)
STATE = ("1.moving_mean", "1.moving_variance")


def conv_bn(dtype: str = "float32", seed: int = 0) -> Sequential:
    model = Sequential(
        [Conv2D(4, 3, activation="relu", input_shape=(1, 10, 10)),
         BatchNormalization(momentum=0.8), AveragePooling2D(2), GlobalAveragePooling2D(),
         Dense(3, "softmax")], seed=seed, dtype=dtype)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def activations_model() -> Sequential:
    model = Sequential(
        [Rescaling(2.0, offset=-1.0, input_shape=(1, 10, 10)), Reshape([-1]),
         Dense(12), BatchNormalization(center=False), ReLU(max_value=6.0, negative_slope=0.1),
         Reshape([3, 2, 2]), GlobalMaxPooling2D(), LeakyReLU(0.2), Dense(3), Softmax()],
        seed=1)
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def fit(model, epochs: int = 2) -> None:
    model.fit(IMAGES, LABELS, epochs=epochs, batch_size=16, shuffle=False, verbose=0)


def assert_weights_equal(a: dict, b: dict, tol: float = 0.0) -> None:
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=tol, atol=tol, err_msg=name)


# ---- NumPy engine -----------------------------------------------------------------------------
def test_weights_hold_params_then_state_and_round_trip() -> None:
    model = conv_bn()
    assert list(model.get_weights()) == ["0.W", "0.b", "1.gamma", "1.beta", *STATE, "4.W", "4.b"]
    assert set(model.named_params()) == {"0.W", "0.b", "1.gamma", "1.beta", "4.W", "4.b"}
    assert set(model.named_state()) == set(STATE)
    fit(model, 1)
    weights = model.get_weights()
    assert not np.array_equal(weights["1.moving_mean"], 0)  # training moved the averages
    fresh = conv_bn(seed=5)
    fresh.build()
    bn_mean = fresh.layers[1].state["moving_mean"]
    fresh.set_weights(weights)
    assert_weights_equal(fresh.get_weights(), weights)
    assert fresh.layers[1].state["moving_mean"] is bn_mean  # written in place
    np.testing.assert_array_equal(fresh.predict(IMAGES), model.predict(IMAGES))
    with pytest.raises(ValueError, match="missing"):
        fresh.set_weights({k: v for k, v in weights.items() if k != "1.moving_mean"})


def test_summary_splits_trainable_and_non_trainable_as_keras() -> None:
    lines: list[str] = []
    total = conv_bn().summary(print_fn=lines.append)
    # conv 4*9+4 = 40, BN 4*4 = 16 (gamma, beta, moving mean and variance), dense 4*3+3 = 15
    assert total == 71 == conv_bn().count_params()
    assert "Total params: 71" in lines
    assert "Trainable params: 63" in lines and "Non-trainable params: 8" in lines
    bn_row = next(line for line in lines if "BatchNormalization" in line)
    assert bn_row.split()[-1] == "16"


@pytest.mark.parametrize("make", [conv_bn, activations_model])
def test_save_and_load_keep_the_moving_statistics_exactly(make, tmp_path: Path) -> None:
    model = make()
    fit(model)
    model.save(tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert_weights_equal(loaded.get_weights(), model.get_weights())
    assert loaded.spec() == model.spec()
    np.testing.assert_array_equal(loaded.predict(IMAGES), model.predict(IMAGES))
    loaded.compile("sgd", "sparse_categorical_crossentropy")
    before = {k: v.copy() for k, v in loaded.named_state().items()}
    fit(loaded, 1)  # it trains on, and the averages move on
    assert all(not np.array_equal(loaded.named_state()[k], v) for k, v in before.items())


def test_a_file_without_a_moving_statistic_is_refused(tmp_path: Path) -> None:
    model = conv_bn()
    fit(model, 1)
    path = tmp_path / "m.safetensors"
    model.save(path)
    weights = safetensors.numpy.load_file(path)
    with open(path, "rb") as handle:  # keep the metadata, spec included
        header_len = int.from_bytes(handle.read(8), "little")
        metadata = json.loads(handle.read(header_len))["__metadata__"]
    del weights["1.moving_mean"]
    metadata[DIGEST_KEY] = weights_digest(weights)  # a consistent checksum: still refused
    edited = tmp_path / "edited.safetensors"
    edited.write_bytes(safetensors.numpy.save(weights, metadata=metadata))
    with pytest.raises(ModelFileError, match=r"missing weights.*1\.moving_mean"):
        load_model(edited)


def test_gradcheck_leaves_the_moving_statistics_as_they_were() -> None:
    model = Sequential([Dense(5, "tanh", input_shape=(4,)), BatchNormalization(momentum=0.5),
                        Dense(3, "softmax")], seed=0, dtype="float64")
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = RNG.random((6, 4)), RNG.integers(0, 3, 6)
    model.build()
    before = {k: v.copy() for k, v in model.named_state().items()}
    report = gradcheck(model, x, y, training=True)
    assert report.passed(), str(report)
    assert {p.name for p in report.params} == set(model.named_params())
    assert_weights_equal(model.named_state(), before)


# ---- the spec schema --------------------------------------------------------------------------
# one model per layer type: a new type of nn.layers must be added here, and the schema must
# accept it (so a saved model with it loads)
EXAMPLES = {
    "Dense": [Flatten(), Dense(4, "gelu", kernel_initializer="ones")],
    "Conv2D": [Conv2D(2, 3, padding="same", kernel_initializer="lecun_normal")],
    "MaxPooling2D": [MaxPooling2D(2)],
    "Cropping2D": [Cropping2D(1)],
    "Flatten": [Flatten()],
    "Dropout": [Dropout(0.25, seed=3)],
    "Activation": [Activation("swish")],
    "AveragePooling2D": [AveragePooling2D(3, strides=2, padding="same")],
    "GlobalAveragePooling2D": [GlobalAveragePooling2D()],
    "GlobalMaxPooling2D": [GlobalMaxPooling2D()],
    "Reshape": [Reshape([2, -1, 5])],
    "BatchNormalization": [BatchNormalization(center=False, scale=True)],
    "ReLU": [ReLU(), ReLU(max_value=6.0, negative_slope=0.5, threshold=-1.0)],
    "LeakyReLU": [LeakyReLU()],
    "Softmax": [Softmax(axis=1), Softmax()],
    "Rescaling": [Rescaling(1 / 255)],
}


def test_every_layer_type_is_in_the_schema_and_round_trips(tmp_path: Path) -> None:
    assert set(EXAMPLES) == set(LAYER_TYPES), "add an example of the new layer type"
    for kind, layers in EXAMPLES.items():
        model = Sequential([*layers, Flatten(), Dense(2, "softmax")], seed=0,
                           input_shape=(1, 10, 10))
        spec = model.spec()
        assert kind in {layer["type"] for layer in spec["layers"]}
        validate_spec(spec)
        assert expected_shapes(spec) == model.weight_shapes(), kind
        model.save(tmp_path / f"{kind}.safetensors")
        loaded = load_model(tmp_path / f"{kind}.safetensors")
        assert_weights_equal(loaded.get_weights(), model.get_weights())


def test_batchnorm_shapes_follow_center_and_scale() -> None:
    for center, scale in ((True, True), (True, False), (False, True), (False, False)):
        model = Sequential([BatchNormalization(center=center, scale=scale, input_shape=(6,))])
        shapes = expected_shapes(model.spec())
        assert shapes == model.weight_shapes()
        assert ("0.gamma" in shapes, "0.beta" in shapes) == (scale, center)
        assert shapes["0.moving_mean"] == shapes["0.moving_variance"] == (6,)


def spec_with(layer: dict, input_shape: list[int] | None = None) -> dict:
    return {"format": "mnistlab.model", "version": 1, "input_shape": input_shape or [12],
            "dtype": "float32", "layers": [layer]}


@pytest.mark.parametrize("layer, fragment", [
    ({"type": "Reshape", "target_shape": [-1, -1]}, "at most once"),
    ({"type": "Reshape", "target_shape": [5]}, "cannot reshape"),
    ({"type": "Reshape", "target_shape": [3, True]}, "integer"),
    ({"type": "Reshape", "target_shape": [1] * 9}, "list of 1 to"),
    ({"type": "BatchNormalization", "momentum": 1}, "momentum"),
    ({"type": "BatchNormalization", "epsilon": 0.0}, "epsilon"),
    ({"type": "BatchNormalization", "center": 1}, "center"),
    ({"type": "ReLU", "max_value": -1.0}, "max_value"),
    ({"type": "ReLU", "max_value": "6"}, "max_value"),
    ({"type": "LeakyReLU", "alpha": 0.3}, "unknown key 'alpha'"),
    ({"type": "Softmax", "axis": 0}, "batch axis"),
    ({"type": "Softmax", "axis": 2}, "axis"),
    ({"type": "Rescaling"}, "missing key 'scale'"),
    ({"type": "Rescaling", "scale": 1e400}, "finite"),
    ({"type": "GlobalAveragePooling2D"}, "needs (channels, height, width)"),
])
def test_the_schema_refuses_bad_new_layer_configs(layer: dict, fragment: str) -> None:
    with pytest.raises(ModelFileError, match=re.escape(fragment)):
        validate_spec(spec_with(layer))


# ---- the torch engine -------------------------------------------------------------------------
def test_torch_keeps_the_moving_statistics_through_conversions(tmp_path: Path) -> None:
    torch_engine = pytest.importorskip("mnistlab.engines.torch")
    model = conv_bn()
    fit(model, 1)
    on_torch = torch_engine.to_torch(model)
    assert_weights_equal(on_torch.get_weights(), model.get_weights())
    assert all(not v.flags.writeable for v in on_torch.named_state().values())  # placeholders
    fit(on_torch, 2)
    computed = {name: on_torch.get_weights()[name] for name in STATE}
    assert not np.allclose(computed["1.moving_mean"], model.get_weights()["1.moving_mean"])
    buffers = on_torch.net.layers[1].numpy_state()
    np.testing.assert_array_equal(computed["1.moving_mean"], buffers["moving_mean"].numpy())
    back = torch_engine.to_numpy(on_torch)
    assert_weights_equal(back.get_weights(), on_torch.get_weights())
    # get/set_weights on torch round-trip too
    other = torch_engine.to_torch(conv_bn(seed=9))
    other.set_weights(on_torch.get_weights())
    assert_weights_equal(other.get_weights(), on_torch.get_weights())
    lines: list[str] = []
    on_torch.summary(print_fn=lines.append)
    assert "Non-trainable params: 8" in lines


def test_both_engines_compute_the_same_moving_statistics() -> None:
    torch_engine = pytest.importorskip("mnistlab.engines.torch")
    numpy_model, torch_model = conv_bn(seed=3), torch_engine.to_torch(conv_bn(seed=3))
    fit(numpy_model, 2)
    fit(torch_model, 2)
    a, b = numpy_model.get_weights(), torch_model.get_weights()
    for name in STATE:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("writer", ["numpy", "torch"])
def test_files_of_either_engine_load_on_the_other(writer: str, tmp_path: Path) -> None:
    torch_engine = pytest.importorskip("mnistlab.engines.torch")
    model = activations_model() if writer == "numpy" else torch_engine.to_torch(conv_bn())
    fit(model, 1)
    path = tmp_path / "m.safetensors"
    model.save(path)
    other = torch_engine.load_model(path) if writer == "numpy" else load_model(path)
    assert_weights_equal(other.get_weights(), model.get_weights())
    np.testing.assert_allclose(other.predict(IMAGES), model.predict(IMAGES), rtol=1e-5,
                               atol=1e-6)
