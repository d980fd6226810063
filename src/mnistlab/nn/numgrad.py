"""Numerical gradients (central differences) and the course's per-sample training with them.

Course material trains its first networks without backprop: every parameter is nudged by
+-delta (1e-4), the loss is recomputed, and dL/dp = (L(p + delta) - L(p - delta)) / (2 delta).
Two implementations compute those same differences:

- ``numerical_gradients_naive``: the textbook loop, two full forward passes per parameter
  element (about a second per sample on a 784-30-10 net); the reference.
- ``numerical_gradients_fast``: no Python loop per parameter. For a Dense layer k with input
  a (B, in) and pre-activation z = a @ W + b, nudging W[i, j] changes only column j of z, by
  +-delta * a[:, i]; nudging b[j] changes it by +-delta. So all nudged pre-activations of one
  layer are built at once, and pushed through the rest of the network as one batch:

      zp[r, j, :]   = z[:, j] +- delta * u_r        u_r: the distinct nonzero columns of a
      h'            = h with column j replaced by f(zp)       (f elementwise)
      z_next'       = z_next + (f(zp) - h[:, j]) * W_next[j]  (rank one: next layer is Dense)
      L+-[r, j]     = loss(rest of the network(z_next'))

  Input columns that are exactly zero are skipped (their difference is exactly 0, as in the
  loop), and equal columns are computed once: a single MNIST image has ~70 distinct pixel
  values among its 784 pixels. The perturbations are processed in chunks of ~100 KiB.
  Fast paths exist for Dense layers (any activation); parameters of every other layer type
  (Conv2D) fall back to the naive loop.

``train_numerical`` runs the course's experiment: per-sample SGD where, within each sample,
parameter groups are updated one after another (W of layer 0, then b of layer 0 with the new
W, then W of layer 1, ...), logging the loss every ``log_every`` samples.

One module, though long: the naive loop, the fast path and the training loop must compute
the very same differences of the very same loss, and reading them side by side is how
one checks that they do (the tests compare them to 1e-8).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mnistlab.errors import TrainingDivergedError
from mnistlab.nn.activations import softmax
from mnistlab.nn.layers import Dense, Dropout, Layer
from mnistlab.nn.losses import (
    EPS,
    BinaryCrossentropySum,
    CategoricalCrossentropy,
    Loss,
    MeanSquaredError,
    as_targets,
    class_indices,
    get_loss,
    loss_path,
)
from mnistlab.nn.network import Network

__all__ = [
    "COURSE_LOSS",
    "FAST_LAYER_TYPES",
    "NumgradHistory",
    "numerical_gradients",
    "numerical_gradients_fast",
    "numerical_gradients_naive",
    "param_groups",
    "train_numerical",
]


DELTA = 1e-4
# The course's loss: summed sigmoid binary cross-entropy, -sum(t log(y+1e-7) + (1-t) log(1-y+1e-7)).
COURSE_LOSS = "binary_crossentropy_sum"
# Layer types whose parameters have a vectorized path; everything else uses the naive loop.
FAST_LAYER_TYPES: tuple[type[Layer], ...] = (Dense,)
# Bytes per temporary array in the fast path. Small on purpose: here, arrays of 128 KiB and more
# come from fresh mmap'ed pages on every allocation, and touching those costs more than the math
# (a 784-30-10 sample: 0.6 ms with 112 KiB chunks, 1.5 ms with one 400 KiB batch).
CHUNK_BYTES = 112 * 1024

Method = Literal["fast", "naive"]


# ---- losses -----------------------------------------------------------------------------------


def _fused(model: Network, loss: Loss) -> bool:
    """True when the loss is computed from the output layer's logits (``losses.loss_path``),
    as the model computes it; numerical gradients must differentiate that same loss."""
    act = model.layers[-1].activation
    return loss_path(loss, act.name if act is not None else None) == "logits"


def _forward_loss(model: Network, x: np.ndarray, t: np.ndarray, loss: Loss) -> float:
    """The loss of one batch, computed exactly as ``Sequential`` computes it (inference mode)."""
    h = x
    for layer in model.layers[:-1]:
        h = layer.forward(h, False)
    last = model.layers[-1]
    if _fused(model, loss):
        return loss.forward_logits(last.linear_forward(h), t)
    return loss.forward(last.forward(h, False), t)


class _BatchedLoss:
    """Evaluates a loss for many perturbed copies of one batch at once.

    ``__call__(out)`` takes outputs of shape (P, B, K) (logits when ``logits`` is true) and
    returns the P losses, each reduced over the batch as ``loss.forward`` reduces it.
    """

    def __init__(self, loss: Loss, t: np.ndarray, y_like: np.ndarray, logits: bool) -> None:
        self.loss, self.logits = loss, logits
        self.t = as_targets(t, y_like)  # (B, K), one-hot for integer labels
        self.idx = class_indices(t)
        self.n = len(y_like)

    def __call__(self, out: np.ndarray) -> np.ndarray:
        loss, t, n = self.loss, self.t, self.n
        p = len(out)
        # Sums over (B, K) as matrix-vector products: numpy reduces a short last axis slowly.
        if type(loss) is BinaryCrossentropySum:
            flat = out.reshape(p, -1)
            pos = np.log(flat + EPS) @ t.reshape(-1)
            neg = np.log(1 - flat + EPS) @ (1 - t).reshape(-1)
            return -(pos + neg)
        if isinstance(loss, CategoricalCrossentropy) and self.logits:
            lse = out.max(axis=-1, keepdims=True)
            lse += np.log(np.exp(out - lse).sum(axis=-1, keepdims=True))
            if self.idx is not None:
                picked = np.take_along_axis(out, self.idx[None, :, None], axis=-1)
                return np.mean((lse - picked)[..., 0], axis=-1)
            return np.sum(t * (lse - out), axis=(-2, -1)) / n
        if isinstance(loss, CategoricalCrossentropy) and not loss.from_logits:  # Keras's clip
            q = np.clip(out / out.sum(axis=-1, keepdims=True), EPS, 1 - EPS)
            return -(np.log(q.reshape(p, -1)) @ t.reshape(-1)) / n
        if type(loss) is MeanSquaredError:
            diff = (out - t).reshape(p, -1)
            return np.einsum("pk,pk->p", diff, diff) / diff.shape[1]
        # Any other loss (subclasses included): one call per perturbation (correct, slower).
        forward = loss.forward_logits if self.logits else loss.forward
        return np.array([forward(o, t) for o in out], dtype=out.dtype)


# ---- parameter groups -----------------------------------------------------------------------


def param_groups(model: Network) -> list[tuple[int, str]]:
    """(layer index, parameter name) in the course's update order: input side first, W then b."""
    return [(i, name) for i, layer in enumerate(model.layers) for name in layer.params]


def _prepare(model: Network, x: np.ndarray, loss: str | Loss | None) -> tuple[np.ndarray, Loss]:
    loss = model.loss if loss is None else get_loss(loss)
    if loss is None:
        raise ValueError("pass a loss (e.g. 'binary_crossentropy_sum') or compile the model")
    x = np.asarray(x)
    if not model.built:
        model.build(model.input_shape or model.layers[0].input_shape or x.shape[1:])
    if x.shape[1:] != model.input_shape:
        raise ValueError(f"expected inputs of shape (N, {model.input_shape}), got {x.shape}")
    return x.astype(model.dtype, copy=False), loss


# ---- naive: the textbook loop -----------------------------------------------------------------


def _naive_group(
    model: Network,
    x: np.ndarray,
    t: np.ndarray,
    loss: Loss,
    layer: int,
    name: str,
    delta: float,
) -> np.ndarray:
    """Central differences for one parameter array, one element at a time."""
    p = model.layers[layer].params[name]
    grad = np.zeros_like(p)
    flat, gflat = p.reshape(-1), grad.reshape(-1)  # views: p is contiguous
    for k in range(flat.size):
        original = flat[k]
        flat[k] = original + delta
        plus = _forward_loss(model, x, t, loss)
        flat[k] = original - delta
        minus = _forward_loss(model, x, t, loss)
        flat[k] = original  # restore exactly, not by subtracting delta
        gflat[k] = (plus - minus) / (2 * delta)
    return grad


def numerical_gradients_naive(
    model: Network,
    x: np.ndarray,
    t: np.ndarray,
    loss: str | Loss | None = None,
    delta: float = DELTA,
) -> dict[str, np.ndarray]:
    """dL/dp for every parameter by central differences, two forward passes per element.

    The reference implementation (the textbook's ``numerical_gradient``); returns arrays named
    like ``model.get_weights()``. ``loss`` defaults to the compiled one.
    """
    x, loss_obj = _prepare(model, x, loss)
    return {
        f"{i}.{n}": _naive_group(model, x, t, loss_obj, i, n, delta) for i, n in param_groups(model)
    }


# ---- fast: all perturbations of a layer as one batch ------------------------------------------


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) in four in-place passes (the engine's overflow-free form takes more).

    exp(-z) overflows to inf for z < -709 (float64), which gives exactly 0, as it should.
    """
    out = np.negative(z)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


_ELEMENTWISE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda z: z,
    "sigmoid": _sigmoid,
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
}


def _activate(layer: Layer, z: np.ndarray) -> np.ndarray:
    """The layer's activation as a pure function (no state cached on the layer)."""
    name = layer.activation.name if layer.activation is not None else "linear"
    if name in _ELEMENTWISE:
        return _ELEMENTWISE[name](z)
    if name == "softmax":
        return softmax(z)
    return type(layer.activation)().forward(z)


def _is_elementwise(layer: Layer) -> bool:
    return layer.activation is None or layer.activation.name in _ELEMENTWISE


def _tail(model: Network, start: int, z: np.ndarray, batched: _BatchedLoss) -> np.ndarray:
    """Losses for pre-activations ``z`` (P, B, ...) of layer ``start``: its activation, then
    every later layer in inference mode, then the loss per perturbation; returns (P,)."""
    p, b = z.shape[:2]
    layers, last = model.layers, len(model.layers) - 1
    h = z.reshape(p * b, *z.shape[2:])
    if start == last and batched.logits:
        return batched(h.reshape(p, b, -1))
    h = _activate(layers[start], h)
    for k in range(start + 1, last + 1):
        if k == last and batched.logits:
            h = layers[k].linear_forward(h)
        else:
            h = layers[k].forward(h, False)
    return batched(h.reshape(p, b, -1))


def _next_dense(model: Network, k: int) -> int | None:
    """Index of the Dense layer fed directly by layer k (Dropout in between is the identity
    at inference), or None."""
    for j in range(k + 1, len(model.layers)):
        layer = model.layers[j]
        if isinstance(layer, Dense):
            return j
        if not isinstance(layer, Dropout):
            return None
    return None


def _dense_group(
    model: Network,
    x: np.ndarray,
    t: np.ndarray,
    loss: Loss,
    k: int,
    name: str,
    delta: float,
    chunk_bytes: int,
) -> np.ndarray:
    """Central differences for W or b of Dense layer k, all elements at once."""
    layer = model.layers[k]
    a = x
    for previous in model.layers[:k]:
        a = previous.forward(a, False)  # (B, in): the input of layer k
    w, bias = layer.params["W"], layer.params["b"]
    z = a @ w  # (B, out), as Dense.linear_forward computes it
    z += bias
    batch, units = z.shape
    last = len(model.layers) - 1
    logits = _fused(model, loss)
    y_like = np.empty((batch, model.layers[-1].output_shape[-1]), dtype=z.dtype)
    batched = _BatchedLoss(loss, t, y_like, logits)

    # The distinct nonzero directions u_r (R, B) in which column j of z moves.
    if name == "b":
        directions, inverse, nonzero = np.ones((1, batch), dtype=z.dtype), None, None
    else:
        columns = a.T  # (in, B)
        nonzero = np.flatnonzero(np.any(columns != 0, axis=1))
        if batch == 1:
            values, inverse = np.unique(columns[nonzero, 0], return_inverse=True)
            directions = values[:, None]
        else:
            directions, inverse = np.unique(columns[nonzero], axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)

    nxt = _next_dense(model, k)
    rank_one = _is_elementwise(layer) and nxt is not None and not (k == last and logits)
    if rank_one:
        h = _activate(layer, z)  # (B, out)
        z_next = h
        for j in range(k + 1, nxt):
            z_next = model.layers[j].forward(z_next, False)
        w_next = model.layers[nxt].params["W"]  # (out, out2)
        z_next = z_next @ w_next
        z_next += model.layers[nxt].params["b"]  # (B, out2)
    # Values per perturbation in the widest array of the batched pass, to size the chunks.
    widest = max(math.prod(lay.output_shape) for lay in model.layers[nxt if rank_one else k :])
    width = units * batch * widest

    # Both signs in one batch: rows [0, R) nudge up, rows [R, 2R) nudge down.
    steps = np.concatenate([delta * directions, -delta * directions])  # (2R, B)
    losses = np.empty((len(steps), units), dtype=z.dtype)
    rows = max(1, chunk_bytes // (z.itemsize * max(1, width)))
    for lo in range(0, len(steps), rows):
        step = steps[lo : lo + rows]  # (r, B)
        if rank_one:
            zp = z.T[None, :, :] + step[:, None, :]  # (r, out, B): column j nudged
            dh = _activate(layer, zp)
            dh -= h.T[None, :, :]  # change of h[:, j]
            zn = dh[..., None] * w_next[None, :, None, :]  # (r, out, B, out2)
            zn += z_next
            chunk = _tail(model, nxt, zn.reshape(-1, batch, zn.shape[-1]), batched)
        else:
            zp = np.broadcast_to(z, (len(step), units, batch, units)).copy()  # (r, j, B, out)
            cols = np.arange(units)
            zp[:, cols, :, cols] += step[None, :, :]  # element [r, j, :, j] += step[r]
            chunk = _tail(model, k, zp.reshape(-1, batch, units), batched)
        losses[lo : lo + len(step)] = chunk.reshape(len(step), units)
    count = len(directions)
    grads = (losses[:count] - losses[count:]) / (2 * delta)  # (R, out)

    if name == "b":
        return grads[0].copy()
    full = np.zeros_like(w)
    full[nonzero] = grads[inverse]
    return full


def _group_gradient(
    model: Network,
    x: np.ndarray,
    t: np.ndarray,
    loss: Loss,
    k: int,
    name: str,
    delta: float,
    method: Method,
    chunk_bytes: int,
) -> np.ndarray:
    layer = model.layers[k]
    if method == "fast" and isinstance(layer, FAST_LAYER_TYPES) and name in ("W", "b"):
        return _dense_group(model, x, t, loss, k, name, delta, chunk_bytes)
    return _naive_group(model, x, t, loss, k, name, delta)


def numerical_gradients_fast(
    model: Network,
    x: np.ndarray,
    t: np.ndarray,
    loss: str | Loss | None = None,
    delta: float = DELTA,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict[str, np.ndarray]:
    """The same central differences as ``numerical_gradients_naive``, vectorized per layer.

    Dense layers take the fast path (see the module docstring); other layer types with
    parameters fall back to the naive loop. ``chunk_bytes`` bounds each temporary array.
    """
    x, loss_obj = _prepare(model, x, loss)
    return {
        f"{i}.{n}": _group_gradient(model, x, t, loss_obj, i, n, delta, "fast", chunk_bytes)
        for i, n in param_groups(model)
    }


def numerical_gradients(
    model: Network,
    x: np.ndarray,
    t: np.ndarray,
    loss: str | Loss | None = None,
    delta: float = DELTA,
    method: Method = "fast",
) -> dict[str, np.ndarray]:
    """``numerical_gradients_fast`` or ``_naive`` by name."""
    if method == "fast":
        return numerical_gradients_fast(model, x, t, loss, delta)
    if method == "naive":
        return numerical_gradients_naive(model, x, t, loss, delta)
    raise ValueError(f"method must be 'fast' or 'naive', got {method!r}")


# ---- the course's training loop ---------------------------------------------------------------


@dataclass
class NumgradHistory:
    """Step-level record of ``train_numerical``: one entry every ``log_every`` samples.

    ``loss[i]`` is the mean loss of the samples since the previous entry, each measured just
    before that sample's update; ``epoch_loss`` is the mean over each whole epoch.
    """

    steps: list[int] = field(default_factory=list)  # samples seen, over all epochs
    epochs: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # since the start of training
    epoch_loss: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list]:
        """JSON-safe form (history.json)."""
        return {
            "steps": self.steps,
            "epochs": self.epochs,
            "loss": self.loss,
            "seconds": self.seconds,
            "epoch_loss": self.epoch_loss,
        }


def _samples(n: int, shuffle: bool, rng: np.random.Generator) -> Iterator[int]:
    yield from (rng.permutation(n) if shuffle else range(n))


def train_numerical(
    model: Network,
    x: np.ndarray,
    t: np.ndarray,
    lr: float = 0.01,
    loss: str | Loss | None = COURSE_LOSS,
    epochs: int = 1,
    method: Method = "fast",
    sequential_updates: bool = True,
    log_every: int = 200,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    delta: float = DELTA,
    shuffle: bool = False,
    seed: int | None = None,
) -> NumgradHistory:
    """Per-sample SGD with numerical gradients, as the course trains its 784-30-10 net.

    ``sequential_updates=True`` updates the parameter groups one after another within each
    sample (W of layer 0, then b of layer 0 computed with the new W, ...), as the course does;
    False computes all gradients first, then updates. Every ``log_every`` samples a record
    ``{"epoch", "step", "loss", "seconds"}`` is appended to the history and passed to
    ``callback``. Samples go in order unless ``shuffle`` (reproducible with ``seed``).
    Raises TrainingDivergedError when the loss stops being finite.
    """
    if method not in ("fast", "naive"):
        raise ValueError(f"method must be 'fast' or 'naive', got {method!r}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    x, loss_obj = _prepare(model, x, loss)
    t = np.asarray(t)
    if len(t) != len(x):
        raise ValueError(f"{len(x)} inputs but {len(t)} targets")
    groups = param_groups(model)
    rng = np.random.default_rng(seed)
    history = NumgradHistory()
    start = time.perf_counter()
    seen = 0
    for epoch in range(1, epochs + 1):
        window: list[float] = []
        epoch_total = 0.0
        for n in _samples(len(x), shuffle, rng):
            xs, ts = x[n : n + 1], t[n : n + 1]
            sample_loss = _forward_loss(model, xs, ts, loss_obj)
            if not math.isfinite(sample_loss):
                raise TrainingDivergedError(
                    f"loss is {sample_loss} at epoch {epoch}, sample {seen % len(x) + 1}"
                )
            if sequential_updates:
                for k, name in groups:
                    g = _group_gradient(
                        model, xs, ts, loss_obj, k, name, delta, method, CHUNK_BYTES
                    )
                    model.layers[k].params[name] -= lr * g
            else:
                gs = [
                    _group_gradient(model, xs, ts, loss_obj, k, name, delta, method, CHUNK_BYTES)
                    for k, name in groups
                ]
                for (k, name), g in zip(groups, gs, strict=True):
                    model.layers[k].params[name] -= lr * g
            seen += 1
            window.append(sample_loss)
            epoch_total += sample_loss
            if seen % log_every == 0:
                record = {
                    "epoch": epoch,
                    "step": seen,
                    "loss": float(np.mean(window)),
                    "seconds": time.perf_counter() - start,
                }
                history.steps.append(seen)
                history.epochs.append(epoch)
                history.loss.append(record["loss"])
                history.seconds.append(record["seconds"])
                window = []
                if callback is not None:
                    callback(record)
        history.epoch_loss.append(epoch_total / max(1, len(x)))
    return history
