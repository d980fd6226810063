"""Training callbacks: Keras 3's (``Callback`` and the ones ``mnistlab.keras.callbacks``
re-exports), and mnistlab's own (stop at a target accuracy, checkpoint, resume).

Keras's callbacks subclass ``Callback`` and are called with Keras's protocol (see
``training.loop``); each takes Keras 3's constructor arguments and defaults and behaves as
Keras 3's does: the same epochs stop, the same learning rates are set, the same files and
rows are written. Where mnistlab differs (model files are safetensors whatever their name;
``mode="auto"`` decides from the monitored name alone), the class says so.

mnistlab's own callbacks are plain objects with the hooks of ``training.loop``'s docstring
(``on_train_begin(model, state)``, ...). They work with both engines: they only use
``get_weights``/``set_weights``, ``optimizer.get_state``/``set_state`` and ``stop_training``.

A checkpoint is one safetensors file: the weights (``weights/<name>``), the optimizer state
(``optimizer/<slot>.<name>``), and in the metadata the epoch reached, the global step, the
history so far and the state of every dropout generator, so a resumed run continues exactly
where the checkpoint left off and ends with the same weights as an uninterrupted run.

One module (over 400 lines) because ``Callback`` is what the fit loop imports and every
callback here is a small class on it; the Keras ones share the monitoring rules
(``_Monitor``) and the learning-rate access (``get_learning_rate``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as save_safetensors

from mnistlab.atomic import atomic_write_bytes
from mnistlab.errors import ModelFileError

CHECKPOINT_FORMAT = "mnistlab.checkpoint/1"


class Callback:
    """Keras's callback protocol: subclass it and override the hooks you need; fit calls
    ``set_model``/``set_params`` first, then the hooks with Keras's arguments (``batch`` is
    the index within the epoch; ``logs`` the running means of the epoch so far, and at an
    epoch's end its figures and the validation ones). The batch hooks cost a read of the
    device each step, so fit calls them only for a callback that overrides one.

    (mnistlab's own callbacks below the Keras ones are plain objects with the hooks of
    ``training.loop``'s docstring, which also receive fit's resumable ``state``.)
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def wants_batches(self) -> bool:
        """Whether this callback overrides a batch hook (fit reads every step for it)."""
        return any(getattr(type(self), hook) is not getattr(Callback, hook)
                   for hook in ("on_train_batch_begin", "on_train_batch_end"))

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None: ...


# --- Keras 3's callbacks ----------------------------------------------------------------------


def get_learning_rate(optimizer: Any) -> float:
    """The optimizer's learning rate: ``learning_rate`` where it has one (Keras's name),
    else mnistlab's ``lr``; ValueError, as Keras raises, if it has neither."""
    for name in ("learning_rate", "lr"):
        if hasattr(optimizer, name):
            return float(getattr(optimizer, name))
    raise ValueError('Optimizer must have a "learning_rate" attribute.')


def set_learning_rate(optimizer: Any, value: float) -> None:
    """Set the optimizer's ``learning_rate`` where it has one, else its ``lr``."""
    for name in ("learning_rate", "lr"):
        if hasattr(optimizer, name):
            setattr(optimizer, name, float(value))
            return
    raise ValueError('Optimizer must have a "learning_rate" attribute.')


def _log_learning_rate(model: Any, logs: dict) -> None:
    """Keras's ``logs["learning_rate"]`` (fit's History records the logs after the Keras
    callbacks, as Keras's History does, so it holds the learning rate too)."""
    logs["learning_rate"] = get_learning_rate(model.optimizer)


class _Monitor(Callback):
    """Keras's MonitorCallback: which way ``monitor`` improves, and by how much counts.

    ``mode="auto"`` is "min" for a loss, "max" for a name holding "acc" or "auc" (every
    metric mnistlab computes is an accuracy) and "min" for any other name. (Keras 3 asks the
    compiled metric objects and raises ValueError for a name it cannot place; mnistlab's
    metrics are names, so the name decides.) An unknown mode warns and falls back to "auto",
    as in Keras. ``min_delta`` is taken as its absolute value, subtracted from a maximized
    quantity's new value and added to a minimized one's before comparing."""

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", baseline: float | None = None,
                 min_delta: float = 0) -> None:
        super().__init__()
        if mode not in ("auto", "min", "max"):
            warnings.warn(f"{type(self).__name__} mode '{mode}' is unknown, fallback to auto "
                          "mode.", stacklevel=3)
            mode = "auto"
        self.monitor, self.mode, self.best = monitor, mode, baseline
        if mode == "auto":
            name = monitor.removeprefix("val_")
            mode = "max" if name != "loss" and ("acc" in name or "auc" in name) else "min"
        self.maximize = mode == "max"
        self.min_delta = abs(min_delta) if self.maximize else -abs(min_delta)

    def _is_improvement(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        shifted = value - self.min_delta
        return bool(shifted > reference if self.maximize else shifted < reference)


class EarlyStopping(_Monitor):
    """Keras 3's EarlyStopping: stop when ``monitor`` has not improved for ``patience``
    epochs.

    An epoch improves when it beats the best so far by more than ``min_delta``; with a
    ``baseline``, the wait restarts only when the epoch also beats the baseline. Epochs before
    ``start_from_epoch`` are not watched. ``stopped_epoch`` is the 0-based epoch fit stopped
    after (0: it did not stop), ``best``/``best_epoch`` the best value and its epoch. With
    ``restore_best_weights``, the weights of the best epoch are put back at the end of
    training whether or not it stopped early (as Keras 3 does). A missing ``monitor`` warns
    and the epoch is not counted.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        super().__init__(monitor, mode, min_delta=min_delta)
        self.patience, self.verbose, self.baseline = patience, verbose, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        self.wait = self.stopped_epoch = self.best_epoch = 0
        self.best_weights: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        # An instance can be reused for another fit.
        self.wait = self.stopped_epoch = self.best_epoch = 0
        self.best = self.best_weights = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print("Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)

    def get_monitor_value(self, logs: dict | None) -> float | None:
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"Early stopping conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(logs)}", stacklevel=2)
        return value


# What each kind of save accepts as a file name. Keras writes .keras (a zip) and .weights.h5
# (HDF5); mnistlab writes its safetensors model file under any of these names.
MODEL_SUFFIXES = (".keras", ".safetensors")
WEIGHTS_SUFFIXES = (".weights.h5", ".weights.safetensors")


class ModelCheckpoint(_Monitor):
    """Keras 3's ModelCheckpoint: save the model (``model.save``) or its weights
    (``model.save_weights``) after every epoch, or every ``save_freq`` batches.

    ``filepath`` is formatted with ``epoch`` (1-based), ``batch`` (1-based, when saving on
    batches) and the logs, e.g. ``"ckpt-{epoch:02d}-{val_loss:.2f}.keras"``. With
    ``save_best_only`` a save happens only when ``monitor`` improves on the best so far
    (``initial_value_threshold`` to start from; a missing ``monitor`` warns and saves). The
    model's save methods write atomically, so a crash never leaves a partial file.

    The file is mnistlab's safetensors file whatever its name; the name must still end as
    Keras requires (``.keras`` for a model, ``.weights.h5`` for weights), or in
    ``.safetensors`` / ``.weights.safetensors``.
    """

    def __init__(self, filepath: str | os.PathLike[str], monitor: str = "val_loss",
                 verbose: int = 0, save_best_only: bool = False, save_weights_only: bool = False,
                 mode: str = "auto", save_freq: str | int = "epoch",
                 initial_value_threshold: float | None = None) -> None:
        super().__init__(monitor, mode, initial_value_threshold)
        self.filepath = os.fspath(filepath)
        self.verbose, self.save_best_only = verbose, save_best_only
        self.save_weights_only, self.save_freq = save_weights_only, save_freq
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen: int | None = None
        self._current_epoch = 0
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int)):
            raise ValueError(f"Unrecognized save_freq: {save_freq}. Expected save_freq are "
                             "'epoch' or integer values")
        if save_weights_only:
            if not self.filepath.endswith(WEIGHTS_SUFFIXES):
                raise ValueError("When using `save_weights_only=True` in `ModelCheckpoint`, "
                                 "the filepath provided must end in `.weights.h5` (Keras "
                                 "weights format) or `.weights.safetensors`. Received: "
                                 f"filepath={self.filepath}")
        elif not self.filepath.endswith(MODEL_SUFFIXES):
            raise ValueError("The filepath provided must end in `.keras` (Keras model format) "
                             f"or `.safetensors`. Received: filepath={self.filepath}")

    def wants_batches(self) -> bool:
        return self.save_freq != "epoch"  # fit reads every step only when saving on batches

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._current_epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._should_save_on_batch(batch):
            self._save_model(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.save_freq == "epoch":
            self._save_model(epoch, None, logs)

    def _should_save_on_batch(self, batch: int) -> bool:
        if self.save_freq == "epoch":
            return False
        if self._last_batch_seen is None or batch <= self._last_batch_seen:
            added = batch + 1  # a new epoch: batches count from 0
        else:
            added = batch - self._last_batch_seen
        self._batches_seen_since_last_saving += added
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            return True
        return False

    def _should_save_model(self, epoch: int, logs: dict, filepath: str) -> bool:
        if not self.save_best_only:
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: saving model to {filepath}")
            return True
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Can save best model only with {self.monitor} available.",
                          stacklevel=4)
            return True
        best = "None" if self.best is None else f"{self.best:.5f}"
        if self._is_improvement(current, self.best):
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} to "
                      f"{current:.5f}, saving model to {filepath}")
            self.best = current
            return True
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}")
        return False

    def _save_model(self, epoch: int, batch: int | None, logs: dict | None) -> None:
        logs = logs or {}
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise OSError("Please specify a non-directory filepath for ModelCheckpoint. "
                          f"Filepath used is an existing directory: {filepath}")
        directory = os.path.dirname(filepath)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(filepath)
        else:
            self.model.save(filepath)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: finished saving model to {filepath}")

    def _get_file_path(self, epoch: int, batch: int | None, logs: dict) -> str:
        try:
            if batch is None or "batch" in logs:
                return self.filepath.format(epoch=epoch + 1, **logs)
            return self.filepath.format(epoch=epoch + 1, batch=batch + 1, **logs)
        except KeyError as error:
            raise KeyError(f'Failed to format this callback filepath: "{self.filepath}". '
                           f"Reason: {error}") from error


class LearningRateScheduler(Callback):
    """Keras 3's LearningRateScheduler: at each epoch's start set the optimizer's learning
    rate to ``schedule(epoch, lr)`` (or ``schedule(epoch)``, Keras's older form, tried when
    the two-argument call raises TypeError); the result must be a float. Each epoch's logs
    (and History) get its ``"learning_rate"``."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        lr = get_learning_rate(optimizer)
        try:
            lr = self.schedule(epoch, lr)
        except TypeError:  # the one-argument schedule(epoch) of older Keras
            lr = self.schedule(epoch)
        if not isinstance(lr, float | np.float32 | np.float64):
            raise ValueError(f"The output of the `schedule` function should be a float. Got: {lr}")
        set_learning_rate(optimizer, lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        _log_learning_rate(self.model, logs if logs is not None else {})


class ReduceLROnPlateau(_Monitor):
    """Keras 3's ReduceLROnPlateau: multiply the learning rate by ``factor`` (never below
    ``min_lr``) once ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs,
    then wait ``cooldown`` epochs before counting again. Each epoch's logs (and History) get
    the learning rate the epoch ran with, ``"learning_rate"``; a missing ``monitor`` warns."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0) -> None:
        super().__init__(monitor, mode, min_delta=min_delta)
        if factor >= 1.0:
            raise ValueError("ReduceLROnPlateau does not support a factor >= 1.0. "
                             f"Received factor={factor}")
        self.factor, self.min_lr, self.patience = factor, min_lr, patience
        self.verbose, self.cooldown = verbose, cooldown
        self.cooldown_counter = self.wait = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best, self.cooldown_counter, self.wait = None, 0, 0

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        _log_learning_rate(self.model, logs)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` "
                          f"which is not available. Available metrics are: {','.join(logs)}.",
                          stacklevel=2)
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best, self.wait = current, 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience and self._reduce(epoch):
                self.cooldown_counter, self.wait = self.cooldown, 0

    def _reduce(self, epoch: int) -> bool:
        optimizer = self.model.optimizer
        old = get_learning_rate(optimizer)
        if not old > np.float32(self.min_lr):
            return False
        new = max(old * self.factor, self.min_lr)
        set_learning_rate(optimizer, new)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
        return True


class CSVLogger(Callback):
    """Keras 3's CSVLogger: one row per epoch, columns ``epoch`` (0-based) then the logs'
    keys sorted (with ``val_`` columns, "NA", added when the first epoch had no validation
    figures, as Keras adds them). Each row is appended and the file closed at once, so a
    crash loses nothing already written. The header is written when the file is started:
    always without ``append``, and with it only when the file is missing or empty."""

    def __init__(self, filename: str | os.PathLike[str], separator: str = ",",
                 append: bool = False) -> None:
        super().__init__()
        self.filename, self.sep, self.append = os.fspath(filename), separator, append
        self.keys: list[str] | None = None
        self.append_header = True

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.append:
            self.append_header = not _first_line(self.filename)
        else:
            with open(self.filename, "w", newline=""):
                pass  # start the file empty, as Keras's mode "w"
            self.append_header = True
        self.keys = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(key.startswith("val_") for key in self.keys):
                self.keys += [f"val_{key}" for key in self.keys]

        class Dialect(csv.excel):
            delimiter = self.sep

        with open(self.filename, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["epoch", *self.keys], dialect=Dialect)
            if self.append_header:
                writer.writeheader()
                self.append_header = False
            writer.writerow({"epoch": epoch,
                             **{key: _csv_value(logs.get(key, "NA")) for key in self.keys}})


def _first_line(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.readline()
    except FileNotFoundError:
        return ""


def _csv_value(value: Any) -> Any:
    """A log value as Keras's CSVLogger writes it: a sequence as "[a, b]"."""
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable) and not (isinstance(value, np.ndarray) and value.ndim == 0):
        return f'"[{", ".join(map(str, value))}]"'
    return value


class LambdaCallback(Callback):
    """Keras 3's LambdaCallback: a callback made of the functions given, each called as the
    hook of the same name (``on_epoch_end(epoch, logs)``, ``on_train_begin(logs)``, ...).
    Other keyword arguments become attributes, as in Keras."""

    HOOKS = ("on_epoch_begin", "on_epoch_end", "on_train_begin", "on_train_end",
             "on_train_batch_begin", "on_train_batch_end")

    def __init__(self, on_epoch_begin: Callable | None = None,
                 on_epoch_end: Callable | None = None, on_train_begin: Callable | None = None,
                 on_train_end: Callable | None = None, on_train_batch_begin: Callable | None = None,
                 on_train_batch_end: Callable | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.__dict__.update(kwargs)
        given = dict(zip(self.HOOKS, (on_epoch_begin, on_epoch_end, on_train_begin,
                                      on_train_end, on_train_batch_begin, on_train_batch_end),
                         strict=True))
        for hook, function in given.items():
            if function is not None:
                setattr(self, hook, function)

    def wants_batches(self) -> bool:
        """Whether a batch function was given (fit reads every step only then)."""
        return any(hook in self.__dict__ for hook in ("on_train_batch_begin",
                                                       "on_train_batch_end"))


class TerminateOnNaN(Callback):
    """Keras 3's TerminateOnNaN: stop training (or with ``raise_error``, raise RuntimeError)
    at the first batch whose loss is NaN or infinite.

    mnistlab's fit already checks every step and raises TrainingDivergedError at the first
    non-finite loss or update, keeping the last good weights, before any callback sees that
    batch; this callback is for Keras code that lists it, and costs a read of every step."""

    def __init__(self, raise_error: bool = False) -> None:
        super().__init__()
        self.raise_error = raise_error

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. Loss value: "
                                   f"{loss}. Terminating training immediately.")
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


# --- mnistlab's own callbacks -------------------------------------------------------------------


class StopAtAccuracy:
    """Stop once ``monitor`` (training accuracy by default) passes ``target``, as the course's
    one-layer experiment stops past 80%. ``stopped_epoch`` is the 1-based epoch, or None."""

    def __init__(self, target: float, monitor: str = "accuracy") -> None:
        self.target, self.monitor = float(target), monitor
        self.stopped_epoch: int | None = None

    def on_train_begin(self, model: Any, state: dict) -> None:
        self.model = model

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if logs.get(self.monitor, -math.inf) > self.target:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True


class Checkpoint:
    """Write a checkpoint after every epoch (atomically) to ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def on_train_begin(self, model: Any, state: dict) -> None:
        self.model, self.state = model, state

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        # fit has already advanced state["epoch"] to epoch + 1: the next epoch to run.
        save_checkpoint(self.path, self.model, self.state)


class Resume:
    """Restore a checkpoint before training starts, so fit continues from its epoch."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.resumed_epoch: int | None = None

    def on_train_begin(self, model: Any, state: dict) -> None:
        self.resumed_epoch = restore_checkpoint(self.path, model, state)


def save_checkpoint(path: str | os.PathLike[str], model: Any, state: dict) -> None:
    """Weights, optimizer state and training progress of ``model`` into one file."""
    tensors = {f"weights/{k}": np.ascontiguousarray(v)
               for k, v in model.named_weights().items()}
    scalars = {}  # 0-d state (e.g. Adam's step count) goes in the metadata, exactly
    if model.optimizer is not None:
        for key, value in model.optimizer.get_state().items():
            if np.ndim(value) == 0:
                scalars[key] = np.asarray(value).item()
            else:
                tensors[f"optimizer/{key}"] = np.ascontiguousarray(value)
    history = state.get("history")
    meta = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(state["epoch"]),
        "global_step": int(state["global_step"]),
        "history": history.to_dict() if history is not None else None,
        "dropout_rng": _dropout_states(model),
        "optimizer_scalars": scalars,
    }
    payload = save_safetensors(tensors, metadata={"mnistlab.checkpoint": json.dumps(meta)})
    atomic_write_bytes(path, payload)


def restore_checkpoint(path: str | os.PathLike[str], model: Any, state: dict) -> int:
    """Load a checkpoint into ``model`` and fit's ``state``; return the epoch it reached."""
    tensors, meta = read_checkpoint(path)
    weights = {
        k.removeprefix("weights/"): v for k, v in tensors.items() if k.startswith("weights/")
    }
    try:
        model.set_named_weights(weights)
    except ValueError as error:
        raise ModelFileError(f"{path}: checkpoint does not fit this model: {error}") from error
    optimizer_state = _with_prefix(tensors, "optimizer/")
    for key, value in (meta.get("optimizer_scalars") or {}).items():
        optimizer_state[key] = np.array(value)
    if optimizer_state and model.optimizer is not None:
        model.optimizer.set_state(optimizer_state)
    for index, rng_state in (meta.get("dropout_rng") or {}).items():
        model.layers[int(index)].rng.bit_generator.state = rng_state
    state["epoch"], state["global_step"] = meta["epoch"], meta["global_step"]
    history = state.get("history")
    if history is not None and meta.get("history"):
        saved = meta["history"]
        history.history = {k: list(v) for k, v in saved["history"].items()}
        history.epoch = list(saved["epoch"])
        history.steps = [tuple(s) for s in saved["steps"]]
    return int(meta["epoch"])


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict]:
    """The tensors and metadata of a checkpoint file, with a clear error if it is not one."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            raw_meta = (handle.metadata() or {}).get("mnistlab.checkpoint")
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        meta = json.loads(raw_meta) if raw_meta else None
    except (OSError, SafetensorError, ValueError) as error:
        raise ModelFileError(f"{path}: not a readable checkpoint ({error})") from error
    if not meta or meta.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: not a mnistlab checkpoint (no checkpoint metadata)")
    return tensors, meta


def _with_prefix(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def _dropout_states(model: Any) -> dict[str, Any]:
    """Bit-generator state of each layer that draws random numbers (NumPy dropout)."""
    states = {}
    for index, layer in enumerate(getattr(model, "layers", [])):
        rng = getattr(layer, "rng", None)
        if isinstance(rng, np.random.Generator):
            states[str(index)] = rng.bit_generator.state
    return states
