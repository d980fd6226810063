"""mnistlab.keras.callbacks: Keras 3's callbacks in mnistlab's fit.

Each callback is shown in a real ``Sequential`` fit on a tiny random dataset, and checked
against real Keras 3 (torch backend) where that is cheap: the same sequence of epoch logs
is fed to Keras's callback and to ours, each with a fake model, and the epochs they stop
at, the learning rates they set and the rows they write must agree.
"""

from __future__ import annotations

import csv
import math
import os
import warnings

import numpy as np
import pytest

from mnistlab import Sequential
from mnistlab.engines import load_model
from mnistlab.keras import callbacks
from mnistlab.keras.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from mnistlab.nn import Dense
from mnistlab.training.callbacks import get_learning_rate


@pytest.fixture(scope="module")
def keras():
    """Real Keras 3 on the torch backend (imported once: a few seconds)."""
    os.environ["KERAS_BACKEND"] = "torch"
    return pytest.importorskip("keras")


def data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 4), dtype=np.float32), rng.integers(0, 3, n)


def model(optimizer="adam", metrics=("accuracy",)) -> Sequential:
    net = Sequential([Dense(8, "relu", input_shape=(4,)), Dense(3, "softmax")], seed=0)
    net.compile(optimizer, "sparse_categorical_crossentropy", metrics=list(metrics))
    return net


def fit(net: Sequential, cbs: list, epochs: int = 5, **options) -> History:
    (x, y), (xv, yv) = data(40, 0), data(20, 1)
    return net.fit(x, y, epochs=epochs, batch_size=10, verbose=0, callbacks=cbs,
                   validation_data=(xv, yv), **options)


class FakeModel:
    """What a callback touches of a model: weights, stop_training and an optimizer."""

    def __init__(self, learning_rate: float = 0.01) -> None:
        self.stop_training = False
        self.weights = [np.zeros(2)]
        self.optimizer = type("Opt", (), {"learning_rate": learning_rate})()
        self.saved: list[tuple[str, str]] = []

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights) -> None:
        self.weights = [np.array(w) for w in weights]

    def save(self, path, overwrite=True) -> None:
        self.saved.append(("save", path))

    def save_weights(self, path, overwrite=True) -> None:
        self.saved.append(("save_weights", path))


def drive(callback, logs_per_epoch: list[dict], model: FakeModel | None = None) -> FakeModel:
    """Run ``callback`` through a fit's hooks, one epoch per logs dict, stopping as fit does;
    epoch i's weights are [i, i]."""
    model = model or FakeModel()
    callback.set_model(model)
    callback.set_params({"verbose": 0, "epochs": len(logs_per_epoch), "steps": 1})
    callback.on_train_begin({})
    for epoch, logs in enumerate(logs_per_epoch):
        callback.on_epoch_begin(epoch, {})
        model.weights = [np.full(2, float(epoch))]
        callback.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    callback.on_train_end({})
    return model


# Epoch logs of a run that improves, stalls, improves a little, then worsens.
VAL_LOSSES = [1.0, 0.8, 0.81, 0.79, 0.795, 0.9, 0.85, 0.7, 0.71, 0.72, 0.73, 0.74]
LOGS = [{"loss": v + 0.1, "accuracy": 1 - v / 2, "val_loss": v, "val_accuracy": 1 - v}
        for v in VAL_LOSSES]


def test_the_module_exports_keras_names_and_history_is_what_fit_returns() -> None:
    assert sorted(callbacks.__all__) == sorted([
        "CSVLogger", "Callback", "EarlyStopping", "History", "LambdaCallback",
        "LearningRateScheduler", "ModelCheckpoint", "ReduceLROnPlateau", "TerminateOnNaN"])
    history = fit(model(), [], epochs=2)
    assert isinstance(history, History)
    assert history.params == {"verbose": 0, "epochs": 2, "steps": 4}
    for cls in (CSVLogger, EarlyStopping, LambdaCallback, LearningRateScheduler,
                ModelCheckpoint, ReduceLROnPlateau, TerminateOnNaN):
        assert issubclass(cls, Callback)


# --- EarlyStopping ---------------------------------------------------------------------------


def test_early_stopping_stops_a_fit_after_patience_epochs_without_improvement() -> None:
    net = model("sgd")
    stop = EarlyStopping(monitor="loss", min_delta=10.0, patience=2)  # nothing improves by 10
    history = fit(net, [stop], epochs=10)
    assert history.epoch == [0, 1, 2] and stop.stopped_epoch == 2
    assert stop.best == history.history["loss"][0]


def test_early_stopping_restores_the_best_weights_at_the_end_even_without_stopping() -> None:
    net = model()
    best = {}

    def remember(epoch, logs):
        if not best or logs["val_loss"] < best["val_loss"]:
            best.update(val_loss=logs["val_loss"], weights=net.get_weights())

    stop = EarlyStopping(patience=100, restore_best_weights=True)
    fit(net, [LambdaCallback(on_epoch_end=remember), stop], epochs=4)
    assert stop.stopped_epoch == 0  # it ran all four epochs
    for name, w in best["weights"].items():
        np.testing.assert_array_equal(net.get_weights()[name], w)


@pytest.mark.parametrize("options", [
    {},
    {"patience": 2},
    {"patience": 2, "min_delta": 0.02},
    {"patience": 1, "baseline": 0.75},
    {"patience": 2, "start_from_epoch": 4},
    {"monitor": "val_accuracy", "patience": 2},
    {"monitor": "val_accuracy", "patience": 2, "mode": "max", "min_delta": 0.015},
    {"monitor": "loss", "patience": 3, "mode": "min", "restore_best_weights": True},
    {"patience": 1, "baseline": 0.5, "restore_best_weights": True},
])
def test_early_stopping_stops_where_keras_stops_and_restores_what_keras_restores(
        keras, options) -> None:
    theirs_options = dict(options)
    if options.get("monitor") == "val_accuracy":
        theirs_options.setdefault("mode", "max")  # Keras 3 asks the compiled metric objects
    ours, theirs = EarlyStopping(**options), keras.callbacks.EarlyStopping(**theirs_options)
    ours_model, theirs_model = drive(ours, LOGS), drive(theirs, LOGS)
    assert ours.stopped_epoch == theirs.stopped_epoch
    assert ours.best == theirs.best and ours.best_epoch == theirs.best_epoch
    assert ours.wait == theirs.wait
    np.testing.assert_array_equal(ours_model.weights, theirs_model.weights)


def test_auto_mode_maximizes_accuracies_and_minimizes_losses() -> None:
    for monitor, maximize in [("val_loss", False), ("loss", False), ("accuracy", True),
                              ("val_acc", True), ("val_sparse_categorical_accuracy", True),
                              ("auc", True), ("val_mae", False)]:
        assert EarlyStopping(monitor=monitor).maximize is maximize
        assert EarlyStopping(monitor=monitor, mode="min").maximize is False
    with pytest.warns(UserWarning, match="mode 'up' is unknown, fallback to auto"):
        assert EarlyStopping(monitor="acc", mode="up").maximize is True


def test_a_missing_monitor_warns_and_does_not_stop() -> None:
    stop = EarlyStopping(monitor="val_loss", patience=0)
    net = model()
    x, y = data()
    with pytest.warns(UserWarning, match="`val_loss` which is not available. "
                                         "Available metrics are: loss,accuracy$"):
        history = net.fit(x, y, epochs=3, verbose=0, callbacks=[stop])  # no validation data
    assert history.epoch == [0, 1, 2] and stop.stopped_epoch == 0


# --- ModelCheckpoint ---------------------------------------------------------------------------


def test_model_checkpoint_saves_a_model_file_per_epoch_named_from_the_logs(tmp_path) -> None:
    net = model()
    pattern = str(tmp_path / "ckpt" / "model-{epoch:02d}-{val_loss:.2f}.keras")
    history = fit(net, [ModelCheckpoint(pattern)], epochs=3)
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == [f"model-{e + 1:02d}-{v:.2f}.keras"
                     for e, v in enumerate(history.history["val_loss"])]
    last = load_model(tmp_path / "ckpt" / names[-1])  # a mnistlab (safetensors) model file
    for name, w in net.get_weights().items():
        np.testing.assert_array_equal(last.get_weights()[name], w)


def test_save_best_only_saves_when_the_monitored_value_improves(keras, tmp_path) -> None:
    for options in ({"save_best_only": True},
                    {"save_best_only": True, "monitor": "val_accuracy", "mode": "max"},
                    {"save_best_only": True, "initial_value_threshold": 0.8},
                    {"save_weights_only": True, "save_best_only": True}):
        suffix = ".weights.h5" if options.get("save_weights_only") else ".keras"
        path = str(tmp_path / ("m-{epoch}" + suffix))
        ours, theirs = ModelCheckpoint(path, **options), keras.callbacks.ModelCheckpoint(
            path, **options)
        assert drive(ours, LOGS).saved == drive(theirs, LOGS).saved, options
        assert ours.best == theirs.best


def test_model_checkpoint_with_the_keras_facades_sequential(tmp_path) -> None:
    from mnistlab import keras as mk

    net = mk.Sequential([mk.Input(shape=(4,)), mk.layers.Dense(8, activation="relu"),
                         mk.layers.Dense(3, activation="softmax")])
    net.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    fit(net, [ModelCheckpoint(str(tmp_path / "w-{epoch}.weights.h5"), save_weights_only=True),
              ModelCheckpoint(str(tmp_path / "best.keras"), save_best_only=True)], epochs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.keras", "w-1.weights.h5", "w-2.weights.h5"]
    weights = net.get_weights()
    net.load_weights(str(tmp_path / "w-2.weights.h5"))
    for saved, now in zip(weights, net.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, now)


def test_model_checkpoint_refuses_names_keras_refuses() -> None:
    for path in ("model.keras", "model.safetensors", "dir/m-{epoch}.keras"):
        ModelCheckpoint(path)
    for path in ("model.weights.h5", "model.weights.safetensors"):
        ModelCheckpoint(path, save_weights_only=True)
    with pytest.raises(ValueError, match=r"must end in `\.keras`"):
        ModelCheckpoint("model.pt")
    with pytest.raises(ValueError, match=r"must end in `\.weights\.h5`"):
        ModelCheckpoint("model.keras", save_weights_only=True)
    with pytest.raises(ValueError, match="Unrecognized save_freq"):
        ModelCheckpoint("model.keras", save_freq="batch")


def test_model_checkpoint_saves_every_n_batches_as_keras_counts_them(keras) -> None:
    ours = ModelCheckpoint("m-{epoch}-{batch}.keras", save_freq=3)
    theirs = keras.callbacks.ModelCheckpoint("m-{epoch}-{batch}.keras", save_freq=3)
    saved = []
    for callback in (ours, theirs):
        fake = FakeModel()
        callback.set_model(fake)
        for epoch in range(3):
            callback.on_epoch_begin(epoch, {})
            for batch in range(4):
                callback.on_train_batch_end(batch, {"loss": 1.0})
        saved.append(fake.saved)
    assert saved[0] == saved[1]
    assert [p for _, p in saved[0]] == ["m-1-3.keras", "m-2-2.keras", "m-3-1.keras",
                                        "m-3-4.keras"]
    assert ours.wants_batches() and not ModelCheckpoint("m.keras").wants_batches()


def test_model_checkpoint_on_batches_in_a_real_fit(tmp_path) -> None:
    fit(model(), [ModelCheckpoint(str(tmp_path / "b-{epoch}-{batch}.keras"), save_freq=3)],
        epochs=2)  # 4 batches an epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b-1-3.keras", "b-2-2.keras"]


# --- learning rates ----------------------------------------------------------------------------


def test_learning_rate_scheduler_sets_each_epochs_rate_and_logs_it() -> None:
    net = model("sgd")
    seen = []
    schedule = LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else lr / 2)
    record = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs["learning_rate"]))
    history = fit(net, [schedule, record], epochs=4)
    assert seen == pytest.approx([0.01, 0.01, 0.005, 0.0025])
    assert history.history["learning_rate"] == seen  # History has it too, as in Keras
    assert get_learning_rate(net.optimizer) == pytest.approx(0.0025)


def test_learning_rate_scheduler_takes_keras_one_argument_schedules_and_wants_floats() -> None:
    net = model("adam")
    fit(net, [LearningRateScheduler(lambda epoch: 0.1 * 0.5**epoch)], epochs=3)
    assert get_learning_rate(net.optimizer) == pytest.approx(0.025)
    with pytest.raises(ValueError, match=r"should be a float\. Got: 1"):
        fit(model(), [LearningRateScheduler(lambda epoch: 1)], epochs=1)


def test_learning_rate_scheduler_sets_the_rate_keras_sets(keras) -> None:
    def schedule(epoch, lr):
        return lr if epoch < 3 else lr * math.exp(-0.1)

    ours, theirs = LearningRateScheduler(schedule), keras.callbacks.LearningRateScheduler(
        schedule)
    rates = []
    for callback in (ours, theirs):
        fake, logged = FakeModel(0.01), []
        callback.set_model(fake)
        for epoch in range(6):
            callback.on_epoch_begin(epoch, {})
            logs = {"loss": 1.0}
            callback.on_epoch_end(epoch, logs)
            logged.append(logs["learning_rate"])
        rates.append(logged)
    assert rates[0] == pytest.approx(rates[1], rel=1e-6)  # Keras holds rates in float32


def test_reduce_lr_on_plateau_reduces_as_keras_does(keras) -> None:
    for options in ({"patience": 1}, {"patience": 2, "factor": 0.5, "cooldown": 2},
                    {"patience": 1, "factor": 0.2, "min_lr": 0.0015},
                    {"monitor": "val_accuracy", "mode": "max", "patience": 1, "min_delta": 0.0}):
        runs = []
        for callback in (ReduceLROnPlateau(**options),
                         keras.callbacks.ReduceLROnPlateau(**options)):
            fake, rates = FakeModel(0.01), []
            callback.set_model(fake)
            callback.on_train_begin({})
            for epoch, logs in enumerate(LOGS):
                logs = dict(logs)
                callback.on_epoch_end(epoch, logs)
                rates += [logs["learning_rate"], fake.optimizer.learning_rate]
            runs.append(rates)
        assert runs[0] == pytest.approx(runs[1], rel=1e-6), options
    with pytest.raises(ValueError, match=r"does not support a factor >= 1\.0"):
        ReduceLROnPlateau(factor=1.0)


def test_reduce_lr_on_plateau_in_a_real_fit() -> None:
    net = model("sgd")
    reduce = ReduceLROnPlateau(monitor="loss", min_delta=10.0, patience=1, factor=0.5)
    history = fit(net, [reduce], epochs=4)
    # Each epoch logs the rate it ran with; the reduction applies from the next epoch.
    assert history.history["learning_rate"] == pytest.approx([0.01, 0.01, 0.005, 0.0025])
    assert get_learning_rate(net.optimizer) == pytest.approx(0.00125)


# --- CSVLogger -------------------------------------------------------------------------------


def test_csv_logger_writes_one_row_per_epoch_as_a_fit_runs(tmp_path) -> None:
    path = tmp_path / "log.csv"
    rows_during = []
    peek = LambdaCallback(on_epoch_end=lambda epoch, logs: rows_during.append(
        len(path.read_text().splitlines())))
    history = fit(model(), [CSVLogger(path), peek], epochs=3)
    assert rows_during == [2, 3, 4]  # header + each finished epoch, already on disk
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [float(r["val_loss"]) for r in rows] == history.history["val_loss"]


def test_csv_logger_append_adds_rows_without_a_second_header(tmp_path) -> None:
    path = tmp_path / "log.csv"
    net = model()
    fit(net, [CSVLogger(path, append=True)], epochs=2)
    fit(net, [CSVLogger(path, append=True)], epochs=2)
    lines = path.read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("epoch,") and lines.count(lines[0]) == 1
    fit(net, [CSVLogger(path)], epochs=1)  # without append: a new file
    assert len(path.read_text().splitlines()) == 2


def test_csv_logger_writes_the_bytes_keras_writes(keras, tmp_path) -> None:
    no_validation = [{"loss": 0.5, "accuracy": 0.75}, {"loss": 0.25, "accuracy": 0.875}]
    for logs, separator, append in ((LOGS[:4], ",", False), (no_validation, ";", False),
                                    (LOGS[:3], ",", True)):
        files = []
        for name, cls in (("ours", CSVLogger), ("theirs", keras.callbacks.CSVLogger)):
            path = tmp_path / f"{name}.csv"
            path.write_text("" if not append else "epoch,loss\n0,1.0\n")
            drive(cls(str(path), separator=separator, append=append), logs)
            files.append(path.read_bytes())
        assert files[0] == files[1]


# --- LambdaCallback, TerminateOnNaN --------------------------------------------------------------


def test_lambda_callback_calls_the_functions_given_with_keras_arguments() -> None:
    calls = []
    callback = LambdaCallback(
        on_train_begin=lambda logs: calls.append("begin"),
        on_epoch_begin=lambda epoch, logs: calls.append(f"epoch {epoch}"),
        on_train_batch_end=lambda batch, logs: calls.append(f"batch {batch}"),
        on_epoch_end=lambda epoch, logs: calls.append(f"end {epoch} {sorted(logs)}"),
        on_train_end=lambda logs: calls.append("done"))
    assert callback.wants_batches() and not LambdaCallback(on_epoch_end=print).wants_batches()
    x, y = data(20)
    model().fit(x, y, epochs=2, batch_size=10, verbose=0, callbacks=[callback])
    assert calls == ["begin", "epoch 0", "batch 0", "batch 1", "end 0 ['accuracy', 'loss']",
                     "epoch 1", "batch 0", "batch 1", "end 1 ['accuracy', 'loss']", "done"]


def test_terminate_on_nan_stops_at_a_non_finite_batch_loss(capsys) -> None:
    fake = FakeModel()
    callback = TerminateOnNaN()
    callback.set_model(fake)
    callback.on_train_batch_end(0, {"loss": 0.5})
    assert not fake.stop_training
    callback.on_train_batch_end(1, {"loss": float("nan")})
    assert fake.stop_training and "Batch 1: Invalid loss" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 2"):
        TerminateOnNaN(raise_error=True).on_train_batch_end(2, {"loss": float("inf")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = fit(model(), [TerminateOnNaN()], epochs=2)  # finite losses: runs on
    assert history.epoch == [0, 1]


def test_learning_rates_and_restored_weights_on_the_torch_engine() -> None:
    pytest.importorskip("torch")
    from mnistlab.engines.torch import TorchSequential

    net = TorchSequential([Dense(8, "relu", input_shape=(4,)), Dense(3, "softmax")], seed=0)
    net.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = EarlyStopping(patience=100, restore_best_weights=True)
    history = fit(net, [LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1)), stop],
                  epochs=3)
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert get_learning_rate(net.optimizer) == pytest.approx(0.1 / 3)
    assert stop.best == min(history.history["val_loss"])
    for name, w in stop.best_weights.items():
        np.testing.assert_array_equal(net.get_weights()[name], w)
