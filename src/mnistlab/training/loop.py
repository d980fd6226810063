"""The fit loop: shuffle, train in batches, validate each epoch, report, call callbacks.

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
from typing import Any

import numpy as np

from mnistlab.errors import TrainingDivergedError


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


def fit(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int = 1, batch_size: int = 32,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None, shuffle: bool = True,
        seed: int | None = None, verbose: int = 1, callbacks: Sequence[Any] | None = None,
        log_every: int = 1) -> History:
    """Train ``model`` (anything with ``prepare_input``/``train_step``/``evaluate``) on x, y."""
    batch_size = check_batch_size(batch_size)
    x, y = model.prepare_input(x), np.asarray(y)  # cast to the model's dtype once
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"need as many labels as inputs (> 0), got {len(x)} and {len(y)}")
    n, history, callbacks = len(x), History(), list(callbacks or ())
    summed = getattr(getattr(model, "loss", None), "reduction", "mean") == "sum"
    state = {"epoch": 0, "global_step": 0, "epochs": epochs, "batch_size": batch_size,
             "steps_per_epoch": math.ceil(n / batch_size), "seed": seed, "history": history}
    model.stop_training = False
    _call(callbacks, "on_train_begin", model, state)
    step, window = state["global_step"], []
    x_batch = np.empty((min(batch_size, n), *x.shape[1:]), dtype=x.dtype)  # reused gather buffer
    with _Progress(verbose, epochs, state["steps_per_epoch"]) as progress:
        for epoch in range(state["epoch"], epochs):
            _call(callbacks, "on_epoch_begin", epoch, {})
            order, started = epoch_order(n, epoch, shuffle, seed), time.perf_counter()
            seen = loss_sum = correct = batches = 0
            for start in range(0, n, batch_size):
                if order is None:  # slices are views: no copy at all
                    xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                else:
                    idx = order[start : start + batch_size]
                    # mode="clip" (indices are valid anyway) lets take write straight into out
                    xb = np.take(x, idx, axis=0, out=x_batch[: len(idx)], mode="clip")
                    yb = y[idx]
                step, batches, seen = step + 1, batches + 1, seen + len(xb)
                try:  # train_step refuses non-finite updates; other engines may not
                    loss, acc = model.train_step(xb, yb)
                    if not math.isfinite(loss):
                        raise TrainingDivergedError(f"loss became {loss}")
                except TrainingDivergedError as error:
                    where = f"epoch {epoch + 1}, step {step}"
                    raise TrainingDivergedError(f"{error} ({where})") from None
                loss_sum += loss if summed else loss * len(xb)
                correct += acc * len(xb)
                window.append(loss)
                if step % log_every == 0:
                    history.steps.append((step, float(np.mean(window))))
                    window.clear()
                logs = {"loss": loss_sum if summed else loss_sum / seen, "accuracy": correct / seen}
                progress.batch(epoch, batches, logs, time.perf_counter() - started)
                _call(callbacks, "on_batch_end", step, {**logs, "batch_loss": loss,
                                                        "batch_accuracy": acc, "epoch": epoch})
                if model.stop_training:
                    break
            if validation_data is not None:
                val = model.evaluate(*validation_data, return_dict=True)
                logs.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
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
