"""The fit loop, one for every engine: shuffle, train in batches, validate, report, call
callbacks, and stop at the first step that diverges.

An engine takes part through a *fit session* (``model.fit_session(...)``, a context
manager), which owns the data in the engine's own form (NumPy arrays, or tensors on a
device) and does only what differs between engines:

    session.n                      # how many training samples
    session.lazy                   # True: step results stay on the device until read()
    session.begin_epoch(epoch, order)
    session.step(start, stop)      # train on rows order[start:stop] (or start:stop)
    session.read() -> Steps        # the steps since the last read: losses, correct, sizes
    session.validate() -> dict     # {"val_loss", "val_accuracy"} (or {} without data)

After a step whose loss or update is not finite a session applies no more updates, and
``read`` says which step it was; the loop then raises TrainingDivergedError naming the
epoch and step, the weights are the last good ones.

A callback is any object with some of these methods (all optional):
``on_train_begin(model, state)``, ``on_epoch_begin(epoch, logs)``,
``on_batch_end(step, logs)``, ``on_epoch_end(epoch, logs)``, ``on_train_end(model, state)``.
``state`` is a dict fit reads back after ``on_train_begin`` (a resume callback may
change "epoch" and "global_step"); setting ``model.stop_training = True`` ends fit
after the current batch.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnistlab.errors import TrainingDivergedError
from mnistlab.training.callbacks import Callback

LIVE_REFRESH_S = 0.25  # a live progress bar reads a lazy engine's results this often


class History:
    """What fit recorded: per-epoch ``history`` lists, the ``epoch`` numbers, and
    ``steps``: (global step, mean training loss over the last ``log_every`` steps)."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.steps: list[tuple[int, float]] = []
        self.params: dict[str, Any] = {}  # Keras's: {"verbose", "epochs", "steps"}
        self.model: Any = None

    def record_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe copy (for history.json)."""
        return {"history": {k: list(v) for k, v in self.history.items()},
                "epoch": list(self.epoch), "steps": [list(s) for s in self.steps]}


@dataclass
class Steps:
    """Results of consecutive training steps, oldest first. ``failed`` is the index (into
    these lists) of a step whose loss or update was not finite, with ``reason``; that step
    and any after it changed no weights."""

    losses: list[float] = field(default_factory=list)
    correct: list[float] = field(default_factory=list)  # rows predicted right, per step
    sizes: list[int] = field(default_factory=list)
    failed: int | None = None
    reason: str = ""


def epoch_order(n: int, epoch: int, shuffle: bool, seed: int | None) -> np.ndarray | None:
    """Sample order of one epoch (None: in order). Seeded by (seed, epoch), so a resumed
    run sees the same order as an uninterrupted one."""
    if not shuffle:
        return None
    rng = np.random.default_rng(None if seed is None else [seed, epoch])
    return rng.permutation(n)


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int; ValueError if it is not a positive integer."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


class _Epoch:
    """Running totals of one epoch, fed with what sessions read."""

    def __init__(self, summed: bool) -> None:
        self.summed, self.loss_sum, self.correct, self.seen = summed, 0.0, 0.0, 0
        self.last_loss = self.last_accuracy = math.nan

    def add(self, loss: float, correct: float, size: int) -> None:
        self.loss_sum += loss if self.summed else loss * size
        self.correct += correct
        self.seen += size
        self.last_loss, self.last_accuracy = loss, correct / size

    def logs(self, metrics: Sequence[str] = ("accuracy",)) -> dict[str, float]:
        """{"loss": ..., and the accuracy under each compiled metric's name}."""
        seen = max(self.seen, 1)
        return {"loss": self.loss_sum if self.summed else self.loss_sum / seen,
                **{name: self.correct / seen for name in metrics}}


def fit(model: Any, x: Any, y: Any, *, epochs: int = 1, batch_size: int | None = 32,
        validation_data: tuple[Any, ...] | None = None, validation_split: float = 0.0,
        shuffle: bool = True, seed: int | None = None, verbose: int | str = "auto",
        callbacks: Sequence[Any] | None = None, class_weight: dict | None = None,
        sample_weight: Any = None, initial_epoch: int = 0, log_every: int = 1) -> History:
    """Train ``model`` (anything with ``fit_session``) on x, y; see the module docstring.

    The arguments mean what Keras's ``Model.fit`` makes them mean: ``validation_split`` holds
    out the *last* fraction of x and y (taken before any shuffling), ``class_weight`` and
    ``sample_weight`` weigh each sample's loss (``sample_weights``), ``initial_epoch`` is the
    first epoch to run, ``verbose`` is "auto" (= 1), 0 (silent), 1 (a live bar on a
    terminal) or 2 (one line an epoch).
    """
    batch_size = 32 if batch_size is None else check_batch_size(batch_size)
    verbose = check_verbose(verbose)
    initial_epoch = _check_epochs(epochs, initial_epoch)
    x, y, sample_weight, validation_data = split_validation(
        x, y, sample_weight, validation_data, validation_split)
    weights = sample_weights(y, class_weight, sample_weight, len(x))
    history, callbacks = History(), list(callbacks or ())
    keras_style = [cb for cb in callbacks if isinstance(cb, Callback)]
    per_batch = any(hasattr(cb, "on_batch_end") for cb in callbacks) or any(
        cb.wants_batches() for cb in keras_style)
    options = {"sample_weight": weights} if weights is not None else {}
    with model.fit_session(x, y, validation_data=validation_data, seed=seed,
                           batch_size=batch_size, **options) as session:
        n = session.n
        summed = model.loss.reduction == "sum"
        metrics = list(getattr(model, "metrics", ["accuracy"]))
        state = {"epoch": initial_epoch, "global_step": initial_epoch * math.ceil(n / batch_size),
                 "epochs": epochs, "batch_size": batch_size,
                 "steps_per_epoch": math.ceil(n / batch_size), "seed": seed,
                 "history": history}
        history.params = {"verbose": verbose, "epochs": epochs,
                          "steps": state["steps_per_epoch"]}
        history.model, model.history = model, history
        model.stop_training = False
        for cb in keras_style:
            cb.set_model(model)
            cb.set_params(dict(history.params))
        internal = [cb for cb in callbacks if not isinstance(cb, Callback)]
        _call(internal, "on_train_begin", model, state)
        _call(keras_style, "on_train_begin", {})
        step, window = state["global_step"], []

        def take(totals: _Epoch, epoch: int) -> None:
            """Fold the steps the session has not reported yet into the totals and history."""
            steps = session.read()
            first = step - len(steps.losses) + 1  # the global step of steps.losses[0]
            for i, (loss, correct, size) in enumerate(
                    zip(steps.losses, steps.correct, steps.sizes, strict=True)):
                if i == steps.failed:
                    raise TrainingDivergedError(
                        f"{steps.reason} (epoch {epoch + 1}, step {first + i})")
                totals.add(loss, correct, size)
                window.append(loss)
                if (first + i) % log_every == 0:
                    history.steps.append((first + i, float(np.mean(window))))
                    window.clear()

        logs: dict[str, float] = {}
        with _Progress(verbose, epochs, state["steps_per_epoch"]) as progress:
            for epoch in range(state["epoch"], epochs):
                _call(callbacks, "on_epoch_begin", epoch, {})
                session.begin_epoch(epoch, epoch_order(n, epoch, shuffle, seed))
                totals, started, shown, batches = _Epoch(summed), time.perf_counter(), 0.0, 0
                for start in range(0, n, batch_size):
                    if per_batch:
                        _call(keras_style, "on_train_batch_begin", batches, {})
                    session.step(start, start + batch_size)
                    step, batches = step + 1, batches + 1
                    now = time.perf_counter() - started
                    live = progress.live and now - shown > LIVE_REFRESH_S
                    if not session.lazy or per_batch or live:
                        take(totals, epoch)
                        logs = totals.logs(metrics)
                        progress.batch(epoch, batches, logs, now)
                        shown = now
                        if per_batch:
                            _call(internal, "on_batch_end", step, {
                                **logs, "batch_loss": totals.last_loss,
                                "batch_accuracy": totals.last_accuracy, "epoch": epoch})
                            _call(keras_style, "on_train_batch_end", batches - 1, dict(logs))
                    if model.stop_training:
                        break
                take(totals, epoch)
                logs = {**totals.logs(metrics), **_validation_logs(session.validate(), metrics)}
                state.update(epoch=epoch + 1, global_step=step)
                # Keras's callbacks first, which may add to the logs ("learning_rate"), then
                # the History (last, as in Keras), then mnistlab's own, whose checkpoint
                # holds the History with this epoch in it
                _call(keras_style, "on_epoch_end", epoch, logs)
                history.record_epoch(epoch, logs)
                progress.epoch_end(epoch, batches, logs, time.perf_counter() - started)
                _call(internal, "on_epoch_end", epoch, logs)
                if model.stop_training:
                    break
        if window:  # the last, partial window of step losses
            history.steps.append((step, float(np.mean(window))))
        _call(internal, "on_train_end", model, state)
        _call(keras_style, "on_train_end", dict(logs))
    return history


def check_verbose(verbose: Any) -> int:
    """Keras's ``verbose``: "auto" is 1; 0, 1 and 2 as themselves; anything else refused."""
    if verbose == "auto":
        return 1
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    return int(verbose)


def _check_epochs(epochs: Any, initial_epoch: Any) -> int:
    for name, value in (("epochs", epochs), ("initial_epoch", initial_epoch)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(initial_epoch)


def split_validation(x: Any, y: Any, sample_weight: Any, validation_data: Any,
                     validation_split: float) -> tuple[Any, Any, Any, Any]:
    """(x, y, sample_weight, validation_data) with Keras's ``validation_split``: the last
    ``validation_split`` of the samples, before shuffling, become the validation data
    (``validation_data``, when given, wins as in Keras)."""
    if isinstance(validation_split, bool) or not 0.0 <= float(validation_split) < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if validation_data is not None:
        if not isinstance(validation_data, tuple | list) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be a tuple (x_val, y_val) or "
                             "(x_val, y_val, sample_weight_val)")
        return x, y, sample_weight, tuple(validation_data[:2])
    if not validation_split:
        return x, y, sample_weight, None
    n = len(x)
    split_at = math.ceil(n * (1.0 - float(validation_split)))
    if split_at in (0, n):
        raise ValueError(f"validation_split={validation_split} of {n} samples leaves "
                         f"{'no training' if split_at == 0 else 'no validation'} samples; "
                         "use more samples or another split")
    sw = None if sample_weight is None else np.asarray(sample_weight)[:split_at]
    return x[:split_at], y[:split_at], sw, (x[split_at:], y[split_at:])


def sample_weights(y: Any, class_weight: dict | None, sample_weight: Any,
                   n: int) -> np.ndarray | None:
    """Each sample's loss weight, (n,) float32, or None when every weight is 1: Keras's
    ``class_weight`` ({class: weight}; a class it does not name weighs 1; one-hot labels by
    their argmax) times ``sample_weight``."""
    if class_weight is None and sample_weight is None:
        return None
    weights = np.ones(n, dtype=np.float32)
    if sample_weight is not None:
        sw = np.asarray(sample_weight, dtype=np.float64)
        if sw.shape != (n,):
            raise ValueError(f"sample_weight must have one weight per sample, shape ({n},), "
                             f"got {sw.shape}")
        if not np.all(np.isfinite(sw)) or np.any(sw < 0):
            bad = int(np.flatnonzero(~np.isfinite(sw) | (sw < 0))[0])
            raise ValueError(f"sample_weight[{bad}] is {sw[bad]}: weights must be finite "
                             "and >= 0")
        weights *= sw.astype(np.float32)
    if class_weight is not None:
        if not isinstance(class_weight, dict):
            raise ValueError(f"class_weight must be a dict {{class: weight}}, got "
                             f"{type(class_weight).__name__}")
        labels = np.asarray(y)
        if labels.ndim > 1:
            labels = labels.argmax(axis=-1) if labels.shape[-1] != 1 else labels[:, 0]
        labels = np.round(labels).astype(np.int64)
        table = np.ones(max(int(labels.max()), *map(int, class_weight), 0) + 1)
        for cls, weight in class_weight.items():
            if not math.isfinite(float(weight)) or float(weight) < 0:
                raise ValueError(f"class_weight[{cls!r}] is {weight}: weights must be "
                                 "finite and >= 0")
            if int(cls) >= 0:
                table[int(cls)] = float(weight)
        weights *= table[np.clip(labels, 0, len(table) - 1)].astype(np.float32)
    return weights


def _validation_logs(val: dict[str, float], metrics: list[str]) -> dict[str, float]:
    """A session's {"val_loss", "val_accuracy"} under the compiled metrics' names."""
    out = {"val_loss": val["val_loss"]} if "val_loss" in val else {}
    if "val_accuracy" in val:
        out.update({f"val_{name}": val["val_accuracy"] for name in metrics})
    return out


def _call(callbacks: list[Any], hook: str, *args: Any) -> None:
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(*args)


def _format(logs: dict[str, float]) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


def _per_step(seconds: float, steps: int) -> str:
    each = seconds / max(steps, 1)
    return f"{each * 1e6:.0f}us/step" if each < 1e-3 else f"{each * 1e3:.0f}ms/step"


class _Progress:
    """Keras-like report. verbose=1: a live rich bar on a terminal; in Jupyter one display
    per epoch, updated in place (at most every ``LIVE_REFRESH_S``) and left as the epoch's
    line; elsewhere, and with verbose=2, one plain line per epoch; verbose=0 nothing."""

    def __init__(self, verbose: int, epochs: int, steps: int) -> None:
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        self.jupyter = verbose == 1 and not sys.stdout.isatty() and self._in_jupyter()
        self.live = verbose == 1 and (sys.stdout.isatty() or self.jupyter)
        self.bar = self.task = None
        self.handle: Any = None  # the epoch's IPython display (Jupyter)
        self.shown_at = -math.inf  # when the display was last updated (epoch seconds)

    @staticmethod
    def _in_jupyter() -> bool:
        """True inside a Jupyter (IPython) kernel: stdout is no terminal there, but a
        display can be updated in place."""
        if "ipykernel" not in sys.modules:
            return False
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
        return shell is not None and getattr(shell, "kernel", None) is not None

    @staticmethod
    def _bar(done: int, total: int, width: int = 20) -> str:
        filled = width if total <= 0 else min(width, round(width * done / total))
        return "\u2501" * filled + "\u2500" * (width - filled)

    def __enter__(self) -> _Progress:
        if self.live and not self.jupyter:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("{task.fields[info]}"))
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def batch(self, epoch: int, done: int, logs: dict[str, float], elapsed: float) -> None:
        if self.jupyter:
            if self.handle is None or elapsed - self.shown_at >= LIVE_REFRESH_S:
                self._show(f"Epoch {epoch + 1}/{self.epochs} - {done}/{self.steps} "
                           f"{self._bar(done, self.steps)} - {elapsed:.1f}s - "
                           f"{_per_step(elapsed, done)} - {_format(logs)}")
                self.shown_at = elapsed
            return
        if self.bar is None:
            return
        if self.task is None:  # each epoch gets its own bar, as in Keras
            self.task = self.bar.add_task(f"Epoch {epoch + 1}/{self.epochs}", total=self.steps,
                                          info="")
        self.bar.update(self.task, completed=done,
                        info=f"{_per_step(elapsed, done)} - {_format(logs)}")

    def epoch_end(self, epoch: int, done: int, logs: dict[str, float], elapsed: float) -> None:
        timing = f"{elapsed:.1f}s - {_per_step(elapsed, done)} - {_format(logs)}"
        line = f"Epoch {epoch + 1}/{self.epochs} - {done}/{self.steps} - {timing}"
        if self.jupyter:
            self._show(line)  # the epoch's display ends as its plain line
            self.handle, self.shown_at = None, -math.inf
        elif self.bar is not None and self.task is not None:
            self.bar.update(self.task, info=timing)
            self.task = None
        elif self.verbose and self.bar is None:
            print(line, flush=True)

    def _show(self, text: str) -> None:
        """Show ``text`` in this epoch's display: a new one at its first update, then the
        same one updated in place."""
        from IPython.display import display

        sys.stdout.flush()  # what was printed before comes first
        if self.handle is None:
            self.handle = display({"text/plain": text}, raw=True, display_id=True)
        else:
            self.handle.update({"text/plain": text}, raw=True)
