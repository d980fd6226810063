"""Tests for the plots: each writes a real PNG atomically and refuses bad shapes."""

from __future__ import annotations

import subprocess
import sys
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


# ------------------------------------------------------- what the composed grids show

RED = (0xC6, 0x28, 0x28)  # plots._WRONG_COLOR: frames and wrong answers
GREEN = (0x1B, 0x7A, 0x3A)  # plots._RIGHT_COLOR: the true label on a mistake


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def framed_cells(path: Path, color: tuple[int, int, int], side: int, frame: int = 2) -> int:
    """How many tiles wear a ``color`` frame: each frame's top and bottom edges are ``frame``
    rows each of a run of at least ``side`` pixels of that colour (no text makes one)."""
    mask = (pixels(path) == color).all(axis=2)
    padded = np.pad(mask, ((0, 0), (1, 1))).astype(np.int8)
    edges = np.diff(padded, axis=1)
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
    runs = ends[1] - starts[1]  # row-major order: starts and ends pair up
    edge_rows = int((runs >= side).sum())
    assert edge_rows % (2 * frame) == 0
    return edge_rows // (2 * frame)


def ink(path: Path, color: tuple[int, int, int]) -> int:
    return int((pixels(path) == color).all(axis=2).sum())


@pytest.mark.parametrize("count", [1, 7, 12, 25])
def test_misclassified_grid_shows_one_framed_cell_per_mistake(tmp_path: Path, count: int) -> None:
    records = [{"index": i, "label": int(LABELS[i]), "prediction": (int(LABELS[i]) + 1) % 10,
                "confidence": 0.9} for i in range(count)]
    path = tmp_path / "wrong.png"
    width, height = assert_png(path, misclassified_grid(IMAGES, records, path))
    assert framed_cells(path, RED, side=140) == count  # 28 px digits shown 5x
    assert ink(path, GREEN) > 0  # the true labels, in green over the red predictions
    cols = int(np.ceil(np.sqrt(count)))
    assert width >= cols * 140 and height >= int(np.ceil(count / cols)) * (140 + 30)


def test_misclassified_grid_captions_fit_class_names(tmp_path: Path) -> None:
    records = [{"index": i, "label": 9, "prediction": 0, "confidence": 1.0} for i in range(4)]
    digits = assert_png(tmp_path / "d.png", misclassified_grid(IMAGES, records, tmp_path / "d.png"))
    named = misclassified_grid(IMAGES, records, tmp_path / "n.png", class_names=FASHION)
    assert assert_png(tmp_path / "n.png", named)[0] > digits[0]  # wider cells for the names


def test_digit_grid_frames_wrong_answers_red_and_captions_take_room(tmp_path: Path) -> None:
    wrong = [i % 3 == 0 for i in range(25)]  # 9 of 25
    path = tmp_path / "marked.png"
    pairs = zip(LABELS[:25], wrong, strict=True)
    captions = [f"{t}\n→ {(t + 1) % 10}" if w else str(t) for t, w in pairs]
    assert_png(path, digit_grid(IMAGES, captions, path, wrong=wrong))
    assert framed_cells(path, RED, side=112) == 9
    bare = assert_png(tmp_path / "bare.png", digit_grid(IMAGES, None, tmp_path / "bare.png"))
    assert bare[1] < Image.open(path).size[1]  # the captions add height
    assert ink(tmp_path / "bare.png", RED) == 0
    with pytest.raises(ValueError, match="wrong flags"):
        digit_grid(IMAGES, None, tmp_path / "x.png", count=5, wrong=[True])


def test_confusion_matrix_colours_mistakes_red_and_a_perfect_one_not(tmp_path: Path) -> None:
    cm = np.diag(np.full(10, 900)) + np.eye(10, k=1, dtype=int) * 30
    path = tmp_path / "cm.png"
    width, height = assert_png(path, confusion_matrix_plot(cm, path))
    assert 600 < width < 1400 and 600 < height < 1400
    rgb = pixels(path).astype(int)
    reddish = (rgb[..., 0] > 150) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    blueish = (rgb[..., 2] > 90) & (rgb[..., 0] < 40)
    assert reddish.sum() > 9 * 40 * 40 and blueish.sum() > 10 * 40 * 40  # 9 mistakes, 10 hits
    perfect = confusion_matrix_plot(np.diag(np.full(10, 100)), tmp_path / "p.png")
    rgb = pixels(perfect).astype(int)
    assert not ((rgb[..., 0] > 150) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)).any()  # no bar


def test_first_layer_weights_tiles_are_framed(tmp_path: Path) -> None:
    path = tmp_path / "w.png"
    assert_png(path, first_layer_weights(RNG.normal(size=(784, 9)), path))
    assert framed_cells(path, (0xC8, 0xC8, 0xC8), side=84, frame=1) == 9  # 28 px shown 3x
    rgb = pixels(path).astype(int)
    assert ((rgb[..., 0] > 150) & (rgb[..., 2] < 100)).sum() > 0  # red, positive weights
    assert ((rgb[..., 2] > 150) & (rgb[..., 0] < 100)).sum() > 0  # blue, negative weights


@pytest.mark.parametrize("name", ["Reds", "Blues", "RdBu_r", "gray_r", "gray", "viridis"])
def test_colour_maps_are_matplotlibs(name: str) -> None:
    from matplotlib import colormaps

    from mnistlab.reporting.plots import _colorize

    values = np.linspace(-0.2, 1.2, 5001)
    ours = _colorize(values, name, 0.0, 1.0).astype(int)
    theirs = colormaps[name](np.clip(values, 0, 1), bytes=True).astype(int)
    assert np.abs(ours - theirs).max() <= 1


def test_a_runs_pictures_import_no_matplotlib() -> None:
    code = (
        "import sys, numpy as np\n"
        "import mnistlab.reporting.runs\n"
        "from mnistlab.reporting import plots\n"
        "assert 'matplotlib' not in sys.modules\n"
        "import tempfile\n"
        "d = tempfile.mkdtemp()\n"
        "plots.digit_grid(np.zeros((4, 28, 28), np.uint8), [1, 2, 3, 4], d + '/a.png')\n"
        "plots.confusion_matrix_plot(np.eye(3), d + '/b.png')\n"
        "plots.learning_curves({'loss': [1.0, 0.5]}, d + '/c.png', steps=[[0, 2.0], [9, 1.0]])\n"
        "plots.first_layer_weights(np.ones((784, 4)), d + '/e.png')\n"
        "assert 'matplotlib' not in sys.modules, 'the built-in colour maps and fonts do'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


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
