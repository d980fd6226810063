"""Saving and loading models: a round trip gives identical predictions, the file is plain
safetensors with the spec in its metadata, and every kind of damage is refused with a
ModelFileError that names the file and the problem."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

import mnistlab
from mnistlab import Sequential
from mnistlab.engines import load_model
from mnistlab.engines.io import DIGEST_KEY, SPEC_KEY, save_model, weights_digest
from mnistlab.errors import ModelFileError
from mnistlab.nn import Conv2D, Dense, Dropout, Flatten, MaxPooling2D


def small_cnn(dtype: str = "float32") -> Sequential:
    return Sequential([Conv2D(4, 3, padding="same", activation="relu", input_shape=(1, 8, 8)),
                       MaxPooling2D(2), Dropout(0.2), Flatten(), Dense(5, "softmax")],
                      seed=0, dtype=dtype, preprocess={"scale": "0.01-1"})


X = np.random.default_rng(0).random((6, 1, 8, 8))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    save_model(small_cnn(), path)
    return path


def rewrite(path: Path, tensors: dict, metadata: dict) -> None:
    path.write_bytes(safetensors.numpy.save(tensors, metadata=metadata))


def parts(path: Path) -> tuple[dict, dict]:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + size])["__metadata__"]
    return dict(safetensors.numpy.load(data)), metadata


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_gives_identical_predictions(tmp_path: Path, dtype: str) -> None:
    model = small_cnn(dtype)
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = mnistlab.load_model(path)
    assert loaded.spec() == model.spec()
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.dtype == np.dtype(dtype)


def test_the_file_is_plain_safetensors_with_the_spec_in_metadata(saved: Path) -> None:
    tensors, metadata = parts(saved)
    assert sorted(tensors) == ["0.W", "0.b", "4.W", "4.b"]
    spec = json.loads(metadata[SPEC_KEY])
    assert spec["format"] == "mnistlab.model" and spec["preprocess"] == {"scale": "0.01-1"}
    assert metadata[DIGEST_KEY] == weights_digest(tensors)


def test_a_trained_model_reloads_and_keeps_training(tmp_path: Path) -> None:
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(X, np.arange(6) % 5, epochs=2, batch_size=3, verbose=0)
    model.save(tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    loaded.compile("adam", "sparse_categorical_crossentropy")
    loaded.fit(X, np.arange(6) % 5, epochs=1, batch_size=3, verbose=0)


def test_saving_replaces_the_file_atomically(saved: Path) -> None:
    other = Sequential([Flatten(input_shape=(1, 8, 8)), Dense(3, "softmax")], seed=1)
    save_model(other, saved)
    assert load_model(saved).count_params() == 195
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temp files left


# --- damage -------------------------------------------------------------------------------


def expect_error(path: Path, *fragments: str) -> None:
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_a_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.safetensors", "cannot read")


@pytest.mark.parametrize("keep", [0, 5, 20, 200, -1])
def test_a_truncated_file(saved: Path, keep: int) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:keep] if keep >= 0 else data[:-7])
    with pytest.raises(ModelFileError, match=r"too short|truncated|corrupt"):
        load_model(saved)


def test_a_file_that_is_not_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"\x93NUMPY" + bytes(200))
    expect_error(path, "truncated or not a safetensors file")


def test_a_damaged_header(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[8] = ord("#")  # the header JSON starts at byte 8 with "{"
    saved.write_bytes(bytes(data))
    expect_error(saved, "unreadable safetensors header")


def test_a_safetensors_file_without_a_spec(saved: Path) -> None:
    tensors, _ = parts(saved)
    rewrite(saved, tensors, {"format": "pt"})
    expect_error(saved, "no model spec")


def test_an_invalid_spec(saved: Path) -> None:
    tensors, metadata = parts(saved)
    rewrite(saved, tensors, metadata | {SPEC_KEY: "{not json"})
    expect_error(saved, "invalid model spec")
    spec = json.loads(metadata[SPEC_KEY])
    spec["layers"][0]["type"] = "Conv3D"
    rewrite(saved, tensors, metadata | {SPEC_KEY: json.dumps(spec)})
    expect_error(saved, "invalid model spec", "Conv3D")


def test_a_missing_tensor(saved: Path) -> None:
    tensors, metadata = parts(saved)
    del tensors["4.b"]
    rewrite(saved, tensors, metadata)
    expect_error(saved, "missing weights ['4.b']")


def test_an_extra_tensor(saved: Path) -> None:
    tensors, metadata = parts(saved)
    tensors["9.W"] = np.zeros(3, np.float32)
    rewrite(saved, tensors, metadata)
    expect_error(saved, "unexpected weights ['9.W']")


def test_a_tensor_of_the_wrong_shape(saved: Path) -> None:
    tensors, metadata = parts(saved)
    tensors["4.W"] = np.zeros((64, 4), np.float32)
    rewrite(saved, tensors, metadata)
    expect_error(saved, "'4.W' has shape (64, 4)", "(64, 5)")


def test_a_tensor_of_the_wrong_dtype(saved: Path) -> None:
    tensors, metadata = parts(saved)
    tensors["0.b"] = tensors["0.b"].astype(np.float64)
    rewrite(saved, tensors, metadata)
    expect_error(saved, "'0.b' is float64", "float32")


def test_non_finite_weights(saved: Path) -> None:
    tensors, metadata = parts(saved)
    tensors["0.W"][0, 0, 1, 1] = np.nan
    rewrite(saved, tensors, metadata | {DIGEST_KEY: weights_digest(tensors)})
    expect_error(saved, "'0.W' contains NaN or infinite values")


def test_weights_changed_after_saving(saved: Path) -> None:
    tensors, metadata = parts(saved)
    tensors["4.W"][0, 0] += 0.5
    rewrite(saved, tensors, metadata)
    expect_error(saved, "do not match their checksum")
