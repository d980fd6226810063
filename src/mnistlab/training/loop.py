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

LIVE_REFRESH_S = 0.25  # a live progress bar reads a lazy engine's results this often


class History:
    """What fit recorded: per-epoch ``history`` lists, the ``epoch`` numbers, and
    ``steps``: (global step, mean training loss over the last ``log_every`` steps)."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.steps: list[tuple[int, float]] = []

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

    def logs(self) -> dict[str, float]:
        seen = max(self.seen, 1)
        return {"loss": self.loss_sum if self.summed else self.loss_sum / seen,
                "accuracy": self.correct / seen}


def fit(model: Any, x: Any, y: Any, *, epochs: int = 1, batch_size: int = 32,
        validation_data: tuple[Any, Any] | None = None, shuffle: bool = True,
        seed: int | None = None, verbose: int = 1, callbacks: Sequence[Any] | None = None,
        log_every: int = 1) -> History:
    """Train ``model`` (anything with ``fit_session``) on x, y; see the module docstring."""
    batch_size = check_batch_size(batch_size)
    history, callbacks = History(), list(callbacks or ())
    per_batch = any(hasattr(cb, "on_batch_end") for cb in callbacks)
    with model.fit_session(x, y, validation_data=validation_data, seed=seed,
                           batch_size=batch_size) as session:
        n = session.n
        summed = model.loss.reduction == "sum"
        state = {"epoch": 0, "global_step": 0, "epochs": epochs, "batch_size": batch_size,
                 "steps_per_epoch": math.ceil(n / batch_size), "seed": seed,
                 "history": history}
        model.stop_training = False
        _call(callbacks, "on_train_begin", model, state)
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

        with _Progress(verbose, epochs, state["steps_per_epoch"]) as progress:
            for epoch in range(state["epoch"], epochs):
                _call(callbacks, "on_epoch_begin", epoch, {})
                session.begin_epoch(epoch, epoch_order(n, epoch, shuffle, seed))
                totals, started, shown, batches = _Epoch(summed), time.perf_counter(), 0.0, 0
                for start in range(0, n, batch_size):
                    session.step(start, start + batch_size)
                    step, batches = step + 1, batches + 1
                    now = time.perf_counter() - started
                    live = progress.live and now - shown > LIVE_REFRESH_S
                    if not session.lazy or per_batch or live:
                        take(totals, epoch)
                        logs = totals.logs()
                        progress.batch(epoch, batches, logs, now)
                        shown = now
                        if per_batch:
                            _call(callbacks, "on_batch_end", step, {
                                **logs, "batch_loss": totals.last_loss,
                                "batch_accuracy": totals.last_accuracy, "epoch": epoch})
                    if model.stop_training:
                        break
                take(totals, epoch)
                logs = {**totals.logs(), **session.validate()}
                history.record_epoch(epoch, logs)
                progress.epoch_end(epoch, batches, logs, time.perf_counter() - started)
                state.update(epoch=epoch + 1, global_step=step)
                _call(callbacks, "on_epoch_end", epoch, logs)
                if model.stop_training:
                    break
        if window:  # the last, partial window of step losses
            history.steps.append((step, float(np.mean(window))))
        _call(callbacks, "on_train_end", model, state)
    return history


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
    """Keras-like report: a live rich bar on a terminal, else one plain line per epoch."""

    def __init__(self, verbose: int, epochs: int, steps: int) -> None:
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        self.live = verbose == 1 and sys.stdout.isatty()
        self.bar = self.task = None

    def __enter__(self) -> _Progress:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("{task.fields[info]}"))
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def batch(self, epoch: int, done: int, logs: dict[str, float], elapsed: float) -> None:
        if self.bar is None:
            return
        if self.task is None:  # each epoch gets its own bar, as in Keras
            self.task = self.bar.add_task(f"Epoch {epoch + 1}/{self.epochs}", total=self.steps,
                                          info="")
        self.bar.update(self.task, completed=done,
                        info=f"{_per_step(elapsed, done)} - {_format(logs)}")

    def epoch_end(self, epoch: int, done: int, logs: dict[str, float], elapsed: float) -> None:
        timing = f"{elapsed:.1f}s - {_per_step(elapsed, done)} - {_format(logs)}"
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, info=timing)
            self.task = None
        elif self.verbose and self.bar is None:
            print(f"Epoch {epoch + 1}/{self.epochs} - {done}/{self.steps} - {timing}", flush=True)
