"""Evaluation numbers: accuracy, confusion matrix, per-class accuracy and the mistakes.

Labels may be given as class indices ``(N,)`` or one-hot rows ``(N, C)`` (the textbook
loader's ``one_hot_label=True``); predictions as class indices ``(N,)`` or scores
``(N, C)`` (probabilities or logits), reduced with argmax. Inputs are checked, and bad
ones raise ``ValueError`` saying what is wrong, never a silently wrong number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "Misclassification",
    "accuracy",
    "confusion_matrix",
    "evaluation_report",
    "misclassified",
    "most_confident_mistakes",
    "per_class_accuracy",
    "sample_mistakes",
]


@dataclass(frozen=True)
class Misclassification:
    """One wrongly classified sample: where it is, what it is, what the model said, and
    the probability the model gave its (wrong) answer."""

    index: int
    label: int
    prediction: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of samples whose predicted class equals the true class."""
    labels = _labels(y_true, "y_true")
    predicted = _labels(y_pred, "y_pred")
    _same_length(labels, predicted)
    if labels.size == 0:
        raise ValueError("accuracy of zero samples is undefined")
    return float(np.mean(labels == predicted))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int = 10) -> np.ndarray:
    """Counts ``(num_classes, num_classes)`` int64: row = true label, column = prediction."""
    if not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    labels = _labels(y_true, "y_true", num_classes)
    predicted = _labels(y_pred, "y_pred", num_classes)
    _same_length(labels, predicted)
    flat = labels * num_classes + predicted  # one bin per (true, predicted) pair
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def per_class_accuracy(cm: Any) -> np.ndarray:
    """Accuracy within each true class (recall): diagonal / row sum; NaN for a class with
    no samples, so an absent class is not reported as 0% or 100%."""
    matrix = np.asarray(cm)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.number) or (matrix < 0).any():
        raise ValueError("confusion matrix must hold non-negative counts")
    totals = matrix.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / totals, np.nan)


def misclassified(y_true: Any, probs: Any) -> list[Misclassification]:
    """Every sample whose argmax prediction is wrong, sorted by index; ``confidence`` is
    the score of the predicted class (a probability when ``probs`` are probabilities)."""
    scores = _scores(probs)
    labels = _labels(y_true, "y_true", scores.shape[1])
    _same_length(labels, scores)
    predicted = scores.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    return [
        Misclassification(int(i), int(labels[i]), int(predicted[i]), float(scores[i, predicted[i]]))
        for i in wrong
    ]


def most_confident_mistakes(
    records: Sequence[Misclassification], count: int
) -> list[Misclassification]:
    """The ``count`` mistakes the model was surest of (highest confidence first; ties by
    index): the ones most worth a look, often mislabelled data."""
    _check_count(count)
    return sorted(records, key=lambda r: (-r.confidence, r.index))[:count]


def sample_mistakes(
    records: Sequence[Misclassification], count: int, seed: int | None = 0
) -> list[Misclassification]:
    """A random pick of ``count`` mistakes (all if fewer), reproducible for a given seed,
    returned sorted by index."""
    _check_count(count)
    if count >= len(records):
        return list(records)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(records), size=count, replace=False)
    return sorted((records[int(i)] for i in chosen), key=lambda r: r.index)


def evaluation_report(
    y_true: Any,
    probs: Any,
    loss: float | None = None,
    *,
    class_names: Sequence[str] | None = None,
    max_misclassified: int | None = None,
) -> dict[str, Any]:
    """Everything an evaluation says, as a JSON-safe dict (plain ints, floats, lists;
    ``None`` where a value is undefined), ready for ``metrics.json``.

    Keys: ``num_samples``, ``accuracy``, ``errors``, ``loss`` (when given),
    ``per_class_accuracy`` (list, ``None`` for absent classes), ``confusion_matrix``
    (nested lists, rows = true label), ``misclassified`` (list of dicts sorted by index,
    at most ``max_misclassified``, the most confident mistakes when cut) and
    ``class_names`` (when given).
    """
    scores = _scores(probs)
    num_classes = scores.shape[1]
    labels = _labels(y_true, "y_true", num_classes)
    _same_length(labels, scores)
    if labels.size == 0:
        raise ValueError("cannot report on zero samples")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")
    predicted = scores.argmax(axis=1)
    cm = confusion_matrix(labels, predicted, num_classes)
    mistakes = misclassified(labels, scores)
    if max_misclassified is not None and len(mistakes) > max_misclassified:
        kept = most_confident_mistakes(mistakes, max_misclassified)
        mistakes = sorted(kept, key=lambda r: r.index)
    report: dict[str, Any] = {
        "num_samples": int(labels.size),
        "accuracy": float(np.mean(labels == predicted)),
        "errors": int(np.count_nonzero(labels != predicted)),
    }
    if loss is not None:
        loss = float(loss)
        if not math.isfinite(loss):
            raise ValueError(f"loss must be finite, got {loss}")
        report["loss"] = loss
    report["per_class_accuracy"] = [
        None if math.isnan(v) else float(v) for v in per_class_accuracy(cm)
    ]
    report["confusion_matrix"] = cm.tolist()
    report["misclassified"] = [r.to_dict() for r in mistakes]
    if class_names is not None:
        report["class_names"] = [str(name) for name in class_names]
    return report


# ---------------------------------------------------------------------------- helpers


def _labels(values: Any, what: str, num_classes: int | None = None) -> np.ndarray:
    """Class indices (N,) int64 from indices or one-hot/score rows; range-checked when
    ``num_classes`` is given."""
    arr = np.asarray(values)
    if arr.ndim == 2:
        if arr.shape[1] == 0:
            raise ValueError(f"{what} has shape {arr.shape}: no classes")
        if num_classes is not None and arr.shape[1] != num_classes:
            raise ValueError(f"{what} has {arr.shape[1]} columns, expected {num_classes} classes")
        _check_finite(arr, what)
        return arr.argmax(axis=1).astype(np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be labels (N,) or rows (N, C), got shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{what} must hold integer class labels, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.integer):
        _check_finite(arr, what)
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{what} must hold whole-number class labels")
    ints = arr.astype(np.int64)
    if ints.size and ints.min() < 0:
        raise ValueError(f"{what} has a negative label ({int(ints.min())})")
    if num_classes is not None and ints.size and ints.max() >= num_classes:
        raise ValueError(
            f"{what} has label {int(ints.max())}, out of range for {num_classes} classes"
        )
    return ints


def _scores(probs: Any) -> np.ndarray:
    """Scores (N, C) float64, finite."""
    arr = np.asarray(probs)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"probs must be scores of shape (N, C), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
        raise ValueError(f"probs must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    _check_finite(arr, "probs")
    return arr


def _check_finite(arr: np.ndarray, what: str) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values")


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(f"got {len(a)} true labels but {len(b)} predictions")


def _check_count(count: int) -> None:
    if not isinstance(count, int | np.integer) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
