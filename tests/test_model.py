"""Sequential: Keras parameter counts, seeds, dtypes, the compile/fit/evaluate/predict workflow,
weights and spec, callbacks, and that small models really learn."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mnistlab.engines.numpy import Sequential, model_from_spec
from mnistlab.errors import TrainingDivergedError
from mnistlab.nn import (
    SGD,
    Activation,
    Adam,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPooling2D,
)
from mnistlab.training import History


def mlp(**kwargs) -> Sequential:
    return Sequential([Flatten(input_shape=(28, 28)), Dense(1000, "relu"), Dense(10, "softmax")],
                      **kwargs)


def course_cnn(**kwargs) -> Sequential:
    return Sequential([
        Conv2D(32, 5, padding="same", activation="relu", input_shape=(1, 28, 28)),
        MaxPooling2D(2),
        Conv2D(64, 2, padding="same", activation="relu"),
        MaxPooling2D(2),
        Dropout(0.25),
        Flatten(),
        Dense(1000, "relu"),
        Dense(10, "softmax"),
    ], **kwargs)


def blobs(n=300, seed=0):
    """Three well separated 2-D clusters: a problem any working classifier solves."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    return (centres[labels] + 0.4 * rng.standard_normal((n, 2))).astype(np.float32), labels


def quadrant_images(n=120, seed=0):
    """8x8 images with a bright 3x3 square in one quadrant; the label is the quadrant."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    x = 0.1 * rng.random((n, 1, 8, 8), dtype=np.float32)
    for i, q in enumerate(labels):
        r, c = 4 * (q // 2) + rng.integers(0, 2), 4 * (q % 2) + rng.integers(0, 2)
        x[i, 0, r : r + 3, c : c + 3] += 1.0
    return x, labels


# --- structure ------------------------------------------------------------------------------


def test_parameter_counts_equal_keras() -> None:
    assert mlp().count_params() == 795_010
    assert course_cnn().count_params() == 3_156_098
    textbook = Sequential([Dense(50, "sigmoid", input_shape=(784,)), Dense(100, "sigmoid"),
                           Dense(10, "softmax")])
    assert textbook.count_params() == 45_360


def test_summary_prints_a_keras_like_table_and_returns_the_total() -> None:
    lines: list[str] = []
    total = course_cnn().summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert total == 3_156_098
    assert "Total params: 3,156,098" in text
    assert "(None, 32, 28, 28)" in text and "(None, 3136)" in text and "3,137,000" in text


def test_output_shapes_of_the_course_cnn() -> None:
    model = course_cnn()
    model.build()
    assert [layer.output_shape for layer in model.layers] == [
        (32, 28, 28), (32, 14, 14), (64, 14, 14), (64, 7, 7), (64, 7, 7), (3136,), (1000,), (10,)]
    assert model.predict(np.zeros((2, 1, 28, 28))).shape == (2, 10)


def test_the_input_shape_can_come_from_the_first_batch() -> None:
    model = Sequential([Dense(4, "relu"), Dense(2, "softmax")], seed=0)
    assert model.predict(np.ones((3, 7))).shape == (3, 2)
    assert model.input_shape == (7,)


def test_inputs_of_the_wrong_shape_are_rejected_with_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, 28, 28\).*\(5, 784\)"):
        mlp().predict(np.zeros((5, 784)))


# --- seeds and dtypes -------------------------------------------------------------------------


def test_the_same_seed_gives_identical_weights() -> None:
    a, b, c = course_cnn(seed=3), course_cnn(seed=3), course_cnn(seed=4)
    wa, wb, wc = a.get_weights(), b.get_weights(), c.get_weights()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert not np.array_equal(wa["0.W"], wc["0.W"])


def test_float32_by_default_and_float64_on_request() -> None:
    x = np.random.default_rng(0).random((4, 28, 28))
    m32, m64 = mlp(seed=0), mlp(seed=0, dtype="float64")
    assert all(w.dtype == np.float32 for w in m32.get_weights().values())
    assert all(w.dtype == np.float64 for w in m64.get_weights().values())
    y32, y64 = m32.predict(x), m64.predict(x)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, atol=1e-5)  # same seed, same starting numbers
    with pytest.raises(ValueError, match="float32"):
        mlp(dtype="float16")


def test_raw_uint8_pixels_are_accepted_and_cast() -> None:
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    model = mlp(seed=0)
    np.testing.assert_allclose(model.predict(x), model.predict(x.astype(np.float32)))


# --- training -----------------------------------------------------------------------------------


def test_a_small_mlp_learns_three_clusters() -> None:
    x, y = blobs()
    model = Sequential([Dense(16, "relu", input_shape=(2,)), Dense(3, "softmax")], seed=0)
    model.compile(Adam(lr=0.01), "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=15, batch_size=32, seed=0, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert history.history["accuracy"][-1] > 0.95
    assert model.evaluate(*blobs(seed=1))[1] > 0.95  # and it generalises


def test_a_small_cnn_learns_where_the_square_is() -> None:
    x, y = quadrant_images()
    model = Sequential([Conv2D(4, 3, padding="same", activation="relu", input_shape=(1, 8, 8)),
                        MaxPooling2D(2), Dropout(0.1), Flatten(), Dense(4, "softmax")], seed=0)
    model.compile(Adam(lr=0.02), "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=12, batch_size=16, seed=0, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert model.evaluate(*quadrant_images(seed=1))[1] > 0.9


def test_sgd_on_one_hot_labels_with_the_course_loss_learns_too() -> None:
    x, y = blobs()
    model = Sequential([Dense(3, "sigmoid", input_shape=(2,))], seed=0, dtype="float64")
    model.compile(SGD(lr=0.01), "sigmoid_crossentropy_sum")
    history = model.fit(x, np.eye(3)[y], epochs=20, batch_size=len(x), verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.9


def test_history_has_keras_keys_epochs_and_step_losses() -> None:
    x, y = blobs(100)
    model = Sequential([Dense(3, "softmax", input_shape=(2,))], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=3, batch_size=10, validation_data=blobs(50, 1),
                        verbose=0, log_every=4)
    assert isinstance(history, History)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in history.history.values())
    assert history.epoch == [0, 1, 2]
    assert [s for s, _ in history.steps] == [4, 8, 12, 16, 20, 24, 28, 30]  # 30 steps in all
    assert history.to_dict()["steps"][0][0] == 4


def test_the_same_fit_seed_gives_the_same_training_run() -> None:
    x, y = blobs(100)
    runs = []
    for _ in range(2):
        model = Sequential([Dense(8, "relu", input_shape=(2,)), Dropout(0.3),
                            Dense(3, "softmax")], seed=5)
        model.compile("adam", "sparse_categorical_crossentropy")
        runs.append(model.fit(x, y, epochs=2, batch_size=16, seed=9, verbose=0).history["loss"])
    assert runs[0] == runs[1]


def test_train_step_updates_and_loss_and_grads_does_not() -> None:
    x, y = blobs(20)
    model = Sequential([Dense(3, "softmax", input_shape=(2,))], seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    before = model.get_weights()
    loss, grads = model.loss_and_grads(x, y)
    assert set(grads) == {"0.W", "0.b"} and loss > 0
    assert all(np.array_equal(before[k], w) for k, w in model.get_weights().items())
    loss2, acc = model.train_step(x, y)
    assert loss2 == pytest.approx(loss) and 0 <= acc <= 1
    np.testing.assert_allclose(model.get_weights()["0.W"], before["0.W"] - 0.01 * grads["0.W"],
                               rtol=1e-6)


def test_softmax_with_cross_entropy_uses_the_fused_gradient() -> None:
    for last in ([Dense(3, "softmax")], [Dense(3), Activation("softmax")]):
        model = Sequential(last, input_shape=(2,))
        model.compile("sgd", "categorical_crossentropy")
        assert model.loss_path == "logits"
    model.compile("sgd", "mse")
    assert model.loss_path == "outputs"
    sigmoid_out = Sequential([Dense(3, "sigmoid")], input_shape=(2,))
    sigmoid_out.compile("sgd", "sigmoid_crossentropy_sum")
    assert sigmoid_out.loss_path == "gradient_at_logits"
    sigmoid_out.compile("sgd", "binary_crossentropy_sum")
    assert sigmoid_out.loss_path == "outputs"


def test_a_diverging_run_stops_with_the_epoch_and_step_and_keeps_good_weights() -> None:
    x, y = blobs(40)
    model = Sequential([Dense(3, "softmax", input_shape=(2,))], seed=0)
    model.compile(SGD(lr=1e30), "categorical_crossentropy")
    before = model.get_weights()
    with np.errstate(all="ignore"), pytest.raises(TrainingDivergedError, match="epoch 1, step 1"):
        model.fit(x * 1e10, y, epochs=3, batch_size=8, verbose=0)
    after = model.get_weights()  # the infinite step was refused, not applied
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_saturated_sigmoids_still_learn_with_the_course_gradient() -> None:
    # Inputs ~100x too large (like raw 0-255 pixels) saturate the sigmoids: y(1 - y) is 0,
    # so gradients through the sigmoid's derivative (here mse's) vanish; the course's
    # y - t w.r.t. the logits ("sigmoid_crossentropy_sum") learns anyway.
    x, y = blobs()
    results = {}
    for loss in ("sigmoid_crossentropy_sum", "mse"):
        model = Sequential([Dense(3, "sigmoid", "uniform", "uniform", input_shape=(2,))], seed=0)
        model.compile(SGD(lr=0.001), loss)
        history = model.fit(100 * x, np.eye(3)[y], epochs=10, batch_size=len(x), verbose=0)
        results[loss] = history.history["accuracy"][-1]
    assert results["sigmoid_crossentropy_sum"] > 0.95
    assert results["mse"] < 0.7


def test_evaluate_gives_a_tuple_or_a_dict() -> None:
    x, y = blobs(50)
    model = Sequential([Dense(3, "softmax", input_shape=(2,))], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    loss, acc = model.evaluate(x, y)
    assert model.evaluate(x, y, return_dict=True) == {"loss": loss, "accuracy": acc}
    assert model.evaluate(x, y, batch_size=7)[0] == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize("batch_size", [0, -5, 2.5, True, "32"])
def test_a_batch_size_that_is_not_a_positive_integer_is_named_in_the_error(batch_size) -> None:
    x, y = blobs(20)
    model = Sequential([Dense(3, "softmax", input_shape=(2,))], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    for call in (lambda: model.fit(x, y, batch_size=batch_size, verbose=0),
                 lambda: model.predict(x, batch_size=batch_size),
                 lambda: model.evaluate(x, y, batch_size=batch_size)):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            call()


def test_predict_in_chunks_equals_one_call() -> None:
    x = np.random.default_rng(0).random((25, 1, 28, 28), dtype=np.float32)
    model = course_cnn(seed=0)
    np.testing.assert_allclose(model.predict(x, batch_size=4), model.predict(x, batch_size=25),
                               rtol=1e-5, atol=1e-7)


def test_plain_output_prints_one_line_per_epoch(capsys) -> None:
    x, y = blobs(60)
    model = Sequential([Dense(3, "softmax", input_shape=(2,))], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=20, validation_data=(x, y), verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Epoch 1/2 - 3/3 - ") and "val_accuracy: " in lines[0]


def test_the_rich_progress_bar_is_used_on_a_terminal(monkeypatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.setenv("COLUMNS", "200")  # wide enough for the whole line
    x, y = blobs(60)
    model = Sequential([Dense(3, "softmax", input_shape=(2,))], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=2, batch_size=20, validation_data=(x, y), verbose=1)
    assert len(history.epoch) == 2
    shown = terminal.getvalue()
    assert "Epoch 1/2" in shown and "Epoch 2/2" in shown and "━" in shown  # rich's bar
    assert "\x1b[" in shown  # drawn with terminal control codes, redrawn in place
    assert " - 3/3 - " not in shown  # not the plain one-line-per-epoch report


# --- callbacks ------------------------------------------------------------------------------


class Recorder:
    def __init__(self, stop_after_epoch: int | None = None) -> None:
        self.calls: list[str] = []
        self.stop_after_epoch = stop_after_epoch

    def on_train_begin(self, model, state) -> None:
        self.model = model
        self.calls.append(f"begin {state['epochs']} {state['steps_per_epoch']}")

    def on_batch_end(self, step, logs) -> None:
        self.calls.append(f"batch {step}")

    def on_epoch_end(self, epoch, logs) -> None:
        self.calls.append(f"epoch {epoch} {sorted(logs)}")
        if epoch == self.stop_after_epoch:
            self.model.stop_training = True


def test_callbacks_see_every_batch_and_epoch_and_can_stop_training() -> None:
    x, y = blobs(20)
    model = Sequential([Dense(3, "softmax", input_shape=(2,))], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    recorder = Recorder(stop_after_epoch=1)
    history = model.fit(x, y, epochs=5, batch_size=10, verbose=0, callbacks=[recorder])
    assert history.epoch == [0, 1]
    assert recorder.calls == [
        "begin 5 2", "batch 1", "batch 2", "epoch 0 ['accuracy', 'loss']",
        "batch 3", "batch 4", "epoch 1 ['accuracy', 'loss']"]


def test_a_callback_can_resume_from_a_later_epoch() -> None:
    class Resume:
        def on_train_begin(self, model, state) -> None:
            state.update(epoch=2, global_step=20)

    x, y = blobs(20)
    model = Sequential([Dense(3, "softmax", input_shape=(2,))], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=4, batch_size=10, verbose=0, callbacks=[Resume()])
    assert history.epoch == [2, 3]
    assert history.steps[0][0] == 21


# --- weights and spec -----------------------------------------------------------------------


def test_weights_are_named_by_layer_index_and_param() -> None:
    weights = course_cnn().get_weights()
    assert list(weights) == ["0.W", "0.b", "2.W", "2.b", "6.W", "6.b", "7.W", "7.b"]
    assert weights["0.W"].shape == (32, 1, 5, 5) and weights["6.W"].shape == (3136, 1000)


def test_set_weights_copies_in_and_checks_names_and_shapes() -> None:
    a, b = course_cnn(seed=0), course_cnn(seed=1)
    b.set_weights(a.get_weights())
    x = np.random.default_rng(0).random((2, 1, 28, 28))
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    with pytest.raises(ValueError, match="missing"):
        b.set_weights({"0.W": a.get_weights()["0.W"]})
    bad = a.get_weights()
    bad["7.b"] = np.zeros(11)
    with pytest.raises(ValueError, match=r"7\.b"):
        b.set_weights(bad)


def test_spec_follows_the_contract_and_rebuilds_the_model() -> None:
    model = course_cnn(preprocess={"scale": "raw"})
    spec = model.spec()
    assert spec["format"] == "mnistlab.model" and spec["version"] == 1
    assert spec["input_shape"] == [1, 28, 28] and spec["dtype"] == "float32"
    assert spec["layers"][0] == {"type": "Conv2D", "filters": 32, "kernel_size": [5, 5],
                                 "strides": [1, 1], "padding": "same", "activation": "relu",
                                 "kernel_initializer": "glorot_uniform",
                                 "bias_initializer": "zeros"}
    assert spec["preprocess"] == {"scale": "raw"}
    rebuilt = model_from_spec(spec)
    assert rebuilt.spec() == spec and rebuilt.count_params() == 3_156_098


def test_a_minimal_spec_uses_layer_defaults() -> None:
    spec = {"format": "mnistlab.model", "version": 1, "input_shape": [784], "dtype": "float64",
            "layers": [{"type": "Dense", "units": 50, "activation": "sigmoid"},
                       {"type": "Dense", "units": 10, "activation": "softmax"}]}
    model = model_from_spec(spec)
    assert model.count_params() == 784 * 50 + 50 + 510 and model.dtype == np.float64
    assert model.preprocess == {"scale": "unit"}


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "keras"}, "not a mnistlab.model"),
    ({"version": 2}, "version"),
    ({"input_shape": [0, 28]}, "input_shape"),
    ({"dtype": "int8"}, "dtype"),
    ({"layers": []}, "no layers"),
    ({"layers": [{"type": "Dense"}]}, "bad config"),
])
def test_bad_specs_are_rejected_with_a_reason(change, message) -> None:
    spec = mlp().spec() | change
    with pytest.raises(ValueError, match=message):
        model_from_spec(spec)
