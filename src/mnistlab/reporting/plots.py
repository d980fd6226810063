"""The pictures a person wants after training: digits, learning curves, mistakes, the
confusion matrix, first-layer weights, and runs side by side.

Every function draws on a standalone ``matplotlib.figure.Figure`` with an Agg canvas (no
pyplot and no display, so it is safe in servers and threads), writes a PNG atomically
(``mnistlab.atomic.atomic_writer``: a reader never sees half a file) and returns the path.
Bad input shapes raise ``ValueError``.

They are quick, because a run writes seven of them while a person waits: matplotlib is
imported on the first plot, not with this module; image grids (digits, mistakes, weights)
are composed into one RGBA array with NumPy, each tile scaled up by a whole number of
pixels and framed, and put on the figure as one image with the captions as text above
each cell; the confusion matrix is one image plus its numbers; and every figure has a
fixed layout computed from its size (no constrained layout).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnistlab.atomic import atomic_writer

if TYPE_CHECKING:  # matplotlib itself is imported on the first plot (about 0.3 s)
    from matplotlib.figure import Figure

__all__ = [
    "compare_curves",
    "confusion_matrix_plot",
    "digit_grid",
    "first_layer_weights",
    "learning_curves",
    "misclassified_grid",
]

PathLike = str | os.PathLike[str]

_DPI = 110
_DIGIT_CMAP = "gray_r"  # dark ink on white paper: reads well on screens and in print
_WEIGHT_CMAP = "RdBu_r"  # diverging: red positive, blue negative, white zero
_TRAIN_COLOR, _VAL_COLOR = "#1f77b4", "#d62728"
_RIGHT_COLOR, _WRONG_COLOR = "#1b7a3a", "#c62828"  # the true label green, a wrong answer red
_TEXT_COLOR, _FRAME_COLOR = "#222222", "#c8c8c8"


# ------------------------------------------------------------------------------ digits


def digit_grid(
    images: Any,
    labels: Sequence[Any] | np.ndarray | None,
    path: PathLike,
    count: int = 25,
    cols: int | None = None,
    title: str | None = None,
    cmap: str = _DIGIT_CMAP,
    wrong: Sequence[bool] | np.ndarray | None = None,
) -> Path:
    """A grid of the first ``count`` images, each captioned with its label (any value:
    digit, class name, several lines; ``None`` for no captions).

    ``images``: (N, 28, 28), (N, 1, 28, 28) or flat (N, 784); uint8 0..255 or float.
    ``cmap="gray"`` shows them as stored (white on black) instead of ink on paper.
    ``wrong`` (one bool per image shown) marks the images a model got wrong: their frame
    and caption are red, the others' caption dark and frame grey.
    """
    stack = _as_image_stack(images, "images")
    n = _take(count, len(stack))
    if labels is not None and len(labels) < n:
        raise ValueError(f"got {len(labels)} labels for {n} images")
    if wrong is not None and len(wrong) < n:
        raise ValueError(f"got {len(wrong)} wrong flags for {n} images")
    rows, cols = _grid_shape(n, cols)
    flags = [bool(wrong[k]) for k in range(n)] if wrong is not None else [False] * n
    tiles = _colorize(stack[:n], cmap, 0.0, _display_max(stack[:n]))
    captions: list[list[tuple[str, str]]] = [
        [(line, _WRONG_COLOR if flags[k] else _TEXT_COLOR) for line in _text(labels[k]).split("\n")]
        if labels is not None
        else []
        for k in range(n)
    ]
    frames = [_WRONG_COLOR if f else _FRAME_COLOR for f in flags]
    fig = _tile_figure(
        tiles, rows, cols, captions, frames, title, fontsize=10, target=112,
        frame=2 if wrong is not None else 1,
    )
    return _save(fig, path)


def misclassified_grid(
    images: Any,
    records: Sequence[Any],
    path: PathLike,
    count: int = 25,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str = _DIGIT_CMAP,
) -> Path:
    """The first ``count`` mistakes, each captioned "Label: x" (green, the truth) over
    "Prediction: y (confidence)" (red, the model's wrong answer), in a red frame.

    ``records`` are ``mnistlab.reporting.metrics.Misclassification`` (or dicts with ``index``,
    ``label``, ``prediction`` and optionally ``confidence``); ``index`` points into
    ``images``. With no mistakes the PNG says so instead of being empty.
    """
    stack = _as_image_stack(images, "images")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    chosen = [_record(r, len(stack)) for r in list(records)[:count]]
    if not chosen:
        fig = _figure(5, 1.6)
        fig.text(0.5, 0.5, "No misclassified images", ha="center", va="center", fontsize=14)
        return _save(fig, path)
    n = len(chosen)
    rows, cols = _grid_shape(n, None)
    shown = stack[[r[0] for r in chosen]]
    tiles = _colorize(shown, cmap, 0.0, _display_max(shown))
    captions = []
    for _index, label, prediction, confidence in chosen:
        answer = f"Prediction: {_name(prediction, class_names)}"
        if confidence is not None:
            answer += f" ({confidence:.0%})"
        captions.append([(f"Label: {_name(label, class_names)}", _RIGHT_COLOR),
                         (answer, _WRONG_COLOR)])
    fig = _tile_figure(
        tiles, rows, cols, captions, [_WRONG_COLOR] * n,
        title or f"Misclassified ({n} shown)", fontsize=9, target=140, frame=2,
    )
    return _save(fig, path)


def _colorize(stack: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """(N, H, W) values -> (N, H, W, 4) uint8 RGBA through the colour map."""
    from matplotlib import colormaps

    span = (vmax - vmin) or 1.0
    scaled = np.clip((np.asarray(stack, dtype=np.float32) - vmin) / span, 0.0, 1.0)
    return colormaps[cmap](scaled, bytes=True)


def _tile_figure(
    tiles: np.ndarray,
    rows: int,
    cols: int,
    captions: Sequence[Sequence[tuple[str, str]]],
    frames: Sequence[str | None],
    title: str | None,
    *,
    fontsize: float,
    target: int,
    frame: int,
    title_size: float = 12,
) -> Figure:
    """One figure holding ``tiles`` (N, h, w, 4) in a grid as a single pixel-exact image.

    Each tile is scaled up by the whole factor that brings it nearest ``target`` pixels
    high, framed ``frame`` px in its colour (``None``: none) and captioned above with its
    lines of (text, colour). The figure is sized in pixels from the tiles, the captions
    and the title, so nothing needs a layout engine.
    """
    from matplotlib.colors import to_rgba_array

    n, h, w = tiles.shape[:3]
    scale = max(1, round(target / h))
    th, tw = h * scale, w * scale
    line_px = fontsize * _DPI / 72 * 1.22
    lines = max((len(c) for c in captions), default=0)
    caption_h = math.ceil(lines * line_px) + (5 if lines else 0)
    widest = max((len(text) for c in captions for text, _ in c), default=0)
    text_w = math.ceil(widest * fontsize * _DPI / 72 * 0.6)  # DejaVu Sans: ~0.6 em a char
    gap = max(10, frame + 6)
    cell_w, cell_h = max(tw + 2 * frame + gap, text_w + 8), caption_h + th + 2 * frame + gap
    title_lines = title.count("\n") + 1 if title else 0
    title_h = math.ceil(title_lines * title_size * _DPI / 72 * 1.3) + 10 if title else 0
    title_w = (
        max(len(s) for s in title.split("\n")) * title_size * _DPI / 72 * 0.66 if title else 0
    )
    margin = 8
    width = max(cols * cell_w, math.ceil(title_w)) + 2 * margin
    height = rows * cell_h + title_h + 2 * margin - gap // 2
    left = margin + (width - 2 * margin - cols * cell_w) // 2

    canvas = np.full((height, width, 4), 255, dtype=np.uint8)
    frame_rgba = {c: (to_rgba_array(c)[0] * 255).round().astype(np.uint8) for c in set(frames)
                  if c is not None}
    fig = _figure(width / _DPI, height / _DPI)
    for k in range(n):
        r, c = divmod(k, cols)
        x0 = left + c * cell_w + (cell_w - tw - 2 * frame) // 2  # the frame's outer corner
        y0 = margin + title_h + r * cell_h + caption_h
        if frames[k] is not None and frame:
            canvas[y0 : y0 + th + 2 * frame, x0 : x0 + tw + 2 * frame] = frame_rgba[frames[k]]
        tile = tiles[k]
        if scale > 1:
            tile = tile.repeat(scale, axis=0).repeat(scale, axis=1)
        canvas[y0 + frame : y0 + frame + th, x0 + frame : x0 + frame + tw] = tile
        centre = (x0 + frame + tw / 2) / width
        for i, (text, color) in enumerate(reversed(captions[k])):  # upwards from the tile
            y = (height - y0 + 3 + i * line_px) / height
            fig.text(centre, y, text, ha="center", va="bottom", fontsize=fontsize, color=color)
    fig.figimage(canvas, 0, 0, origin="upper", resize=False)
    if title:
        fig.text(0.5, 1 - (margin + 2) / height, title, ha="center", va="top",
                 fontsize=title_size, fontweight="bold", linespacing=1.25)
    return fig


# ---------------------------------------------------------------------- learning curves


def learning_curves(
    history: Any,
    path: PathLike,
    steps: Sequence[Sequence[float]] | None = None,
    title: str | None = None,
) -> Path:
    """Loss (loss, val_loss) and accuracy (accuracy, val_accuracy) per epoch, side by side;
    plus training loss per logged step when ``steps`` [(step, loss), ...] are given.

    ``history`` is the per-epoch dict (Keras ``History.history``), a ``History``-like
    object, or the ``history.json`` dict ``{"history": ..., "steps": ...}``. When there
    is at most one epoch but step-level losses exist (one epoch of per-sample training),
    the step curve is the plot and the epoch's numbers are written on it. The best
    validation accuracy is marked.
    """
    epochs, steps = _unpack_history(history, steps)
    loss_keys = [k for k in epochs if k == "loss" or k.endswith("loss")]
    acc_keys = [k for k in epochs if k in ("accuracy", "val_accuracy", "acc", "val_acc")]
    step_points = _steps_array(steps)
    n_epochs = max((len(v) for v in epochs.values()), default=0)
    if step_points is not None and n_epochs <= 1:
        panels = ["steps"]  # one point per curve says nothing; the steps say it all
    else:
        panels = (["loss"] if loss_keys else []) + (["accuracy"] if acc_keys else [])
        if step_points is not None:
            panels.append("steps")
    if not panels:
        raise ValueError(
            "history has nothing to plot: no loss/accuracy lists and no step-level losses"
        )
    width, height = 4.6 * len(panels) + (0.6 if len(panels) == 1 else 0.0), 3.6
    top = 0.42 + (0.36 if title else 0.0)  # room for the panel titles (and the suptitle)
    height += 0.36 if title else 0.0
    fig = _figure(width, height)
    axes = fig.subplots(1, len(panels), squeeze=False,
                        gridspec_kw=_margins(width, height, len(panels), top=top))[0]
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "loss":
            _epoch_panel(ax, epochs, loss_keys, "Loss")
        elif panel == "accuracy":
            _epoch_panel(ax, epochs, acc_keys, "Accuracy")
            _mark_best(ax, epochs)
        else:
            assert step_points is not None
            _steps_panel(ax, step_points, epochs if n_epochs == 1 else {})
    if title:
        fig.suptitle(title, y=1 - 0.1 / height, va="top", fontsize=12, fontweight="bold")
    return _save(fig, path)


def compare_curves(
    runs: Mapping[str, Any],
    path: PathLike,
    metric: str | None = None,
    title: str | None = None,
) -> Path:
    """Several runs' curves on one plot: ``val_accuracy`` (falling back to ``accuracy``)
    per epoch, or ``metric`` when given. Each run is a history as ``learning_curves``
    takes it; runs lacking the metric are left out, and if none has it, ``ValueError``."""
    if not runs:
        raise ValueError("no runs to compare")
    curves: list[tuple[str, str, np.ndarray]] = []
    for name, run in runs.items():
        epochs, _ = _unpack_history(run, None)
        keys = [metric] if metric else ["val_accuracy", "accuracy", "val_acc", "acc"]
        key = next((k for k in keys if k in epochs and len(epochs[k])), None)
        if key is not None:
            curves.append((str(name), key, epochs[key]))
    if not curves:
        wanted = metric or "val_accuracy or accuracy"
        raise ValueError(f"no run has {wanted} to plot")
    keys_shown = {key for _, key, _ in curves}
    mixed = len(keys_shown) > 1  # some runs lack validation: say which curve is which
    ylabel = "accuracy" if mixed else keys_shown.pop()
    fig = _figure(7.2, 4.4)
    ax = fig.subplots(gridspec_kw=_margins(7.2, 4.4, 1, top=0.42))
    for name, key, values in curves:
        x = np.arange(1, len(values) + 1)
        line = ax.plot(
            x,
            values,
            marker="o" if len(values) < 30 else None,
            markersize=3.5,
            linewidth=1.6,
            label=f"{name} ({key})" if mixed else name,
        )[0]
        finite = np.flatnonzero(np.isfinite(values))
        if finite.size:  # the final value, written at the end of the line
            last = finite[-1]
            ax.annotate(
                _fmt(values[last]),
                (x[last], values[last]),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                color=line.get_color(),
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    _integer_ticks(ax)
    _style(ax)
    ax.legend(fontsize=9, frameon=False, loc="best")
    ax.set_title(title or "Runs compared", fontsize=12, fontweight="bold")
    return _save(fig, path)


# ---------------------------------------------------------------------- model insight


def confusion_matrix_plot(
    cm: Any,
    path: PathLike,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """A heatmap of a confusion matrix (rows = true label, columns = prediction) with the
    count written in each cell.

    The diagonal is blue by the share of its class recognized; mistakes are red, scaled
    to the most common mistake, so a 1% confusion stays visible next to a diagonal of
    thousands. Empty off-diagonal cells are left blank. The cells are one RGBA image.
    """
    matrix = np.asarray(cm)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.number) or (matrix < 0).any():
        raise ValueError("confusion matrix must hold non-negative counts")
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import PercentFormatter

    k = matrix.shape[0]
    names = _class_names(class_names, k)
    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    diagonal = np.eye(k, dtype=bool)
    worst_mistake = float(share[~diagonal].max()) if k > 1 else 0.0
    top = max(worst_mistake, 1e-12) * 1.15  # keep the worst cell readable, not black
    rgba = colormaps["Reds"](np.clip(share / top, 0, 1), bytes=True)
    rgba[diagonal] = colormaps["Blues"](share[diagonal], bytes=True)
    rgba[~diagonal & (matrix == 0)] = 255  # nothing there: blank

    longest = max(len(name) for name in names)
    rotate = longest > 2
    side = max(5.0, 0.6 * k + 1.5) + min(longest, 14) * 0.07
    width, height = side + 1.1, side
    label_in = min(longest, 14) * 0.085  # tick labels' room, inches
    left, bottom = 0.55 + label_in, 0.5 + (label_in * 0.75 if rotate else 0.2)
    right, top_in = 1.25 if worst_mistake > 0 else 0.3, 0.45
    box = min(width - left - right, height - bottom - top_in)  # square cells
    fig = _figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, box / width, box / height))
    ax.imshow(rgba, interpolation="nearest", aspect="auto")
    edges = np.arange(k + 1) - 0.5
    ax.hlines(edges[1:-1], -0.5, k - 0.5, colors="white", linewidth=1.0)
    ax.vlines(edges[1:-1], -0.5, k - 0.5, colors="white", linewidth=1.0)
    fontsize = 9 if k <= 10 else max(5, 9 - (k - 10) // 3)
    for i in range(k):
        for j in range(k):
            count = matrix[i, j]
            if count == 0 and i != j:
                continue
            strong = share[i, j] > 0.55 if i == j else share[i, j] > 0.6 * worst_mistake
            ax.text(
                j,
                i,
                f"{count:,}" if float(count).is_integer() else f"{count:.2f}",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if strong else "#222222",
            )
    ax.set_xticks(
        range(k),
        names,
        rotation=45 if rotate else 0,
        ha="right" if rotate else "center",
        rotation_mode="anchor",
    )
    ax.set_yticks(range(k), names)
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_ylim(k - 0.5, -0.5)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    total = matrix.sum()
    accuracy = np.trace(matrix) / total if total else float("nan")
    ax.set_title(
        title or f"Confusion matrix (accuracy {accuracy:.2%})", fontsize=12, fontweight="bold"
    )
    if worst_mistake > 0:
        bar_h = box * 0.75
        cax = fig.add_axes(((left + box + 0.3) / width, (bottom + (box - bar_h) / 2) / height,
                            0.22 / width, bar_h / height))
        colorbar = fig.colorbar(ScalarMappable(Normalize(0, top), "Reds"), cax=cax)
        colorbar.set_label("mistakes: share of the true class")
        colorbar.ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    return _save(fig, path)


def first_layer_weights(
    weights: Any,
    path: PathLike,
    count: int = 64,
    title: str | None = None,
) -> Path:
    """What the first layer's units look for: each unit's incoming weights as an image.

    ``weights``: a Dense ``W`` of shape (784, k) (one 28x28 image per column; any square
    number of inputs works) or Conv2D filters (k, 1, h, w) / (k, h, w). Diverging
    colours, red positive and blue negative, each tile scaled to its own largest |w| so
    weak units still show their pattern.
    """
    tiles = _weight_tiles(np.asarray(weights))
    n = _take(count, len(tiles))
    rows, cols = _grid_shape(n, None)
    scales = np.abs(tiles[:n]).max(axis=(1, 2), keepdims=True)
    unit = tiles[:n] / np.where(scales > 0, scales, 1.0)  # each tile in -1..1
    rgba = _colorize(unit, _WEIGHT_CMAP, -1.0, 1.0)
    fig = _tile_figure(
        rgba, rows, cols, [[] for _ in range(n)], [_FRAME_COLOR] * n,
        title or f"First-layer weights ({n} of {len(tiles)} units; red +, blue -)",
        fontsize=9, target=80 if tiles.shape[1] < 10 else 84, frame=1, title_size=11,
    )
    return _save(fig, path)


# ---------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    """A standalone figure (inches) on an Agg canvas; its layout is fixed by the caller."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _margins(width: float, height: float, panels: int, *, top: float) -> dict[str, float]:
    """Subplot parameters for ``panels`` axes side by side in a width x height (inches)
    figure: room for tick labels and axis labels, fixed in inches, not computed."""
    left, right, bottom, gap = 0.75, 0.25, 0.58, 0.85
    axis = (width - left - right - gap * (panels - 1)) / panels
    return {"left": left / width, "right": 1 - right / width, "bottom": bottom / height,
            "top": 1 - top / height, "wspace": gap / axis if panels > 1 else 0.2}


def _save(fig: Figure, path: PathLike) -> Path:
    """Write the figure as PNG, atomically, and return the path."""
    target = Path(path)
    with atomic_writer(target) as handle:
        fig.canvas.print_png(handle)
    return target


def _style(ax: Any) -> None:
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _take(count: int, available: int) -> int:
    if not isinstance(count, int | np.integer) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    if available == 0:
        raise ValueError("nothing to plot: no images")
    return min(int(count), available)


def _grid_shape(n: int, cols: int | None) -> tuple[int, int]:
    if cols is None:
        cols = math.ceil(math.sqrt(n))
    elif cols < 1:
        raise ValueError(f"cols must be at least 1, got {cols}")
    cols = min(cols, n)
    return math.ceil(n / cols), cols


def _as_image_stack(images: Any, what: str) -> np.ndarray:
    """(N, H, W) from (N, H, W), (N, 1, H, W) or flat (N, side*side)."""
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 2:
        side = math.isqrt(arr.shape[1])
        if side * side != arr.shape[1] or side == 0:
            raise ValueError(f"{what}: flat rows of {arr.shape[1]} values are not square images")
        arr = arr.reshape(len(arr), side, side)
    if arr.ndim != 3 or 0 in arr.shape[1:]:
        raise ValueError(
            f"{what} must be (N, H, W), (N, 1, H, W) or flat (N, H*W), got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
        if arr.dtype != np.bool_:
            raise ValueError(f"{what} must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.uint8)
    return arr


def _display_max(stack: np.ndarray) -> float:
    """Top of the grey scale: 255 for 0..255 pixels, else the data's maximum (0..1 floats)."""
    if stack.dtype == np.uint8:
        return 255.0
    top = float(np.nanmax(stack)) if stack.size else 1.0
    return 255.0 if top > 1.0 else 1.0


def _text(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value)


def _name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def _class_names(class_names: Sequence[str] | None, k: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(k)]
    if len(class_names) != k:
        raise ValueError(f"got {len(class_names)} class names for a {k}x{k} matrix")
    return [str(name) for name in class_names]


def _record(record: Any, n_images: int) -> tuple[int, int, int, float | None]:
    """(index, label, prediction, confidence) from a Misclassification or a dict."""
    get = record.get if isinstance(record, Mapping) else lambda key: getattr(record, key, None)
    index, label, prediction = get("index"), get("label"), get("prediction")
    if index is None or label is None or prediction is None:
        raise ValueError(f"a record needs index, label and prediction, got {record!r}")
    index = int(index)
    if not 0 <= index < n_images:
        raise ValueError(f"record index {index} is outside the {n_images} images given")
    confidence = get("confidence")
    return index, int(label), int(prediction), None if confidence is None else float(confidence)


def _unpack_history(
    history: Any, steps: Sequence[Sequence[float]] | None
) -> tuple[dict[str, np.ndarray], Sequence[Sequence[float]] | None]:
    """Per-epoch lists (as float arrays) and step-level pairs from any history form."""
    if hasattr(history, "history") and not isinstance(history, Mapping):  # History object
        if steps is None:
            steps = getattr(history, "steps", None)
        history = history.history
    if isinstance(history, Mapping) and isinstance(history.get("history"), Mapping):
        if steps is None:
            steps = history.get("steps")
        history = history["history"]
    if not isinstance(history, Mapping):
        raise ValueError(f"history must be a dict of lists, got {type(history).__name__}")
    epochs: dict[str, np.ndarray] = {}
    for key, values in history.items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
            continue  # metadata such as a run name
        arr = np.asarray(values, dtype=np.float64) if len(values) else np.zeros(0)
        if arr.ndim != 1:
            raise ValueError(f"history[{key!r}] must be a flat list of numbers")
        if arr.size:
            epochs[str(key)] = arr
    return epochs, steps


def _steps_array(steps: Sequence[Sequence[float]] | None) -> np.ndarray | None:
    if steps is None or len(steps) == 0:
        return None
    arr = np.asarray(steps, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"steps must be (step, loss) pairs, got shape {arr.shape}")
    return arr


def _epoch_panel(ax: Any, epochs: Mapping[str, np.ndarray], keys: list[str], name: str) -> None:
    for key in sorted(keys, key=lambda k: (k.startswith("val"), k)):
        values = epochs[key]
        x = np.arange(1, len(values) + 1)
        is_val = key.startswith("val")
        ax.plot(
            x,
            values,
            marker="o" if len(values) < 30 else None,
            markersize=3.5 if len(values) > 1 else 6,
            linewidth=1.6,
            color=_VAL_COLOR if is_val else _TRAIN_COLOR,
            linestyle="--" if is_val else "-",
            label=key.replace("_", " ").replace("val ", "validation "),
        )
        if len(values) == 1:
            ax.annotate(
                _fmt(values[0]),
                (1, values[0]),
                xytext=(8, 0),
                textcoords="offset points",
                va="center",
                fontsize=9,
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel(name.lower())
    ax.set_title(name)
    if max(len(epochs[k]) for k in keys) == 1:
        ax.set_xlim(0.5, 1.5)
        ax.set_xticks([1])
        ax.margins(y=0.2)
    else:
        _integer_ticks(ax)
    _style(ax)
    ax.legend(fontsize=9, frameon=False)


def _steps_panel(ax: Any, points: np.ndarray, epoch_values: Mapping[str, np.ndarray]) -> None:
    """Training loss by logged step; the single epoch's numbers, if any, in a corner."""
    ax.plot(points[:, 0], points[:, 1], color=_TRAIN_COLOR, linewidth=1.2)
    if len(points) == 1:
        ax.plot(points[:, 0], points[:, 1], "o", color=_TRAIN_COLOR)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss by step")
    if epoch_values:
        lines = [f"{key.replace('_', ' ')}: {_fmt(v[-1])}" for key, v in epoch_values.items()]
        ax.text(
            0.97,
            0.95,
            "after the epoch\n" + "\n".join(lines),
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "#bbbbbb"},
        )
    _style(ax)


def _mark_best(ax: Any, epochs: Mapping[str, np.ndarray]) -> None:
    key = next((k for k in ("val_accuracy", "val_acc") if k in epochs), None)
    if key is None or not np.isfinite(epochs[key]).any():
        return
    values = epochs[key]
    if len(values) < 2:
        return  # a single point is its own best
    best = int(np.nanargmax(values))
    ax.plot(best + 1, values[best], marker="*", markersize=12, color=_VAL_COLOR, zorder=5)
    ax.annotate(
        f"best {_fmt(values[best])} (epoch {best + 1})",
        (best + 1, values[best]),
        xytext=(0, -16),
        textcoords="offset points",
        ha="center",
        fontsize=8.5,
        color=_VAL_COLOR,
    )


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.4g}"


def _weight_tiles(w: np.ndarray) -> np.ndarray:
    """(k, h, w) images from Dense (inputs, k) or Conv2D (k, 1, h, w) / (k, h, w) weights."""
    if not np.issubdtype(w.dtype, np.number) or w.dtype == np.bool_:
        raise ValueError(f"weights must be numeric, got dtype {w.dtype}")
    if w.ndim == 4:
        if w.shape[1] != 1:
            raise ValueError(
                f"conv weights must have one input channel (k, 1, h, w), got {w.shape}"
            )
        tiles = w[:, 0]
    elif w.ndim == 3:
        tiles = w
    elif w.ndim == 2:
        side = math.isqrt(w.shape[0])
        if side * side != w.shape[0] or side == 0:
            raise ValueError(
                f"dense weights must be (inputs, units) with square inputs (e.g. 784), "
                f"got {w.shape}"
            )
        tiles = w.T.reshape(w.shape[1], side, side)
    else:
        raise ValueError(f"weights must be (784, k), (k, 1, h, w) or (k, h, w), got {w.shape}")
    if 0 in tiles.shape:
        raise ValueError(f"weights have no units to show: {w.shape}")
    tiles = tiles.astype(np.float64)
    if not np.isfinite(tiles).all():
        raise ValueError("weights contain NaN or infinite values")
    return tiles
