"""Tests for accuracy, the confusion matrix, the mistakes and the JSON report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnistlab.reporting.metrics import (
    Misclassification,
    accuracy,
    confusion_matrix,
    evaluation_report,
    misclassified,
    most_confident_mistakes,
    per_class_accuracy,
    sample_mistakes,
)

Y_TRUE = np.array([0, 1, 2, 2, 1, 0, 3])
PROBS = np.array(
    [
        [0.9, 0.05, 0.05, 0.0],  # 0 -> 0
        [0.1, 0.2, 0.7, 0.0],  # 1 -> 2 (wrong, 0.7)
        [0.0, 0.0, 1.0, 0.0],  # 2 -> 2
        [0.6, 0.1, 0.3, 0.0],  # 2 -> 0 (wrong, 0.6)
        [0.2, 0.8, 0.0, 0.0],  # 1 -> 1
        [0.3, 0.0, 0.0, 0.7],  # 0 -> 3 (wrong, 0.7)
        [0.0, 0.1, 0.0, 0.9],  # 3 -> 3
    ]
)


def naive_confusion(y_true, y_pred, k):
    cm = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        cm[t, p] += 1
    return cm


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 12),
    data=st.data(),
)
def test_confusion_matrix_matches_a_plain_loop(k, data) -> None:
    n = data.draw(st.integers(0, 200))
    y_true = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), int)
    y_pred = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), int)
    cm = confusion_matrix(y_true, y_pred, num_classes=k)
    assert cm.dtype == np.int64 and cm.shape == (k, k)
    assert np.array_equal(cm, naive_confusion(y_true, y_pred, k))
    assert cm.sum() == n
    if n:
        assert accuracy(y_true, y_pred) == pytest.approx(np.trace(cm) / n)


def test_rows_are_true_labels_columns_predictions() -> None:
    cm = confusion_matrix([3, 3, 3], [1, 1, 3], num_classes=4)
    assert cm[3, 1] == 2 and cm[3, 3] == 1 and cm.sum() == 3


def test_accuracy_accepts_scores_and_one_hot() -> None:
    one_hot = np.eye(4)[Y_TRUE]
    assert accuracy(Y_TRUE, PROBS) == pytest.approx(4 / 7)
    assert accuracy(one_hot, PROBS) == pytest.approx(4 / 7)
    assert accuracy(Y_TRUE, PROBS.argmax(1)) == pytest.approx(4 / 7)
    assert accuracy([1.0, 2.0], [1, 2]) == 1.0  # whole-number floats are labels


def test_per_class_accuracy_is_recall_and_nan_for_absent_classes() -> None:
    cm = confusion_matrix(Y_TRUE, PROBS.argmax(1), num_classes=5)
    result = per_class_accuracy(cm)
    assert result[:4] == pytest.approx([0.5, 0.5, 0.5, 1.0])
    assert np.isnan(result[4])


def test_misclassified_records_sorted_by_index() -> None:
    records = misclassified(Y_TRUE, PROBS)
    assert records == [
        Misclassification(1, 1, 2, 0.7),
        Misclassification(3, 2, 0, 0.6),
        Misclassification(5, 0, 3, 0.7),
    ]
    assert all(isinstance(r.index, int) and isinstance(r.confidence, float) for r in records)


def test_most_confident_and_seeded_sample() -> None:
    records = misclassified(Y_TRUE, PROBS)
    assert [r.index for r in most_confident_mistakes(records, 2)] == [1, 5]  # ties by index
    assert most_confident_mistakes(records, 0) == []
    a = sample_mistakes(records, 2, seed=4)
    assert a == sample_mistakes(records, 2, seed=4)
    assert len(a) == 2 and [r.index for r in a] == sorted(r.index for r in a)
    assert sample_mistakes(records, 10) == records


def test_evaluation_report_is_json_safe_and_complete() -> None:
    report = evaluation_report(
        Y_TRUE, PROBS, loss=np.float32(0.25), class_names=["a", "b", "c", "d"]
    )
    text = json.dumps(report, allow_nan=False)  # raises on NaN or numpy types
    again = json.loads(text)
    assert again["num_samples"] == 7
    assert again["accuracy"] == pytest.approx(4 / 7)
    assert again["errors"] == 3
    assert again["loss"] == 0.25
    assert again["per_class_accuracy"] == pytest.approx([0.5, 0.5, 0.5, 1.0])
    assert again["confusion_matrix"][2] == [1, 0, 1, 0]
    assert again["misclassified"][0] == {"index": 1, "label": 1, "prediction": 2, "confidence": 0.7}
    assert again["class_names"] == ["a", "b", "c", "d"]


def test_report_absent_class_is_null_and_misclassified_can_be_capped() -> None:
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.1, 0.9, 0], [0.4, 0.6, 0], [0.9, 0.1, 0], [0.2, 0.8, 0]])
    report = evaluation_report(y, probs, max_misclassified=2)
    assert report["per_class_accuracy"][2] is None
    assert "loss" not in report
    assert [m["index"] for m in report["misclassified"]] == [0, 2]  # surest two, by index
    json.dumps(report, allow_nan=False)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: accuracy([1, 2, 3], [1, 2]), "3 true labels but 2 predictions"),
        (lambda: accuracy([], []), "zero samples"),
        (lambda: confusion_matrix([0, 10], [0, 1]), "label 10, out of range for 10 classes"),
        (lambda: confusion_matrix([0, 1], [0, -1]), "negative label"),
        (lambda: confusion_matrix([0, 1], [0, 1], num_classes=0), "positive integer"),
        (lambda: confusion_matrix([0.5, 1], [0, 1]), "whole-number"),
        (lambda: confusion_matrix(["a"], [0]), "integer class labels"),
        (lambda: misclassified([0, 1], np.ones((3, 10))), "2 true labels but 3 predictions"),
        (lambda: misclassified([0, 1], np.ones(2)), r"shape \(N, C\)"),
        (lambda: misclassified([0, 4], np.ones((2, 4))), "out of range for 4 classes"),
        (lambda: misclassified([0, 1], np.full((2, 3), np.nan)), "NaN"),
        (lambda: evaluation_report([0], np.ones((1, 2)), loss=float("nan")), "finite"),
        (lambda: evaluation_report([0], np.ones((1, 2)), class_names=["x"]), "1 class names"),
        (lambda: per_class_accuracy(np.ones((2, 3))), "square"),
        (lambda: most_confident_mistakes([], -1), "non-negative"),
        (lambda: accuracy(np.eye(3), np.ones((3, 3, 1))), r"labels \(N,\) or rows"),
        (lambda: confusion_matrix([0], np.ones((1, 4)), num_classes=5), "4 columns"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()
