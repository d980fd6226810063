"""Training callbacks: stop at a target accuracy or on patience, checkpoint, resume.

Callbacks are plain objects with some of the hooks `mnistlab.training.fit` calls
(``on_train_begin(model, state)``, ``on_epoch_end(epoch, logs)``, ...). They work with both
engines: they only use ``named_weights``/``set_named_weights``,
``optimizer.get_state``/``set_state`` and ``stop_training``.

A checkpoint is one safetensors file: the weights (``weights/<name>``), the optimizer state
(``optimizer/<slot>.<name>``), and in the metadata the epoch reached, the global step, the
history so far and the state of every dropout generator, so a resumed run continues exactly
where the checkpoint left off and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
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


class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0):
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.sign = -1.0 if "loss" in monitor else 1.0  # losses fall, accuracies rise
        self.best, self.waited = -math.inf, 0
        self.stopped_epoch: int | None = None

    def on_train_begin(self, model: Any, state: dict) -> None:
        self.model = model

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            return
        score = self.sign * logs[self.monitor]
        if score > self.best + self.min_delta:
            self.best, self.waited = score, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
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
