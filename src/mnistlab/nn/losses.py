"""Loss functions: ``forward(y, t) -> float`` caches what ``backward() -> dL/dy`` needs.

Labels ``t`` may be integer class indices of shape (N,) or one-hot / probability
rows of shape (N, K); each loss accepts both.

Cross-entropy after a softmax is computed from the logits z instead of the
probabilities (``forward_logits`` / ``backward_logits``): log-softmax via
log-sum-exp never takes log(0), and the gradient w.r.t. z is exactly (y - t) / N.
The model uses that fused path whenever its output activation is the loss's
``fused_activation``. "sigmoid_crossentropy_sum" only replaces the sigmoid's
backward (``gradient_activation``) by the course's dL/dz = y - t.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7  # the course's guard inside log(y + 1e-7)


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
        return one_hot(t.reshape(-1), y.shape[1], y.dtype)
    raise ValueError(f"labels of shape {t.shape} do not match predictions of shape {y.shape}")


def class_indices(t: np.ndarray) -> np.ndarray | None:
    """Integer labels as a flat (N,) index array, or None when ``t`` is one-hot/probabilities."""
    t = np.asarray(t)
    if np.issubdtype(t.dtype, np.integer) and (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
        return t.reshape(-1)
    return None


def accuracy(y: np.ndarray, t: np.ndarray) -> float:
    """Fraction of rows whose predicted class matches the label (y > 0.5 for one output)."""
    t = np.asarray(t)
    if y.shape[-1] == 1:
        return float(np.mean((y > 0.5) == (t.reshape(y.shape) > 0.5)))
    idx = class_indices(t)
    labels = idx if idx is not None else t.argmax(axis=-1)
    return float(np.mean(y.argmax(axis=-1) == labels))


class Loss:
    """Base class. ``reduction`` says how batch losses combine: "mean" or "sum"."""

    name = ""
    reduction = "mean"
    # After this output activation the loss is computed from the logits (forward_logits)
    # and its gradient taken w.r.t. them (backward_logits).
    fused_activation: str | None = None
    # After this output activation only the gradient starts at the logits: forward works
    # on the outputs as usual, then backward_logits() replaces the activation's backward.
    gradient_activation: str | None = None

    def forward(self, y: np.ndarray, t: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        """dL/dy for the last ``forward``."""
        raise NotImplementedError


class CategoricalCrossentropy(Loss):
    """L = -mean_n sum_k t[n,k] log y[n,k], for integer or one-hot labels."""

    name = "categorical_crossentropy"
    fused_activation = "softmax"

    def forward(self, y: np.ndarray, t: np.ndarray) -> float:
        # y are probabilities (no softmax before us): the course's -sum(t log(y + 1e-7)) / N
        self.y, self.t = y, as_targets(t, y)
        return float(-np.sum(self.t * np.log(y + EPS)) / len(y))

    def backward(self) -> np.ndarray:
        return -self.t / (self.y + EPS) / len(self.y)

    def forward_logits(self, z: np.ndarray, t: np.ndarray) -> float:
        """Loss of softmax(z) computed stably from the logits z (N, K); caches y = softmax(z)."""
        lse = z.max(axis=1, keepdims=True)
        lse += np.log(np.exp(z - lse).sum(axis=1, keepdims=True))  # log sum_k exp z[n,k]
        self.y = np.exp(z - lse)  # softmax(z)
        self.idx = class_indices(t)
        if self.idx is not None:  # -log y[n, t_n] = lse_n - z[n, t_n]
            picked = z[np.arange(len(z)), self.idx]
            return float(np.mean(lse[:, 0] - picked))
        self.t = as_targets(t, z)
        return float(np.sum(self.t * (lse - z)) / len(z))

    def backward_logits(self) -> np.ndarray:
        """dL/dz = (softmax(z) - t) / N: softmax and cross-entropy backward in one step."""
        dz = self.y.copy()
        if self.idx is not None:
            dz[np.arange(len(dz)), self.idx] -= 1
        else:
            dz -= self.t
        dz /= len(dz)
        return dz


class BinaryCrossentropySum(Loss):
    """The course's summed loss: L = -sum(t log(y + 1e-7) + (1 - t) log(1 - y + 1e-7)).

    Summed over samples and outputs (no mean), as the course's full-batch sigmoid
    classifier does; ``backward`` is the exact gradient of that formula.
    """

    name = "binary_crossentropy_sum"
    reduction = "sum"

    def forward(self, y: np.ndarray, t: np.ndarray) -> float:
        self.y, self.t = y, as_targets(t, y)
        t = self.t
        return float(-np.sum(t * np.log(y + EPS) + (1 - t) * np.log(1 - y + EPS)))

    def backward(self) -> np.ndarray:
        y, t = self.y, self.t
        return (1 - t) / (1 - y + EPS) - t / (y + EPS)


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
        """dL/dz = y - t (summed loss: no division by N)."""
        return self.y - self.t


class MeanSquaredError(Loss):
    """L = mean over all elements of (y - t)**2 (Keras "mse")."""

    name = "mse"

    def forward(self, y: np.ndarray, t: np.ndarray) -> float:
        self.diff = y - as_targets(t, y)
        return float(np.mean(self.diff * self.diff))

    def backward(self) -> np.ndarray:
        return 2.0 * self.diff / self.diff.size


LOSS_PATHS = ("logits", "gradient_at_logits", "outputs")


def loss_path(loss: Loss, output_activation: str | None) -> str:
    """How ``loss`` meets an output layer whose activation is ``output_activation``; every
    engine and the numerical gradients follow this one decision:

    - "logits": the loss is computed from the logits and its gradient taken there
      (``forward_logits``/``backward_logits``: softmax + cross-entropy);
    - "gradient_at_logits": the loss from the outputs, its gradient started at the logits
      by ``backward_logits`` (the course's y - t after a sigmoid);
    - "outputs": both from the outputs (``forward``/``backward``).
    """
    if output_activation is None:
        return "outputs"
    if output_activation == loss.fused_activation:
        return "logits"
    if output_activation == loss.gradient_activation:
        return "gradient_at_logits"
    return "outputs"


LOSSES: dict[str, type[Loss]] = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": CategoricalCrossentropy,
    "binary_crossentropy_sum": BinaryCrossentropySum,
    "sigmoid_crossentropy_sum": SigmoidCrossentropySum,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}


def get_loss(loss: str | Loss) -> Loss:
    """A Loss object from a name (see ``LOSSES``) or the object itself."""
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[loss]()
