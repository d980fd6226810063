"""Tests for the plots: each writes a real PNG atomically and refuses bad shapes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from mnistlab.reporting.metrics import confusion_matrix, misclassified
from mnistlab.reporting.plots import (
    compare_curves,
    confusion_matrix_plot,
    digit_grid,
    first_layer_weights,
    learning_curves,
    misclassified_grid,
)

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
LABELS = RNG.integers(0, 10, size=30)
HISTORY = {
    "loss": [0.9, 0.5, 0.3, 0.25],
    "val_loss": [0.95, 0.6, 0.4, 0.41],
    "accuracy": [0.7, 0.85, 0.92, 0.94],
    "val_accuracy": [0.68, 0.83, 0.9, 0.89],
}
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
FASHION += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def assert_png(path: Path, returned: Path) -> tuple[int, int]:
    assert returned == path
    assert path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()
        width, height = img.size
    assert width > 100 and height > 50
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # the atomic writer cleaned up
    return width, height


# --------------------------------------------------------------------------- good input


@pytest.mark.parametrize(
    "images",
    [IMAGES, IMAGES[:, None], IMAGES.reshape(30, 784), IMAGES / 255.0],
    ids=["NHW", "NCHW", "flat", "float"],
)
def test_digit_grid_layouts(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "grid.png"
    assert_png(path, digit_grid(images, LABELS, path, count=25, title="Sample"))


def test_digit_grid_names_no_labels_and_cols(tmp_path: Path) -> None:
    names = [FASHION[i] for i in LABELS]
    wide = assert_png(tmp_path / "a.png", digit_grid(IMAGES, names, tmp_path / "a.png", cols=10))
    assert wide[0] > wide[1]  # 10 columns, 3 rows
    path = tmp_path / "nested" / "dir" / "b.png"  # parents are created
    assert_png(path, digit_grid(IMAGES, None, path, count=3, cmap="gray"))


def test_learning_curves_epochs_steps_and_json_form(tmp_path: Path) -> None:
    assert_png(tmp_path / "a.png", learning_curves(HISTORY, tmp_path / "a.png", title="run"))
    steps = [[200 * i, 2.0 / i] for i in range(1, 50)]
    both = learning_curves(HISTORY, tmp_path / "b.png", steps=steps)
    three_panels = assert_png(tmp_path / "b.png", both)
    json_form = {"history": {"loss": [0.4], "accuracy": [0.92]}, "epoch": [0], "steps": steps}
    one_epoch = assert_png(tmp_path / "c.png", learning_curves(json_form, tmp_path / "c.png"))
    assert three_panels[0] > 2 * one_epoch[0]  # one epoch: just the step curve
    only_steps = learning_curves({}, tmp_path / "d.png", steps=steps)
    assert_png(tmp_path / "d.png", only_steps)
    single = {"loss": [0.3], "val_accuracy": [0.9]}
    assert_png(tmp_path / "e.png", learning_curves(single, tmp_path / "e.png"))


def test_learning_curves_take_a_history_object(tmp_path: Path) -> None:
    history = SimpleNamespace(history=HISTORY, steps=[(1, 2.0), (2, 1.5)], epoch=[0, 1, 2, 3])
    assert_png(tmp_path / "h.png", learning_curves(history, tmp_path / "h.png"))


def test_misclassified_grid_from_records_and_dicts(tmp_path: Path) -> None:
    probs = RNG.random((30, 10))
    records = misclassified(LABELS, probs)
    assert records
    path = tmp_path / "wrong.png"
    assert_png(path, misclassified_grid(IMAGES, records, path, count=12))
    as_dicts = [r.to_dict() for r in records]
    path = tmp_path / "fashion.png"
    assert_png(path, misclassified_grid(IMAGES, as_dicts, path, class_names=FASHION))
    path = tmp_path / "none.png"
    assert_png(path, misclassified_grid(IMAGES, [], path))


@pytest.mark.parametrize("names", [None, FASHION], ids=["digits", "fashion"])
def test_confusion_matrix_plot(tmp_path: Path, names) -> None:
    cm = confusion_matrix(LABELS, RNG.integers(0, 10, 30))
    path = tmp_path / "cm.png"
    assert_png(path, confusion_matrix_plot(cm, path, class_names=names))
    perfect = np.diag(np.full(10, 100))  # no mistakes at all: still a plot
    assert_png(path, confusion_matrix_plot(perfect, path))


@pytest.mark.parametrize(
    "weights",
    [RNG.normal(size=(784, 50)), RNG.normal(size=(32, 1, 5, 5)), RNG.normal(size=(6, 3, 3))],
    ids=["dense", "conv", "conv-3d"],
)
def test_first_layer_weights(tmp_path: Path, weights: np.ndarray) -> None:
    path = tmp_path / "w.png"
    assert_png(path, first_layer_weights(weights, path, count=16))


def test_compare_curves(tmp_path: Path) -> None:
    runs = {
        "mlp": HISTORY,
        "softmax": {"accuracy": [0.8, 0.85, 0.88]},  # no validation: falls back
        "cnn": {"history": {"val_accuracy": [0.98, 0.99]}, "steps": []},
        "no metrics": {"loss": [1.0]},  # left out
    }
    path = tmp_path / "cmp.png"
    assert_png(path, compare_curves(runs, path))
    assert_png(path, compare_curves(runs, path, metric="loss"))


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: digit_grid(np.zeros((4, 27)), None, p), "not square"),
        (lambda p: digit_grid(np.zeros((4, 2, 28, 28)), None, p), "must be"),
        (lambda p: digit_grid(np.zeros(28), None, p), "must be"),
        (lambda p: digit_grid(IMAGES, [1, 2], p, count=5), "2 labels for 5 images"),
        (lambda p: digit_grid(IMAGES, LABELS, p, count=0), "positive integer"),
        (lambda p: digit_grid(IMAGES[:0], None, p), "no images"),
        (lambda p: digit_grid(IMAGES, LABELS, p, cols=0), "cols"),
        (lambda p: learning_curves({}, p), "nothing to plot"),
        (lambda p: learning_curves({"loss": [[1, 2]]}, p), "flat list"),
        (lambda p: learning_curves(HISTORY, p, steps=[1, 2, 3]), "pairs"),
        (lambda p: learning_curves([0.1, 0.2], p), "dict of lists"),
        (
            lambda p: misclassified_grid(IMAGES, [{"index": 99, "label": 1, "prediction": 2}], p),
            "outside the 30 images",
        ),
        (lambda p: misclassified_grid(IMAGES, [{"index": 1}], p), "needs index, label"),
        (lambda p: confusion_matrix_plot(np.ones((3, 4)), p), "square"),
        (lambda p: confusion_matrix_plot(-np.ones((2, 2)), p), "non-negative"),
        (lambda p: confusion_matrix_plot(np.eye(3), p, class_names=["a"]), "1 class names"),
        (lambda p: first_layer_weights(np.ones((783, 5)), p), "square inputs"),
        (lambda p: first_layer_weights(np.ones((8, 3, 5, 5)), p), "one input channel"),
        (lambda p: first_layer_weights(np.ones(784), p), "must be"),
        (lambda p: first_layer_weights(np.full((784, 2), np.nan), p), "NaN"),
        (lambda p: compare_curves({}, p), "no runs"),
        (lambda p: compare_curves({"a": {"loss": [1.0]}}, p), "no run has"),
    ],
)
def test_bad_input_raises_value_error_and_writes_nothing(tmp_path: Path, call, message) -> None:
    path = tmp_path / "out.png"
    with pytest.raises(ValueError, match=message):
        call(path)
    assert list(tmp_path.iterdir()) == []
