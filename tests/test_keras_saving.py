"""``mnistlab.keras.saving``: what ``model.save``/``keras.models.load_model`` and
``save_weights``/``load_weights`` keep, and the files they refuse.

- A model saved by mnistlab.keras comes back with the same predictions, name and layer
  names, whatever the file's extension; it is mnistlab's safetensors model file, so
  ``mnistlab.engines.load_model`` (``mnistlab eval``/``predict``) reads it too.
- A compiled model comes back compiled, with its optimizer's settings and state: training
  continues exactly as if it had never been saved.
- A ``.keras`` / ``.weights.h5`` file written by real Keras 3 (torch backend) loads and
  predicts as Keras does.
- What mnistlab cannot run, and damaged or hostile files, are one clear ModelFileError.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import safetensors.numpy

from mnistlab import keras as mk
from mnistlab.engines import load_model as load_engine_model
from mnistlab.engines.io import COMPILE_KEY, OPTIMIZER_PREFIX
from mnistlab.errors import ModelFileError
from mnistlab.keras.models import load_model

RNG = np.random.default_rng(0)
X_FLAT = RNG.random((32, 784), dtype=np.float32)
X_IMAGES = RNG.random((32, 28, 28, 1), dtype=np.float32)
Y = RNG.integers(0, 10, 32)


def mlp(name: str = "mlp") -> mk.Sequential:
    return mk.Sequential([mk.Input((784,)), mk.layers.Dense(16, activation="relu", name="hidden"),
                          mk.layers.Dense(10, activation="softmax", name="out")], name=name)


def cnn() -> mk.Sequential:
    layers = mk.layers
    return mk.Sequential([mk.Input((28, 28, 1)), layers.Conv2D(4, 3, activation="relu"),
                          layers.MaxPooling2D(), layers.BatchNormalization(),
                          layers.Flatten(), layers.Dense(10, activation="softmax")], name="cnn")


def parts(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    return dict(safetensors.numpy.load(data)), json.loads(data[8:8 + size])["__metadata__"]


# ---- mnistlab's own files --------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".keras", ".h5", ".safetensors", ".anything"])
def test_an_mlp_comes_back_with_its_predictions_and_names(tmp_path: Path, suffix: str) -> None:
    model = mlp("digits")
    path = tmp_path / f"model{suffix}"
    model.save(path)
    loaded = load_model(path)
    assert isinstance(loaded, mk.Sequential)
    assert loaded.name == "digits"
    assert [layer.name for layer in loaded.layers] == ["hidden", "out"]
    np.testing.assert_array_equal(loaded.predict(X_FLAT, verbose=0),
                                  model.predict(X_FLAT, verbose=0))
    # the same file is mnistlab's model file: the engines (mnistlab eval/predict) read it
    np.testing.assert_array_equal(load_engine_model(path).predict(X_FLAT),
                                  model.predict(X_FLAT, verbose=0))


def test_a_channels_last_cnn_comes_back_in_keras_layout(tmp_path: Path) -> None:
    model = cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(X_IMAGES, Y, batch_size=16, epochs=1, verbose=0)  # moving statistics change
    model.save(tmp_path / "cnn.keras")
    loaded = load_model(tmp_path / "cnn.keras")
    assert loaded.layers[0].data_format == "channels_last"
    assert [w.shape for w in loaded.get_weights()] == [w.shape for w in model.get_weights()]
    assert loaded.get_weights()[0].shape == (3, 3, 1, 4)  # Keras's (kh, kw, in, out)
    np.testing.assert_array_equal(loaded.predict(X_IMAGES, verbose=0),
                                  model.predict(X_IMAGES, verbose=0))


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "sgd"])
def test_training_continues_exactly_after_save_and_load(tmp_path: Path, optimizer: str) -> None:
    model = mlp()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(X_FLAT, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)  # 2 steps
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.loss.get_config() == model.loss.get_config()
    assert loaded.metrics == ["accuracy"]
    assert loaded.optimizer.iterations == 2
    for m in (model, loaded):  # one more step on each
        m.fit(X_FLAT[:16], Y[:16], batch_size=16, epochs=1, shuffle=False, verbose=0)
    for after_load, original in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(after_load, original)


def test_compile_false_gives_the_model_uncompiled(tmp_path: Path) -> None:
    model = mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.save(tmp_path / "m.keras")
    assert load_model(tmp_path / "m.keras", compile=False).optimizer is None


def test_weights_alone_round_trip_and_are_checked(tmp_path: Path) -> None:
    model, other = mlp(), mlp()
    model.save_weights(tmp_path / "w.weights.h5")  # Keras's name; still safetensors
    assert not h5py.is_hdf5(tmp_path / "w.weights.h5")
    other.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_array_equal(other.predict(X_FLAT, verbose=0),
                                  model.predict(X_FLAT, verbose=0))
    model.save(tmp_path / "full.keras")  # a model file of the same architecture works too
    mlp().load_weights(tmp_path / "full.keras")
    wider = mk.Sequential([mk.Input((784,)), mk.layers.Dense(17), mk.layers.Dense(10)])
    with pytest.raises(ModelFileError, match=r"0\.W.*shape \(784, 16\).*\(784, 17\)"):
        wider.load_weights(tmp_path / "w.weights.h5")


def test_overwrite_false_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    mlp().save(path)
    with pytest.raises(FileExistsError):
        mlp().save(path, overwrite=False)
    with pytest.raises(FileExistsError):
        mlp().save_weights(path, overwrite=False)
    mlp().save(tmp_path / "new.keras", overwrite=False)  # a new file is fine


# ---- hostile mnistlab files ------------------------------------------------------------------


@pytest.fixture
def compiled_file(tmp_path: Path) -> Path:
    model = mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(X_FLAT, Y, batch_size=32, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    return tmp_path / "m.keras"


def rewrite(path: Path, tensors: dict, metadata: dict) -> Path:
    out = path.with_name("edited.keras")
    out.write_bytes(safetensors.numpy.save(tensors, metadata=metadata))
    return out


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t, m: t.update({f"{OPTIMIZER_PREFIX}m_sum.0.W": np.zeros((3, 3), np.float32)}),
     r"optimizer tensor 'optimizer/m_sum\.0\.W' has shape \(3, 3\), its weight '0\.W' has"),
    (lambda t, m: t.update({f"{OPTIMIZER_PREFIX}m_sum.7.W": np.zeros(3, np.float32)}),
     "names no weight of the model"),
    (lambda t, m: t.update({f"{OPTIMIZER_PREFIX}Bad-Slot.0.b": np.zeros(16, np.float32)}),
     "is not named optimizer/<slot>.<weight>"),
    (lambda t, m: m.update({COMPILE_KEY: m[COMPILE_KEY].replace('"adam"', '"lbfgs"')}),
     "unknown optimizer 'lbfgs'"),
    (lambda t, m: m.update({COMPILE_KEY: m[COMPILE_KEY].replace('"beta_1"', '"__class__"')}),
     "unknown setting '__class__'"),
    (lambda t, m: m.update({COMPILE_KEY: '{"a": ' * 50 + "1" + "}" * 50}),
     "nested more than"),
    (lambda t, m: t.update({f"{OPTIMIZER_PREFIX}m_sum.0.b": t["optimizer/m_sum.0.b"] + 1}),
     "do not match their checksum"),
])
def test_hostile_compile_parts_are_model_file_errors(compiled_file: Path, edit,
                                                      message: str) -> None:
    tensors, metadata = parts(compiled_file)
    edit(tensors, metadata)
    with pytest.raises(ModelFileError, match=message):
        load_model(rewrite(compiled_file, tensors, metadata))


def test_files_without_compile_parts_load_as_before(compiled_file: Path) -> None:
    tensors, metadata = parts(compiled_file)
    weights = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    old = {k: v for k, v in metadata.items() if k in ("mnistlab.spec", "mnistlab.sha256")}
    loaded = load_model(rewrite(compiled_file, weights, old))
    assert loaded.optimizer is None


# ---- real Keras 3's files --------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras():
    """Real Keras 3 on torch (imported once for the module)."""
    os.environ["KERAS_BACKEND"] = "torch"
    return pytest.importorskip("keras")


def keras_cnn(keras):
    layers = keras.layers
    return keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(4, 3, activation="relu"),
                             layers.MaxPooling2D(), layers.BatchNormalization(),
                             layers.Dropout(0.25), layers.Conv2D(6, 3, padding="same"),
                             layers.Flatten(), layers.Dense(10, activation="softmax")])


def keras_mlp(keras):
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")], name="kmlp")


@pytest.fixture(scope="module")
def keras_files(keras, tmp_path_factory) -> dict:
    """A Keras MLP and CNN, trained a step, saved as .keras and .weights.h5."""
    out = {}
    for kind, build, x in (("mlp", keras_mlp, X_FLAT), ("cnn", keras_cnn, X_IMAGES)):
        model = build(keras)
        model.compile(optimizer=keras.optimizers.Adam(0.002),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, Y, batch_size=32, epochs=1, verbose=0)
        folder = tmp_path_factory.mktemp(kind)
        model.save(folder / "k.keras")
        model.save_weights(folder / "k.weights.h5")
        out[kind] = (folder, np.asarray(model.predict(x, verbose=0)), x,
                     [layer.name for layer in model.layers])
    return out


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_a_keras_file_predicts_as_keras(keras_files: dict, kind: str) -> None:
    folder, expected, x, names = keras_files[kind]
    with pytest.warns(UserWarning, match="optimizer state is not restored"):
        model = load_model(folder / "k.keras")
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)
    assert model.optimizer.name == "adam"
    assert model.optimizer.get_config()["learning_rate"] == pytest.approx(0.002)
    assert model.loss.name == "sparse_categorical_crossentropy"
    if kind == "mlp":
        assert model.name == "kmlp"
    assert [layer.name for layer in model.layers] == names  # Keras's, whatever its counters


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_keras_weights_h5_loads_into_the_same_layers(keras, keras_files: dict,
                                                     kind: str) -> None:
    folder, expected, x, _ = keras_files[kind]
    model = load_model(folder / "k.keras", compile=False)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    model.load_weights(folder / "k.weights.h5")
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize(("build", "message"), [
    (lambda k: k.Sequential([k.Input((28, 28, 1)), k.layers.Conv2D(2, 3, dilation_rate=2)]),
     r"layer \"conv2d.*\" \(\"Conv2D\"\): option dilation_rate=.* not supported"),
    (lambda k: k.Sequential([k.Input((28, 28)), k.layers.LSTM(4)]),
     r"layer type \"LSTM\" is not supported by mnistlab"),
    (lambda k: k.Sequential([k.Input((784,)), k.layers.Dense(3, use_bias=False)]),
     r"option use_bias=false is not supported by mnistlab \(only true\)"),
    (lambda k: k.Model(*(lambda i: (i, k.layers.Dense(2)(i)))(k.Input((4,)))),
     "Functional.* mnistlab loads keras.Sequential models only"),
])
def test_what_mnistlab_lacks_is_one_clear_error(keras, tmp_path: Path, build,
                                                message: str) -> None:
    build(keras).save(tmp_path / "k.keras")
    with pytest.raises(ModelFileError, match=message):
        load_model(tmp_path / "k.keras")


# ---- hostile .keras files --------------------------------------------------------------------


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_zip(path: Path, files: dict[str, bytes],
              compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_a_truncated_keras_file_is_refused(keras_files: dict, tmp_path: Path) -> None:
    data = (keras_files["mlp"][0] / "k.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"not a readable \.keras file"):
        load_model(tmp_path / "cut.keras")


def test_a_zip_bomb_member_is_refused_before_decompressing(keras_files: dict,
                                                           tmp_path: Path) -> None:
    files = members(keras_files["mlp"][0] / "k.keras")
    files["model.weights.h5"] = bytes(64 << 20)  # 64 MiB of zeros: about 64 KiB deflated
    bomb = write_zip(tmp_path / "bomb.keras", files, zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ModelFileError, match="more than 100 times: a zip bomb"):
        load_model(bomb)


def test_a_deeply_nested_config_is_refused(keras_files: dict, tmp_path: Path) -> None:
    files = members(keras_files["mlp"][0] / "k.keras")
    files["config.json"] = b"[" * 10_000 + b"]" * 10_000
    with pytest.raises(ModelFileError, match=r"config\.json .*nested more than 32 levels"):
        load_model(write_zip(tmp_path / "deep.keras", files))


def test_an_h5_dataset_of_the_wrong_shape_is_refused(keras_files: dict,
                                                     tmp_path: Path) -> None:
    files = members(keras_files["mlp"][0] / "k.keras")
    buffer = io.BytesIO(files["model.weights.h5"])
    edited = io.BytesIO()
    with h5py.File(buffer, "r") as source, h5py.File(edited, "w") as target:
        for key in source:
            source.copy(source[key], target, key)
        del target["layers/dense/vars/0"]
        target["layers/dense/vars/0"] = np.zeros((784, 31), np.float32)
    files["model.weights.h5"] = edited.getvalue()
    with pytest.raises(ModelFileError, match=r"layers/dense/vars/0\) has shape \(784, 31\), "
                                             r"the model needs \(784, 32\)"):
        load_model(write_zip(tmp_path / "shape.keras", files))


def test_garbage_for_the_weights_member_is_a_model_file_error(keras_files: dict,
                                                              tmp_path: Path) -> None:
    files = members(keras_files["mlp"][0] / "k.keras")
    files["model.weights.h5"] = b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8
    with pytest.raises(ModelFileError, match="unreadable Keras weights"):
        load_model(write_zip(tmp_path / "garbage.keras", files))
