"""The NumPy engine's ``Sequential``: the shared contract (``engines.base``) over the
plain NumPy network (``nn.network``), plus what only this engine does: inference and
evaluation in chunks over the engine's threads, and its fit session.

    from mnistlab import Sequential
    from mnistlab.nn import Dense
    model = Sequential([Dense(1000, "relu", input_shape=(784,)), Dense(10, "softmax")], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=10, batch_size=100)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from mnistlab.engines.base import SPEC_FORMAT, SPEC_VERSION, SequentialBase
from mnistlab.engines.io import check_digest, check_weights, read_model_file
from mnistlab.errors import ModelFileError, TrainingDivergedError
from mnistlab.nn.layers import Layer, layer_from_config
from mnistlab.nn.losses import Loss, accuracy
from mnistlab.nn.network import DTYPES, Network
from mnistlab.nn.parallel import each_chunk, threads_for
from mnistlab.training.loop import Steps

__all__ = ["DTYPES", "SPEC_FORMAT", "SPEC_VERSION", "Sequential", "load_model",
           "model_from_spec"]


class Sequential(Network, SequentialBase):
    """A stack of layers on the NumPy engine. ``seed`` fixes every random choice (weights,
    dropout masks)."""

    def _read_weights(self) -> dict[str, np.ndarray]:
        arrays = {**self.named_params(), **self.named_state()}
        return {name: arrays[name].copy() for name in self.weight_shapes()}

    def _write_weight(self, name: str, value: np.ndarray) -> None:
        """Into the existing array (a param or a layer's state), whose references stay valid."""
        index, key = name.split(".", 1)
        layer = self.layers[int(index)]
        target = layer.params[key] if key in layer.params else layer.state[key]
        np.copyto(target, value, casting="same_kind")

    # ---- inference, in chunks over the engine's threads ---------------------------------
    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Outputs for all of ``x``, computed in chunks of at most ``batch_size`` rows (auto
        if None), on several threads when there are enough rows (``parallel.each_chunk``)."""
        x = self.checked_input(x)  # before any thread starts
        size = self.chunk_rows(batch_size)
        if len(x) <= size and threads_for(len(x)) == 1:
            return self.forward(x)
        out = np.empty((len(x), *self.output_shape), dtype=self.dtype)

        def forward_chunk(layers: list[Layer], loss: Loss | None, rows: slice) -> None:
            h = x[rows].astype(self.dtype, copy=False)
            for layer in layers:
                h = layer.forward(h)
            out[rows] = h

        each_chunk(self.layers, self.loss, len(x), size, forward_chunk)
        return out

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int | None = None,
                 return_dict: bool = False) -> tuple[float, float] | dict[str, float]:
        """(loss, accuracy) over all of x (or a dict with those keys): ``score``."""
        result = self.score(x, y, batch_size)
        return result if return_dict else (result["loss"], result["accuracy"])

    def score(self, x: np.ndarray, y: np.ndarray,
              batch_size: int | None = None) -> dict[str, float]:
        """{"loss", "accuracy"} over all of x, computed in chunks as ``predict`` computes
        them, each chunk's loss from its logits where the loss can (what ``evaluate`` and
        validation during fit report, whatever API a subclass gives ``evaluate``)."""
        x, y = self.checked_input(x), np.asarray(y)
        self.check_pairs(x, y, "evaluate")
        if self.loss is None:
            raise RuntimeError("call compile(optimizer, loss) first")
        summed = self.loss.reduction != "mean"

        def score_chunk(layers: list[Layer], loss: Loss | None, rows: slice) -> tuple[float, int]:
            xb, yb = x[rows].astype(self.dtype, copy=False), y[rows]
            value, out = self.forward_loss(xb, yb, training=False, layers=layers, loss=loss)
            return (value if summed else value * len(xb)), round(accuracy(out, yb) * len(xb))

        scores = each_chunk(self.layers, self.loss, len(x), self.chunk_rows(batch_size),
                            score_chunk)
        losses, counts = zip(*scores, strict=True)
        total_loss, correct = math.fsum(losses), sum(counts)
        return {"loss": total_loss if summed else total_loss / len(x),
                "accuracy": correct / len(x)}

    # ---- training -------------------------------------------------------------------------
    @contextmanager
    def fit_session(self, x: Any, y: Any, *, validation_data: Any, seed: int | None,
                    batch_size: int, sample_weight: np.ndarray | None = None,
                    ) -> Iterator[_FitSession]:
        """The NumPy engine's part of ``training.fit``: arrays cast once, batches gathered
        into one reused buffer, each step's results read at once; ``sample_weight`` (N,)
        weighs each sample's loss."""
        self._require_compiled()
        yield _FitSession(self, x, y, validation_data, batch_size, sample_weight)

    def __repr__(self) -> str:
        return f"Sequential({self.layers!r}, dtype={str(self.dtype)!r})"


class _FitSession:
    """One fit on the NumPy engine (see ``training.loop``): nothing is lazy here."""

    lazy = False

    def __init__(self, model: Sequential, x: Any, y: Any, validation_data: Any,
                 batch_size: int, sample_weight: np.ndarray | None = None) -> None:
        self.model, self.validation_data = model, validation_data
        self.x, self.y = model.prepare_input(x), np.asarray(y)  # cast to the model's dtype once
        model.check_pairs(self.x, self.y, "fit")
        if validation_data is not None:  # refused now, not after the first epoch
            vx, vy = validation_data
            model.check_pairs(model.checked_input(vx), np.asarray(vy), "validation_data")
        self.w = None
        if sample_weight is not None:
            self.w = np.asarray(sample_weight, dtype=model.dtype).reshape(-1)
            if self.w.shape != (len(self.x),):
                raise ValueError(f"sample_weight must have one weight per sample, shape "
                                 f"({len(self.x)},), got {np.shape(sample_weight)}")
        self.n, self.order = len(self.x), None
        # reused gather buffer for shuffled batches
        self.buffer = np.empty((min(batch_size, self.n), *self.x.shape[1:]), dtype=self.x.dtype)
        self.steps, self.failed = Steps(), False

    def begin_epoch(self, epoch: int, order: np.ndarray | None) -> None:
        self.order = order

    def step(self, start: int, stop: int) -> None:
        if self.failed:  # a step diverged: no more updates
            return
        w = self.w
        if self.order is None:  # slices are views: no copy at all
            xb, yb = self.x[start:stop], self.y[start:stop]
            wb = None if w is None else w[start:stop]
        else:
            idx = self.order[start:stop]
            # mode="clip" (indices are valid anyway) lets take write straight into out
            xb = np.take(self.x, idx, axis=0, out=self.buffer[: len(idx)], mode="clip")
            yb = self.y[idx]
            wb = None if w is None else w[idx]
        steps = self.steps
        try:
            loss, acc = self.model.train_batch(xb, yb, wb)  # x was checked and cast once
        except TrainingDivergedError as error:
            steps.failed, steps.reason, self.failed = len(steps.losses), str(error), True
            loss, acc = math.nan, math.nan
        steps.losses.append(loss)
        steps.correct.append(acc * len(xb))
        steps.sizes.append(len(xb))

    def read(self) -> Steps:
        steps, self.steps = self.steps, Steps()
        return steps

    def validate(self) -> dict[str, float]:
        if self.validation_data is None:
            return {}
        val = self.model.score(*self.validation_data)
        return {"val_loss": val["loss"], "val_accuracy": val["accuracy"]}


def model_from_spec(spec: dict, seed: int | None = 0) -> Sequential:
    """Build (uncompiled) the model a spec describes; ValueError says what is wrong."""
    if not isinstance(spec, dict):
        raise ValueError(f"a model spec must be a JSON object, got {type(spec).__name__}")
    if spec.get("format") != SPEC_FORMAT or spec.get("version") != SPEC_VERSION:
        raise ValueError(f"not a {SPEC_FORMAT} version {SPEC_VERSION} spec "
                         f"(format={spec.get('format')!r}, version={spec.get('version')!r})")
    shape = spec.get("input_shape")
    if not (isinstance(shape, list) and shape
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise ValueError(f"input_shape must be a list of positive ints, got {shape!r}")
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ValueError("spec has no layers")
    if spec.get("dtype") not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {spec.get('dtype')!r}")
    model = Sequential([layer_from_config(c) for c in layers], seed=seed, dtype=spec["dtype"],
                       input_shape=shape, preprocess=spec.get("preprocess"))
    model.build()
    return model


def load_model(path: Any, *, allow_unverified: bool = False) -> Sequential:
    """The NumPy model a file written by either engine describes; ModelFileError if anything
    in it is wrong. ``read_model_file`` checks the spec (``engines.spec.validate_spec``) and
    every tensor's header entry against it before reading tensor data; the weights must
    match their checksum, and a file without one loads only with ``allow_unverified=True``."""
    spec, tensors, digest = read_model_file(path)
    check_digest(tensors, digest, path, allow_unverified=allow_unverified)
    try:
        model = model_from_spec(spec)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: invalid model spec ({exc})") from None
    check_weights(tensors, {**model.named_params(), **model.named_state()}, path)
    model.set_named_weights(tensors)
    return model
