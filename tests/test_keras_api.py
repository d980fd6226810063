"""mnistlab.keras: a course's Keras code runs with only its imports changed. Each test is an
idiom of MNIST tutorials, written as the tutorial writes it."""

from __future__ import annotations

import numpy as np
import pytest

import mnistlab as tf
from mnistlab import keras
from mnistlab.keras import layers, models


@pytest.fixture(autouse=True)
def fresh_names():
    keras.backend.clear_session()  # names start at "dense" again, as in a new Keras session
    yield


def _images(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n)


def test_import_mnistlab_as_tf_resolves_tf_keras():
    assert tf.keras.models.Sequential is models.Sequential
    assert tf.keras.layers.Dense is layers.Dense
    assert keras.Sequential is models.Sequential
    assert keras.Input is layers.Input
    assert callable(tf.keras.datasets.mnist.load_data)
    assert callable(tf.keras.utils.to_categorical)


def test_mnist_load_data_is_keras_shaped_and_writable():
    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert x_train.flags.writeable  # Keras gives ordinary arrays
    assert set(np.unique(y_test)) == set(range(10))


def test_the_course_mlp_summary_is_keras_s_table(capsys):
    model = keras.Sequential([keras.Input((784,)), layers.Dense(1000, activation="relu"),
                              layers.Dense(10, activation="softmax")])
    model.summary()
    out = capsys.readouterr().out
    assert 'Model: "sequential"' in out
    assert "│ dense (Dense)" in out and "│ dense_1 (Dense)" in out
    assert "(None, 1000)" in out and "785,000" in out
    assert "Total params: 795,010 (3.03 MB)" in out
    assert "Non-trainable params: 0 (0.00 B)" in out


def test_layer_and_model_names_are_made_as_keras_makes_them():
    first = models.Sequential([layers.Dense(4, input_shape=(3,)), layers.Dense(2)])
    second = models.Sequential([layers.Dense(4, input_shape=(3,), name="hidden"),
                                layers.Dense(2)])
    assert [layer.name for layer in first.layers] == ["dense", "dense_1"]
    assert [layer.name for layer in second.layers] == ["hidden", "dense_2"]
    assert (first.name, second.name) == ("sequential", "sequential_1")
    assert second.get_layer("hidden") is second.layers[0]
    assert second.get_layer(index=-1).name == "dense_2"
    with pytest.raises(ValueError, match="no such layer"):
        second.get_layer("nope")


def test_the_course_cnn_reads_channels_last_as_keras_does():
    model = models.Sequential([
        layers.Conv2D(32, kernel_size=(5, 5), padding="same", activation="relu",
                      input_shape=(28, 28, 1)),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, (2, 2), padding="same", activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(1000, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.build()
    assert [layer.output_shape for layer in model.layers[:4]] == [
        (28, 28, 32), (14, 14, 32), (14, 14, 64), (7, 7, 64)]
    assert model.count_params() == 832 + 8256 + 3136 * 1000 + 1000 + 10010
    kernel, bias, *_ = model.get_weights()
    assert kernel.shape == (5, 5, 1, 32) and bias.shape == (32,)  # Keras's layout


def test_fit_evaluate_predict_return_what_keras_returns(capsys):
    x, y = _images()
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(),
                              layers.Dense(16, activation="relu"),
                              layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.params == {"verbose": 0, "epochs": 2, "steps": 2}  # 48 samples / 32
    assert history.epoch == [0, 1] and model.history is history
    score = model.evaluate(x, y, verbose=0)
    assert isinstance(score, list) and len(score) == 2
    assert model.evaluate(x, y, verbose=0, return_dict=True) == {"loss": score[0],
                                                                 "accuracy": score[1]}
    probabilities = model.predict(x[:5], verbose=0)
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert capsys.readouterr().out == ""  # verbose=0 prints nothing


def test_metrics_are_logged_under_the_name_compile_was_given():
    x, y = _images(32)
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(),
                              layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["acc"])
    assert set(model.fit(x, y, verbose=0).history) == {"loss", "acc"}
    model.compile("adam", "sparse_categorical_crossentropy")
    assert set(model.fit(x, y, verbose=0).history) == {"loss"}
    assert isinstance(model.evaluate(x, y, verbose=0), float)  # the loss alone


def test_validation_split_takes_the_last_samples_before_shuffling():
    x, y = _images(40)
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(logs["val_loss"])

    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(),
                              layers.Dense(10, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, validation_split=0.25, callbacks=[Spy()], verbose=0)
    assert seen[0] == pytest.approx(model.evaluate(x[30:], y[30:], verbose=0), rel=1e-6)


def test_initial_epoch_continues_the_epoch_count():
    x, y = _images(32)
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(),
                              layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=5, initial_epoch=3, verbose=0)
    assert history.epoch == [3, 4]


def test_get_weights_and_set_weights_are_keras_s_flat_list():
    model = keras.Sequential([keras.Input((6, 6, 2)), layers.Conv2D(3, 3),
                              layers.BatchNormalization(), layers.Flatten(), layers.Dense(4)])
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(3, 3, 2, 3), (3,), (3,), (3,), (3,), (3,),
                                          (48, 4), (4,)]
    changed = [w + 1 for w in weights]
    model.set_weights(changed)
    for got, want in zip(model.get_weights(), changed, strict=True):
        np.testing.assert_array_equal(got, want)
    assert [w.shape for w in model.layers[0].get_weights()] == [(3, 3, 2, 3), (3,)]
    with pytest.raises(ValueError, match="has shape"):
        model.set_weights([w.T for w in weights])
    np.testing.assert_array_equal(model.get_weights()[0], changed[0])  # nothing written


def test_keras_s_other_layers_build_and_train():
    x, y = _images(32)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), layers.Rescaling(1.0), layers.Conv2D(4, 3),
        layers.LeakyReLU(negative_slope=0.1), layers.AveragePooling2D(2),
        layers.BatchNormalization(), layers.ReLU(), layers.GlobalAveragePooling2D(),
        layers.Reshape((2, 2)), layers.Flatten(), layers.Dense(10), layers.Softmax()])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_textbook_channels_first_images_keep_working_when_asked_for():
    model = keras.Sequential([keras.Input((1, 28, 28)),
                              layers.Conv2D(8, 3, data_format="channels_first"),
                              layers.MaxPooling2D(data_format="channels_first"),
                              layers.Flatten(), layers.Dense(10)])
    model.build()
    assert model.layers[0].output_shape == (8, 26, 26)


def test_channels_on_the_wrong_side_are_an_error_naming_data_format():
    model = keras.Sequential([layers.Conv2D(32, (5, 5), input_shape=(1, 28, 28)),
                              layers.Flatten(), layers.Dense(10)])
    with pytest.raises(ValueError, match="data_format"):
        model.summary()
    good = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(4, 3), layers.Flatten(),
                             layers.Dense(10)])
    with pytest.raises(ValueError, match="data_format"):
        good.predict(np.zeros((2, 1, 28, 28), np.float32), verbose=0)


def test_a_nan_pixel_is_an_error_naming_where_it_is():
    x, _ = _images(8)
    x[5, 3, 4, 0] = np.nan
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(), layers.Dense(10)])
    with pytest.raises(ValueError, match=r"x\[5, 3, 4, 0\] is nan"):
        model.predict(x, verbose=0)


def test_keras_arguments_mnistlab_lacks_are_refused_by_name():
    with pytest.raises(NotImplementedError, match="use_bias"):
        layers.Dense(10, use_bias=False)
    with pytest.raises(NotImplementedError, match="dilation_rate"):
        layers.Conv2D(8, 3, dilation_rate=2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        layers.Dense(10, bogus=1)


def test_to_categorical_and_set_random_seed():
    np.testing.assert_array_equal(keras.utils.to_categorical([0, 2], 3),
                                  [[1, 0, 0], [0, 0, 1]])
    assert keras.utils.to_categorical(np.array([3.0, 1.0])).shape == (2, 4)
    with pytest.raises(ValueError, match="outside"):
        keras.utils.to_categorical([0, 10], num_classes=10)
    keras.utils.set_random_seed(7)
    a = keras.Sequential([keras.Input((3,)), layers.Dense(2)]).get_weights()[0]
    keras.utils.set_random_seed(7)
    b = keras.Sequential([keras.Input((3,)), layers.Dense(2)]).get_weights()[0]
    np.testing.assert_array_equal(a, b)


def test_pop_removes_the_last_layer():
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3), layers.Dense(2)])
    assert model.pop().name == "dense_1"
    assert model.predict(np.zeros((1, 4)), verbose=0).shape == (1, 3)


def test_the_tensorflow_quickstart_runs_with_import_mnistlab_as_tf(capsys):
    """TensorFlow's "quickstart for beginners", its import line changed only (on a slice)."""
    x_train, y_train = _images(256)
    x_train = x_train[..., 0]
    model = tf.keras.models.Sequential([
        tf.keras.layers.Flatten(input_shape=(28, 28)),
        tf.keras.layers.Dense(128, activation="relu"),
        tf.keras.layers.Dropout(0.2),
        tf.keras.layers.Dense(10),
    ])
    predictions = model(x_train[:1]).numpy()
    assert predictions.shape == (1, 10) and type(predictions) is np.ndarray
    probabilities = tf.nn.softmax(predictions).numpy()
    assert probabilities.sum() == pytest.approx(1.0, rel=1e-6)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    initial = loss_fn(y_train[:1], predictions).numpy()
    assert initial == pytest.approx(-np.log(probabilities[0, y_train[0]]), rel=1e-5)
    model.compile(optimizer="adam", loss=loss_fn, metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=2, verbose=0)
    trained = model.get_weights()
    model.evaluate(x_train, y_train, verbose=2)
    assert "accuracy:" in capsys.readouterr().out
    probability_model = tf.keras.Sequential([model, tf.keras.layers.Softmax()])
    out = probability_model(x_train[:5])
    np.testing.assert_allclose(out.numpy().sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(out.numpy().argmax(1), model.predict(x_train[:5],
                                                                      verbose=0).argmax(1))
    for before, after in zip(trained, model.get_weights(), strict=True):  # shared, not reset
        np.testing.assert_array_equal(before, after)
