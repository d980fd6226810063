"""Loss functions: ``forward(y, t, sample_weight=None) -> float`` caches what
``backward() -> dL/dy`` needs.

Labels ``t`` may be integer class indices of shape (N,) (whole-number floats too, as
``np.loadtxt`` returns them) or one-hot / probability rows of shape (N, K); each loss
accepts both. ``check_targets`` refuses labels that do not fit the model, before training.

The Keras losses reduce as Keras's "sum_over_batch_size": each sample's loss l_i (over its
outputs) times its weight w_i (``sample_weight``, 1 when None), summed, divided by N. The
course's ``*_sum`` losses sum instead (``reduction = "sum"``).

Cross-entropy after a softmax is computed from the logits z instead of the
probabilities (``forward_logits`` / ``backward_logits``): log-softmax via
log-sum-exp never takes log(0), and the gradient w.r.t. z is exactly w (y - t) / N.
The model uses that path whenever its output activation is the loss's
``fused_activation``, or, for a loss built with ``from_logits=True``, when the output
layer has no activation ("linear"). "sigmoid_crossentropy_sum" and "binary_crossentropy"
after a sigmoid only replace the sigmoid's backward (``gradient_activation``) by
dL/dz = y - t (scaled by the reduction).
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-7  # the course's guard inside log(y + 1e-7), and Keras's epsilon() for its clips


def one_hot(t: np.ndarray, num_classes: int, dtype: np.dtype | str = "float32") -> np.ndarray:
    """Integer labels (N,) -> one-hot rows (N, num_classes)."""
    out = np.zeros((len(t), num_classes), dtype=dtype)
    out[np.arange(len(t)), t] = 1
    return out


def as_targets(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Targets in the shape of ``y`` (one-hot for integer labels), in y's dtype."""
    t = np.asarray(t)
    if t.shape == y.shape:
        return t.astype(y.dtype, copy=False)
    if y.ndim == 2 and t.shape in ((len(y),), (len(y), 1)):
        if y.shape[1] == 1:  # binary output: labels are 0/1 values
            return t.reshape(y.shape).astype(y.dtype, copy=False)
        return one_hot(t.reshape(-1).astype(np.int64, copy=False), y.shape[1], y.dtype)
    raise ValueError(f"labels of shape {t.shape} do not match predictions of shape {y.shape}")


def class_indices(t: np.ndarray) -> np.ndarray | None:
    """Class labels as a flat (N,) int index array, or None when ``t`` is one-hot rows.

    Integer labels of shape (N,) or (N, 1), and float labels of shape (N,) (whole numbers:
    ``check_targets`` refuses others), are indices."""
    t = np.asarray(t)
    if np.issubdtype(t.dtype, np.integer) and (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
        return t.reshape(-1)
    if t.ndim == 1 and np.issubdtype(t.dtype, np.floating):
        return t.astype(np.int64)
    return None


def accuracy(y: np.ndarray, t: np.ndarray) -> float:
    """Fraction of rows whose predicted class matches the label (y > 0.5 for one output)."""
    t = np.asarray(t)
    if y.shape[-1] == 1:
        return float(np.mean((y > 0.5) == (t.reshape(y.shape) > 0.5)))
    idx = class_indices(t)
    labels = idx if idx is not None else t.argmax(axis=-1)
    return float(np.mean(y.argmax(axis=-1) == labels))


def _weights(sample_weight: Any, n: int, dtype: np.dtype) -> np.ndarray | None:
    """``sample_weight`` as an (n, 1) column in the outputs' dtype, or None."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=dtype).reshape(-1)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have one weight per sample, shape ({n},), "
                         f"got {np.shape(sample_weight)}")
    return w[:, None]


class Loss:
    """Base class. ``reduction`` says how batch losses combine: "mean" (Keras's
    sum_over_batch_size, weighted) or "sum"."""

    name = ""
    reduction = "mean"
    from_logits = False  # True: the loss takes the logits (an output layer without activation)
    # After this output activation the loss is computed from the logits (forward_logits)
    # and its gradient taken w.r.t. them (backward_logits).
    fused_activation: str | None = None
    # After this output activation only the gradient starts at the logits: forward works
    # on the outputs as usual, then backward_logits() replaces the activation's backward.
    gradient_activation: str | None = None

    def __init__(self, from_logits: bool = False) -> None:
        """Every loss takes ``from_logits`` (so every config rebuilds its loss); only the
        cross-entropies that override this accept True."""
        if from_logits:
            raise ValueError(f"loss {self.name!r} has no from_logits=True form")

    def forward(self, y: np.ndarray, t: np.ndarray, sample_weight: Any = None) -> float:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        """dL/dy for the last ``forward``."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """What rebuilds this loss: ``get_loss(loss.get_config())``."""
        return {"name": self.name, "from_logits": self.from_logits}

    def __repr__(self) -> str:
        args = "from_logits=True" if self.from_logits else ""
        return f"{type(self).__name__}({args})"


class CategoricalCrossentropy(Loss):
    """Keras's categorical cross-entropy, for integer or one-hot labels:
    l_n = -sum_k t[n,k] log p[n,k], L = sum_n w_n l_n / N.

    From probabilities y (``from_logits=False``), as Keras: p = clip(y / sum_k y, eps,
    1 - eps). After a softmax output, and with ``from_logits=True``, from the logits z:
    log p = z - logsumexp(z), computed stably."""

    name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = bool(from_logits)
        self.fused_activation = None if self.from_logits else "softmax"

    def forward(self, y: np.ndarray, t: np.ndarray, sample_weight: Any = None) -> float:
        if self.from_logits:  # y are logits (an output activation was given anyway)
            return self.forward_logits(y, t, sample_weight)
        self.y, self.t = y, as_targets(t, y)
        self.w = _weights(sample_weight, len(y), y.dtype)
        self.s = y.sum(axis=1, keepdims=True)
        p = y / self.s
        self.p, self.q = p, np.clip(p, EPS, 1 - EPS)
        per_sample = -np.sum(self.t * np.log(self.q), axis=1, keepdims=True)
        if self.w is not None:
            per_sample = per_sample * self.w
        return float(np.sum(per_sample) / len(y))

    def backward(self) -> np.ndarray:
        if self.from_logits:
            return self.backward_logits()
        p, q = self.p, self.q
        g = -self.t / q * ((p >= EPS) & (p <= 1 - EPS))  # dl/dp; the clip passes none outside
        if self.w is not None:
            g = g * self.w
        # p = y / s: dl/dy_j = (g_j - sum_k g_k p_k) / s
        return (g - np.sum(g * p, axis=1, keepdims=True)) / self.s / len(p)

    def forward_logits(self, z: np.ndarray, t: np.ndarray, sample_weight: Any = None) -> float:
        """Loss of softmax(z) computed stably from the logits z (N, K); caches y = softmax(z)."""
        lse = z.max(axis=1, keepdims=True)
        lse += np.log(np.exp(z - lse).sum(axis=1, keepdims=True))  # log sum_k exp z[n,k]
        self.y = np.exp(z - lse)  # softmax(z)
        self.w = _weights(sample_weight, len(z), z.dtype)
        self.idx = class_indices(t)
        if self.idx is not None:  # -log y[n, t_n] = lse_n - z[n, t_n]
            per_sample = lse[:, 0] - z[np.arange(len(z)), self.idx]
        else:
            self.t = as_targets(t, z)
            per_sample = np.sum(self.t * (lse - z), axis=1)
        if self.w is None:
            return float(np.mean(per_sample))
        return float(np.dot(per_sample, self.w[:, 0]) / len(z))

    def backward_logits(self) -> np.ndarray:
        """dL/dz = w (softmax(z) - t) / N: softmax and cross-entropy backward in one step."""
        dz = self.y.copy()
        if self.idx is not None:
            dz[np.arange(len(dz)), self.idx] -= 1
        else:
            dz -= self.t
        if self.w is not None:
            dz *= self.w
        dz /= len(dz)
        return dz


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Keras's sparse name for the same loss: integer labels (N,); one-hot rows work too."""

    name = "sparse_categorical_crossentropy"


class BinaryCrossentropy(Loss):
    """Keras's binary cross-entropy: l_n = mean_k of -(t log p + (1 - t) log(1 - p)),
    L = sum_n w_n l_n / N.

    From probabilities (``from_logits=False``) p = clip(y, eps, 1 - eps), and after a sigmoid
    output the gradient starts at the logits: dL/dz = w (y - t) / (N K) (the clip's zero
    gradient where a sigmoid saturates is not kept). From logits (``from_logits=True``):
    l = max(z, 0) - z t + log(1 + exp(-|z|)), which never overflows."""

    name = "binary_crossentropy"

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = bool(from_logits)
        self.gradient_activation = None if self.from_logits else "sigmoid"

    def _reduce(self, per_element: np.ndarray, sample_weight: Any) -> float:
        self.w = _weights(sample_weight, len(per_element), per_element.dtype)
        self.scale = 1.0 / per_element.size  # 1 / (N K)
        if self.w is None:
            return float(np.mean(per_element))
        return float(np.sum(per_element * self.w) * self.scale)

    def forward(self, y: np.ndarray, t: np.ndarray, sample_weight: Any = None) -> float:
        if self.from_logits:
            return self.forward_logits(y, t, sample_weight)
        self.y, self.t = y, as_targets(t, y)
        self.q = np.clip(y, EPS, 1 - EPS)
        t = self.t
        return self._reduce(-(t * np.log(self.q) + (1 - t) * np.log(1 - self.q)), sample_weight)

    def backward(self) -> np.ndarray:
        if self.from_logits:
            return self.backward_logits()
        y, q, t = self.y, self.q, self.t
        d = (q - t) / (q * (1 - q)) * ((y >= EPS) & (y <= 1 - EPS))
        return self._scaled(d)

    def forward_logits(self, z: np.ndarray, t: np.ndarray, sample_weight: Any = None) -> float:
        """The loss of sigmoid(z) from the logits z; caches y = sigmoid(z)."""
        self.t = as_targets(t, z)
        e = np.exp(-np.abs(z))
        self.y = np.where(z >= 0, 1 / (1 + e), e / (1 + e))  # sigmoid(z), stably
        return self._reduce(np.maximum(z, 0) - z * self.t + np.log1p(e), sample_weight)

    def backward_logits(self) -> np.ndarray:
        """dL/dz = w (sigmoid(z) - t) / (N K)."""
        return self._scaled(self.y - self.t)

    def _scaled(self, d: np.ndarray) -> np.ndarray:
        d = d * self.scale
        return d if self.w is None else d * self.w


class BinaryCrossentropySum(Loss):
    """The course's summed loss: L = -sum(t log(y + 1e-7) + (1 - t) log(1 - y + 1e-7)).

    Summed over samples and outputs (no mean), as the course's full-batch sigmoid
    classifier does (each sample's sum times its weight, if given); ``backward`` is the
    exact gradient of that formula.
    """

    name = "binary_crossentropy_sum"
    reduction = "sum"

    def forward(self, y: np.ndarray, t: np.ndarray, sample_weight: Any = None) -> float:
        self.y, self.t = y, as_targets(t, y)
        self.w = _weights(sample_weight, len(y), y.dtype)
        t = self.t
        per_element = t * np.log(y + EPS) + (1 - t) * np.log(1 - y + EPS)
        if self.w is not None:
            per_element = per_element * self.w
        return float(-np.sum(per_element))

    def backward(self) -> np.ndarray:
        y, t = self.y, self.t
        d = (1 - t) / (1 - y + EPS) - t / (y + EPS)
        return d if self.w is None else d * self.w


class SigmoidCrossentropySum(BinaryCrossentropySum):
    """The same summed loss, back-propagated the way the course's code does after a sigmoid
    output: dL/dz = y - t w.r.t. the logits.

    That is the exact gradient without the 1e-7 guards (it differs from the guarded one by
    a relative 1e-7 / min(y, 1 - y)), and unlike the guarded one it does not vanish when
    raw 0-255 pixels saturate the sigmoids, which is how the course's one-layer classifier
    learns at all.
    """

    name = "sigmoid_crossentropy_sum"
    gradient_activation = "sigmoid"

    def backward_logits(self) -> np.ndarray:
        """dL/dz = w (y - t) (summed loss: no division by N)."""
        d = self.y - self.t
        return d if self.w is None else d * self.w


class MeanSquaredError(Loss):
    """Keras's "mse": l_n = mean_k (y - t)**2, L = sum_n w_n l_n / N (without weights, the
    mean over all elements)."""

    name = "mse"

    def forward(self, y: np.ndarray, t: np.ndarray, sample_weight: Any = None) -> float:
        self.diff = y - as_targets(t, y)
        self.w = _weights(sample_weight, len(y), y.dtype)
        if self.w is None:
            return float(np.mean(self.diff * self.diff))
        return float(np.sum(self.diff * self.diff * self.w) / self.diff.size)

    def backward(self) -> np.ndarray:
        d = 2.0 * self.diff / self.diff.size
        return d if self.w is None else d * self.w


LOSS_PATHS = ("logits", "gradient_at_logits", "outputs")


def loss_path(loss: Loss, output_activation: str | None) -> str:
    """How ``loss`` meets an output layer whose activation is ``output_activation``; every
    engine and the numerical gradients follow this one decision:

    - "logits": the loss is computed from the logits and its gradient taken there
      (``forward_logits``/``backward_logits``): softmax + cross-entropy, or a
      ``from_logits=True`` loss after an output layer without activation ("linear");
    - "gradient_at_logits": the loss from the outputs, its gradient started at the logits
      by ``backward_logits`` (y - t after a sigmoid);
    - "outputs": both from the outputs (``forward``/``backward``; a from_logits loss takes
      them as logits).
    """
    if output_activation is None:
        return "outputs"
    if loss.from_logits:
        return "logits" if output_activation == "linear" else "outputs"
    if output_activation == loss.fused_activation:
        return "logits"
    if output_activation == loss.gradient_activation:
        return "gradient_at_logits"
    return "outputs"


BINARY_LOSSES = (BinaryCrossentropy, BinaryCrossentropySum)


def check_targets(y: Any, n_outputs: int, loss: Loss | None, what: str = "y") -> None:
    """Refuse, with one ValueError naming ``what``, the first bad index and the fix, targets
    that would train silently wrong on a model with ``n_outputs`` outputs under ``loss``:
    non-finite values; class labels outside [0, n_outputs); labels other than whole numbers
    for a multi-output model; one-hot rows of another width; targets outside [0, 1] for a
    binary cross-entropy. Whole-number float labels (3.0) are fine: they are used as ints."""
    t = np.asarray(y)
    if t.dtype == bool:
        t = t.astype(np.int8)
    if not (np.issubdtype(t.dtype, np.integer) or np.issubdtype(t.dtype, np.floating)):
        raise ValueError(f"{what} must hold numbers, got an array of {t.dtype}")
    flat = t.reshape(len(t), -1) if t.ndim else t.reshape(1, 1)
    if np.issubdtype(t.dtype, np.floating):
        bad = ~np.isfinite(flat).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{what}[{i}] is not finite ({t[i]}): drop or fix that sample")
    binary = isinstance(loss, BINARY_LOSSES)
    labels = t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1 and n_outputs != 1)
    if t.ndim > 2 or (t.ndim == 2 and not labels and t.shape[1] != n_outputs):
        raise ValueError(f"{what} has shape {t.shape}: rows of width {t.shape[-1]}, but the "
                         f"model has {n_outputs} outputs; give labels of shape (N,) or "
                         f"one-hot rows of shape (N, {n_outputs}), or change the last layer")
    if n_outputs == 1 or (binary and not labels):
        if binary:
            bad = ((flat < 0) | (flat > 1)).any(axis=1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{what}[{i}] is {t[i]}, but a binary cross-entropy needs targets in "
                    f"[0, 1] (labels 0 or 1); for {int(flat.max()) + 1} classes use "
                    "Dense(n_classes, 'softmax') with sparse_categorical_crossentropy")
        return
    if not labels:
        return
    v = flat[:, 0]
    if np.issubdtype(t.dtype, np.floating):
        bad = v != np.floor(v)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{what}[{i}] is {v[i]}: a model with {n_outputs} outputs takes class labels "
                f"(whole numbers 0..{n_outputs - 1}) of shape (N,), or one-hot rows of shape "
                f"(N, {n_outputs}); round or one-hot encode the labels")
    bad = (v < 0) | (v >= n_outputs)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        label = int(v[i])
        raise ValueError(
            f"{what}[{i}] is class {label}, but the model has {n_outputs} outputs (classes "
            f"0..{n_outputs - 1}); give the last layer {int(v.max()) + 1} units, or relabel")


LOSSES: dict[str, type[Loss]] = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "binary_crossentropy_sum": BinaryCrossentropySum,
    "sigmoid_crossentropy_sum": SigmoidCrossentropySum,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    # Keras's class names, as Keras's get() takes them
    "CategoricalCrossentropy": CategoricalCrossentropy,
    "SparseCategoricalCrossentropy": SparseCategoricalCrossentropy,
    "BinaryCrossentropy": BinaryCrossentropy,
    "MeanSquaredError": MeanSquaredError,
}


def get_loss(loss: str | dict | Loss) -> Loss:
    """A Loss object from a name (see ``LOSSES``), a ``get_config()`` dict
    ({"name": ..., "from_logits": ...}), or the object itself."""
    if isinstance(loss, Loss):
        return loss
    config = dict(loss) if isinstance(loss, dict) else {"name": loss}
    name = config.pop("name", None)
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name](from_logits=bool(config.pop("from_logits", False)))
