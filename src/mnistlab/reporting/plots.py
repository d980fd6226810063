"""The pictures a person wants after training: digits, learning curves, mistakes, the
confusion matrix, first-layer weights, and runs side by side.

Every function writes a PNG atomically (``mnistlab.atomic.atomic_writer``: a reader never
sees half a file) and returns the path; bad input shapes raise ``ValueError``. Nothing
touches pyplot or a display, so all of it is safe in servers and threads.

They are quick, because a run writes seven of them while a person waits (together well
under 0.3 s: ``benchmarks/bench_report.py``). The pictures a run leaves are drawn as pixels,
with no matplotlib figure (whose import alone takes ~0.3 s): image grids (digits,
mistakes, weights) are one RGBA array composed with NumPy, each tile scaled up by a whole
number of pixels and framed, with Pillow captions above each cell; the confusion matrix is
NumPy cells with Pillow text; the learning curves are drawn by Pillow at twice the size
and scaled down, for smooth lines. The text is matplotlib's DejaVu Sans and the colour
maps are matplotlib's, so they look like its plots. Only ``compare_curves`` (several
runs, not written by a run) uses a ``matplotlib.figure.Figure``, imported when called, on
an Agg canvas with a fixed layout.

One module, though long: the pictures share one small drawing kit (text, axes, ticks,
colour maps, framed image grids) that exists only because a run must write its pictures in
well under 0.3 s; keeping that kit beside its only users keeps it from growing into a
plotting library of its own.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnistlab.atomic import atomic_writer

if TYPE_CHECKING:  # matplotlib.figure is imported by compare_curves only (about 0.3 s)
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
    raster = _tile_image(
        tiles, rows, cols, captions, frames, title, fontsize=10, target=112,
        frame=2 if wrong is not None else 1,
    )
    return _save_raster(raster, path)


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
        raster = _Raster(550, 176)
        raster.draw().text((275, 88), "No misclassified images", font=_font(14),
                           fill="black", anchor="mm")
        return _save_raster(raster, path)
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
    raster = _tile_image(
        tiles, rows, cols, captions, [_WRONG_COLOR] * n,
        title or f"Misclassified ({n} shown)", fontsize=9, target=140, frame=2,
    )
    return _save_raster(raster, path)


class _Panel:
    """One line chart drawn with Pillow at ``_SS`` times the size, for smooth lines once
    scaled down: axes, grid, ticks, labels, lines, markers, a legend. Coordinates are the
    final picture's pixels; ``x``/``y`` map data to them."""

    def __init__(self, draw: Any, box: tuple[float, float, float, float],
                 xlim: tuple[float, float], ylim: tuple[float, float], *,
                 integer_x: bool = False, xticks: Sequence[float] | None = None) -> None:
        self.draw, self.box, self.xlim, self.ylim = draw, box, xlim, ylim
        self.xticks = list(xticks) if xticks is not None else _nice_range(*xlim, integer_x)
        self.yticks = _nice_range(*ylim, False)

    def x(self, value: float) -> float:
        x0, _, x1, _ = self.box
        lo, hi = self.xlim
        return x0 + (value - lo) / ((hi - lo) or 1.0) * (x1 - x0)

    def y(self, value: float) -> float:
        _, y0, _, y1 = self.box
        lo, hi = self.ylim
        return y1 - (value - lo) / ((hi - lo) or 1.0) * (y1 - y0)

    def frame(self, title: str, xlabel: str, ylabel: str) -> None:
        d, s = self.draw, _SS
        x0, y0, x1, y1 = self.box
        tick_font = _font(10 * s)
        for labels, ticks, horizontal in ((self.xticks, self.xticks, False),
                                          (self.yticks, self.yticks, True)):
            texts = _tick_texts(labels)
            for value, text in zip(ticks, texts, strict=True):
                if horizontal:
                    y = self.y(value)
                    d.line([(x0 * s, y * s), (x1 * s, y * s)], fill=_GRID_COLOR, width=s)
                    d.line([((x0 - 5) * s, y * s), (x0 * s, y * s)], fill=_TEXT_COLOR, width=s)
                    d.text(((x0 - 8) * s, y * s), text, font=tick_font, fill=_TEXT_COLOR,
                           anchor="rm")
                else:
                    x = self.x(value)
                    d.line([(x * s, y0 * s), (x * s, y1 * s)], fill=_GRID_COLOR, width=s)
                    d.line([(x * s, y1 * s), (x * s, (y1 + 5) * s)], fill=_TEXT_COLOR, width=s)
                    d.text((x * s, (y1 + 8) * s), text, font=tick_font, fill=_TEXT_COLOR,
                           anchor="ma")
        d.line([(x0 * s, y0 * s), (x0 * s, y1 * s), (x1 * s, y1 * s)], fill=_TEXT_COLOR,
               width=s)
        label_font = _font(10 * s)
        d.text(((x0 + x1) / 2 * s, (y1 + 30) * s), xlabel, font=label_font, fill=_TEXT_COLOR,
               anchor="ma")
        widest = max(tick_font.getlength(t) for t in _tick_texts(self.yticks)) / s
        self.ylabel = (ylabel, x0 - 14 - widest)
        d.text(((x0 + x1) / 2 * s, (y0 - 7) * s), title, font=_font(12 * s), fill="black",
               anchor="md")

    def line(self, xs: np.ndarray, ys: np.ndarray, color: str, width_pt: float,
             dashed: bool = False, marker: float = 0.0) -> None:
        d, s = self.draw, _SS
        width = max(1, round(width_pt * _DPI / 72 * s))
        finite = np.isfinite(ys)
        points = [(self.x(a) * s, self.y(b) * s) for a, b in zip(xs, ys, strict=True)]
        run: list[tuple[float, float]] = []
        for point, ok in zip(points, finite, strict=True):
            if ok:
                run.append(point)
            elif run:
                self._polyline(run, color, width, dashed)
                run = []
        if run:
            self._polyline(run, color, width, dashed)
        if marker:
            r = marker * _DPI / 72 * s / 2
            for (px, py), ok in zip(points, finite, strict=True):
                if ok:
                    d.ellipse([px - r, py - r, px + r, py + r], fill=color)

    def _polyline(self, run: list[tuple[float, float]], color: str, width: int,
                  dashed: bool) -> None:
        if len(run) == 1:
            return
        if not dashed:
            self.draw.line(run, fill=color, width=width, joint="curve")
            return
        on, off = 3.7 * width, 1.6 * width  # matplotlib's "--" pattern, in line widths
        phase, drawing = 0.0, True
        for (ax, ay), (bx, by) in itertools.pairwise(run):
            length = math.hypot(bx - ax, by - ay)
            t = 0.0
            while t < length:
                span = (on if drawing else off) - phase
                step = min(span, length - t)
                if drawing:
                    f0, f1 = t / length, (t + step) / length
                    self.draw.line([(ax + (bx - ax) * f0, ay + (by - ay) * f0),
                                    (ax + (bx - ax) * f1, ay + (by - ay) * f1)],
                                   fill=color, width=width)
                t += step
                phase += step
                if phase >= (on if drawing else off) - 1e-9:
                    phase, drawing = 0.0, not drawing

    def legend(self, entries: Sequence[tuple[str, str, bool]], corner: str) -> None:
        d, s = self.draw, _SS
        font = _font(9 * s)
        x0, y0, x1, y1 = self.box
        row = 9 * _DPI / 72 * 1.45
        widest = max(font.getlength(text) for text, _, _ in entries) / s
        left = x1 - 10 - 30 - widest if corner.endswith("right") else x0 + 10
        top = y0 + 8 if corner.startswith("upper") else y1 - 8 - row * len(entries)
        width = max(1, round(1.6 * _DPI / 72 * s))
        for i, (text, color, dashed) in enumerate(entries):
            y = (top + row * (i + 0.5)) * s
            if dashed:
                for a in (0, 11):
                    d.line([((left + a) * s, y), ((left + a + 8) * s, y)], fill=color,
                           width=width)
            else:
                d.line([(left * s, y), ((left + 20) * s, y)], fill=color, width=width)
            r = 2.7 * s
            d.ellipse([(left + 10) * s - r, y - r, (left + 10) * s + r, y + r], fill=color)
            d.text(((left + 28) * s, y), text, font=font, fill=_TEXT_COLOR, anchor="lm")


_SS = 2  # supersampling of the line charts
_GRID_COLOR = "#e6e6e6"


def _nice_range(lo: float, hi: float, integer: bool) -> list[float]:
    """Round tick values inside [lo, hi], about 6 of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / 6
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * 0.999)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step - 1e-9)
    return [i * step for i in range(first, math.floor(hi / step + 1e-9) + 1)]


def _tick_texts(values: Sequence[float]) -> list[str]:
    """Tick labels with as many decimals as their spacing needs, as matplotlib writes them."""
    if len(values) < 2:
        return [_fmt(v) if not float(v).is_integer() else str(int(v)) for v in values]
    step = float(f"{min(abs(b - a) for a, b in itertools.pairwise(values)):.9g}") or 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if step * 10**decimals % 1 > 1e-6:
        decimals += 1
    return [f"{v:.{decimals}f}".replace("-0", "0") if decimals or abs(v) < 1e15 else str(v)
            for v in ([0.0 if abs(v) < step * 1e-9 else v for v in values])]


def _limits(values: Sequence[np.ndarray], pad: float = 0.05) -> tuple[float, float]:
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo < 1e-12:
        span = abs(lo) * 0.2 or 0.5
        return lo - span, hi + span
    return lo - (hi - lo) * pad, hi + (hi - lo) * pad


def _curves_image(epochs: Mapping[str, np.ndarray], panels: list[str], loss_keys: list[str],
                  acc_keys: list[str], step_points: np.ndarray | None, n_epochs: int,
                  title: str | None) -> _Raster:
    """The learning curves' panels side by side, drawn with Pillow (see ``_Panel``)."""
    from PIL import Image, ImageDraw

    s = _SS
    panel_w, height = 4.6 * _DPI, 3.6 * _DPI
    width = panel_w * len(panels) + (0.6 * _DPI if len(panels) == 1 else 0)
    top = 0.42 * _DPI + (0.36 * _DPI if title else 0)
    height += 0.36 * _DPI if title else 0
    width, height = round(width), round(height)
    image = Image.new("RGB", (width * s, height * s), "white")
    draw = ImageDraw.Draw(image)
    left_m, right_m, bottom_m, gap = 0.75 * _DPI, 0.25 * _DPI, 0.58 * _DPI, 0.85 * _DPI
    axis_w = (width - left_m - right_m - gap * (len(panels) - 1)) / len(panels)
    ylabels = []
    for i, panel in enumerate(panels):
        x0 = left_m + i * (axis_w + gap)
        box = (x0, top, x0 + axis_w, height - bottom_m)
        if panel == "steps":
            assert step_points is not None
            p = _Panel(draw, box, _limits([step_points[:, 0]]), _limits([step_points[:, 1]]))
            p.frame("Training loss by step", "step", "training loss")
            p.line(step_points[:, 0], step_points[:, 1], _TRAIN_COLOR, 1.2,
                   marker=6 if len(step_points) == 1 else 0)
            if n_epochs == 1:
                lines = ["after the epoch"] + [f"{k.replace('_', ' ')}: {_fmt(v[-1])}"
                                               for k, v in epochs.items()]
                _text_box(draw, lines, (box[2] - 8, box[1] + 6))
        else:
            keys = sorted(loss_keys if panel == "loss" else acc_keys,
                          key=lambda k: (k.startswith("val"), k))
            series = [epochs[k] for k in keys]
            longest = max(len(v) for v in series)
            single = longest == 1
            pad = (longest - 1) * 0.05
            xlim = (0.5, 1.5) if single else (1 - pad, longest + pad)
            ylim = _limits(series, 0.2 if single else 0.05)
            name = "Loss" if panel == "loss" else "Accuracy"
            p = _Panel(draw, box, xlim, ylim, integer_x=True, xticks=[1] if single else None)
            p.frame(name, "epoch", name.lower())
            entries = []
            for key, values in zip(keys, series, strict=True):
                is_val = key.startswith("val")
                color = _VAL_COLOR if is_val else _TRAIN_COLOR
                xs = np.arange(1, len(values) + 1)
                p.line(xs, values, color, 1.6, dashed=is_val,
                       marker=(3.5 if len(values) > 1 else 6) if len(values) < 30 else 0)
                entries.append((key.replace("_", " ").replace("val ", "validation "), color,
                                is_val))
                if len(values) == 1 and np.isfinite(values[0]):
                    draw.text(((p.x(1) + 10) * s, p.y(values[0]) * s), _fmt(values[0]),
                              font=_font(9 * s), fill=_TEXT_COLOR, anchor="lm")
            if panel == "accuracy":
                _best_mark(draw, p, epochs)
            p.legend(entries, "upper right" if panel == "loss" else "lower right")
        ylabels.append((p.ylabel, (box[1] + box[3]) / 2))
    if title:
        draw.text((width / 2 * s, 8 * s), title, font=_font(12 * s, bold=True), fill="black",
                  anchor="ma")
    raster = _Raster(width, height)
    raster.image = image.reduce(s)
    for (text, x), y in ylabels:
        raster.paste_rotated(text, _font(10), _TEXT_COLOR, (x - 7, y), 90, at="centre")
    return raster


def _text_box(draw: Any, lines: list[str], corner: tuple[float, float]) -> None:
    """Right-aligned lines in a rounded box whose top right corner is ``corner``."""
    s = _SS
    font = _font(9 * s)
    row = 9 * _DPI / 72 * 1.25
    widest = max(font.getlength(line) for line in lines) / s
    x1, y0 = corner
    x0, y1 = x1 - widest - 12, y0 + row * len(lines) + 8
    draw.rounded_rectangle([x0 * s, y0 * s, x1 * s, y1 * s], radius=5 * s, fill="white",
                           outline="#bbbbbb", width=s)
    for i, line in enumerate(lines):
        draw.text(((x1 - 6) * s, (y0 + 4 + row * (i + 0.5)) * s), line, font=font,
                  fill=_TEXT_COLOR, anchor="rm")


def _best_mark(draw: Any, p: _Panel, epochs: Mapping[str, np.ndarray]) -> None:
    """A star on the best validation accuracy, with its value and epoch."""
    key = next((k for k in ("val_accuracy", "val_acc") if k in epochs), None)
    if key is None or not np.isfinite(epochs[key]).any() or len(epochs[key]) < 2:
        return
    values = epochs[key]
    best = int(np.nanargmax(values))
    s = _SS
    cx, cy = p.x(best + 1) * s, p.y(values[best]) * s
    outer, inner = 12 * _DPI / 72 * s / 2, 12 * _DPI / 72 * s / 5
    star = [(cx + (outer if i % 2 == 0 else inner) * math.sin(i * math.pi / 5),
             cy - (outer if i % 2 == 0 else inner) * math.cos(i * math.pi / 5))
            for i in range(10)]
    draw.polygon(star, fill=_VAL_COLOR)
    text = f"best {_fmt(values[best])} (epoch {best + 1})"
    font = _font(8.5 * s)
    half = font.getlength(text) / 2
    x = min(max(cx, p.box[0] * s + half), p.box[2] * s - half)  # kept inside the panel
    bbox = draw.textbbox((x, cy + 10 * s), text, font=font, anchor="ma")
    draw.rectangle([bbox[0] - 2 * s, bbox[1] - s, bbox[2] + 2 * s, bbox[3] + s], fill="white")
    draw.text((x, cy + 10 * s), text, font=font, fill=_VAL_COLOR, anchor="ma")


def _colorize(stack: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """Values (any shape) -> the same shape plus 4, uint8 RGBA through the colour map.

    The maps these pictures use are built in (matplotlib's own, from the same ColorBrewer
    colours, 256 steps), so drawing them does not import matplotlib (~0.1 s); any other
    name is looked up in ``matplotlib.colormaps``.
    """
    span = (vmax - vmin) or 1.0
    scaled = (np.asarray(stack, dtype=np.float32) - vmin) / span
    lut = _LUTS.get(cmap)
    if lut is None:
        anchors = _COLORMAPS.get(cmap)
        if anchors is None:
            from matplotlib import colormaps

            return colormaps[cmap](np.clip(scaled, 0.0, 1.0), bytes=True)
        hexes = anchors.split()
        colors = np.array([[int(c[i : i + 2], 16) for i in (0, 2, 4)] for c in hexes]) / 255
        at = np.linspace(0.0, 1.0, len(hexes))
        steps = np.linspace(0.0, 1.0, 256)
        lut = np.full((257, 4), 255, dtype=np.uint8)  # the last row: NaN, shown white
        lut[:256, :3] = np.stack([np.interp(steps, at, colors[:, i]) for i in range(3)],
                                 axis=1) * 255
        _LUTS[cmap] = lut
    index = np.clip(np.nan_to_num(scaled, nan=-1.0) * 256, 0, 255).astype(np.intp)
    index[np.isnan(scaled)] = 256
    return lut[index]


_COLORMAPS = {  # matplotlib's maps by their ColorBrewer colours, low to high
    "Reds": "fff5f0 fee0d2 fcbba1 fc9272 fb6a4a ef3b2c cb181d a50f15 67000d",
    "Blues": "f7fbff deebf7 c6dbef 9ecae1 6baed6 4292c6 2171b5 08519c 08306b",
    "RdBu": "67001f b2182b d6604d f4a582 fddbc7 f7f7f7 d1e5f0 92c5de 4393c3 2166ac 053061",
    "gray": "000000 ffffff",
}
_COLORMAPS.update({f"{name}_r": " ".join(reversed(anchors.split()))
                   for name, anchors in list(_COLORMAPS.items())})
_LUTS: dict[str, np.ndarray] = {}


def _tile_image(
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
) -> _Raster:
    """``tiles`` (N, h, w, 4) in a grid, as one pixel-exact picture.

    Each tile is scaled up by the whole factor that brings it nearest ``target`` pixels
    high, framed ``frame`` px in its colour (``None``: none) and captioned above with its
    lines of (text, colour). The picture is sized from the tiles, the captions (measured
    in the font) and the title, so nothing needs a layout engine.
    """
    n, h, w = tiles.shape[:3]
    scale = max(1, round(target / h))
    th, tw = h * scale, w * scale
    font = _font(fontsize)
    line_px = round(fontsize * _DPI / 72 * 1.25)
    lines = max((len(c) for c in captions), default=0)
    caption_h = lines * line_px + (4 if lines else 0)
    widest = max((font.getlength(text) for c in captions for text, _ in c), default=0)
    gap = max(12, frame + 8)
    cell_w = max(tw + 2 * frame + gap, math.ceil(widest) + 14)
    cell_h = caption_h + th + 2 * frame + gap
    title_font = _font(title_size, bold=True)
    title_lines = title.split("\n") if title else []
    title_line_px = round(title_size * _DPI / 72 * 1.3)
    title_h = len(title_lines) * title_line_px + 10 if title else 0
    title_w = max((title_font.getlength(s) for s in title_lines), default=0)
    margin = 10
    width = max(cols * cell_w, math.ceil(title_w) + 8) + 2 * margin
    height = rows * cell_h + title_h + 2 * margin - gap // 2
    left = margin + (width - 2 * margin - cols * cell_w) // 2

    raster = _Raster(width, height)
    pixels = raster.pixels
    spots = []
    for k in range(n):
        r, c = divmod(k, cols)
        x0 = left + c * cell_w + (cell_w - tw - 2 * frame) // 2  # the frame's outer corner
        y0 = margin + title_h + r * cell_h + caption_h
        if frames[k] is not None and frame:
            pixels[y0 : y0 + th + 2 * frame, x0 : x0 + tw + 2 * frame] = _rgb(frames[k])
        tile = tiles[k, :, :, :3]
        if scale > 1:
            tile = tile.repeat(scale, axis=0).repeat(scale, axis=1)
        pixels[y0 + frame : y0 + frame + th, x0 + frame : x0 + frame + tw] = tile
        spots.append((x0 + frame + tw / 2, y0))
    draw = raster.draw()
    for (centre, y0), caption in zip(spots, captions, strict=False):
        for i, (text, color) in enumerate(reversed(caption)):  # upwards from the tile
            draw.text((centre, y0 - 3 - i * line_px), text, font=font, fill=color, anchor="md")
    for i, line in enumerate(title_lines):
        draw.text((width / 2, margin + i * title_line_px), line, font=title_font,
                  fill="black", anchor="ma")
    return raster


class _Raster:
    """A white RGB picture: NumPy pixels first (tiles, cells, bars), then Pillow text."""

    def __init__(self, width: int, height: int) -> None:
        self.pixels = np.full((height, width, 3), 255, dtype=np.uint8)
        self.image: Any = None

    def draw(self) -> Any:
        from PIL import Image, ImageDraw

        if self.image is None:
            self.image = Image.fromarray(self.pixels)
        return ImageDraw.Draw(self.image)

    def paste_rotated(self, text: str, font: Any, color: str, point: tuple[float, float],
                      degrees: float, at: str) -> None:
        """``text`` turned ``degrees`` anticlockwise, its right end (``at="right"``) or
        its middle (``"centre"``) put at ``point``."""
        from PIL import Image, ImageDraw

        _left, top, right, bottom = font.getbbox(text)
        lift = 1 - min(top, 0)
        w, h = math.ceil(right) + 2, math.ceil(bottom + lift) + 1
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).text((1, lift), text, font=font, fill=255)
        turned = mask.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True)
        theta = math.radians(degrees)
        dx = 1 + right - w / 2 if at == "right" else 0.0
        dy = lift + (top + bottom) / 2 - h / 2
        x = turned.width / 2 + dx * math.cos(theta) + dy * math.sin(theta)
        y = turned.height / 2 - dx * math.sin(theta) + dy * math.cos(theta)
        ink = Image.new("RGB", turned.size, color)
        self.draw()
        self.image.paste(ink, (round(point[0] - x), round(point[1] - y)), turned)


def _save_raster(raster: _Raster, path: PathLike) -> Path:
    """Write the picture as PNG (at ``_DPI``), atomically, and return the path."""
    from PIL import Image

    image = raster.image if raster.image is not None else Image.fromarray(raster.pixels)
    target = Path(path)
    with atomic_writer(target) as handle:
        image.save(handle, format="PNG", dpi=(_DPI, _DPI), compress_level=_PNG_LEVEL)
    return target


def _font(points: float, bold: bool = False) -> Any:
    """DejaVu Sans (matplotlib's own font, so the pictures match its plots) at ``points``."""
    key = (round(points * _DPI / 72), bold)
    font = _FONTS.get(key)
    if font is None:
        import importlib.util

        from PIL import ImageFont

        spec = importlib.util.find_spec("matplotlib")
        assert spec is not None and spec.submodule_search_locations
        folder = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"
        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        font = _FONTS[key] = ImageFont.truetype(str(folder / name), key[0])
    return font


_FONTS: dict[tuple[int, bool], Any] = {}
_PNG_LEVEL = 1  # fastest zlib level: pictures of flat colour barely grow (~20%)


def _rgb(color: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b)."""
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _nice_ticks(top: float, most: int = 6) -> list[float]:
    """Round tick values from 0 to at most ``top``, at most ``most`` of them."""
    if top <= 0:
        return [0.0]
    raw = top / (most - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(top / step + 1e-9) + 1)]



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
    raster = _curves_image(epochs, panels, loss_keys, acc_keys, step_points, n_epochs, title)
    return _save_raster(raster, path)


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
    to the most common mistake (the colour bar on the right), so a 1% confusion stays
    visible next to a diagonal of thousands. Empty off-diagonal cells are left blank.
    Drawn as pixels (NumPy cells, Pillow text), with no matplotlib figure at all.
    """
    matrix = np.asarray(cm)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.number) or (matrix < 0).any():
        raise ValueError("confusion matrix must hold non-negative counts")
    k = matrix.shape[0]
    names = _class_names(class_names, k)
    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    diagonal = np.eye(k, dtype=bool)
    worst_mistake = float(share[~diagonal].max()) if k > 1 else 0.0
    top = max(worst_mistake, 1e-12) * 1.15  # keep the worst cell readable, not black
    colors = _colorize(share / top, "Reds", 0.0, 1.0)[..., :3]
    colors[diagonal] = _colorize(share[diagonal], "Blues", 0.0, 1.0)[:, :3]
    colors[~diagonal & (matrix == 0)] = 255  # nothing there: blank

    cell = 66 if k <= 10 else max(22, 700 // k)
    cell_font = _font(9 if k <= 10 else max(5, 9 - (k - 10) // 3))
    tick_font, label_font, title_font = _font(10), _font(10), _font(12, bold=True)
    name_w = max(tick_font.getlength(name) for name in names)
    text_h = round(10 * _DPI / 72)  # one line of 10 pt
    rotate = max(len(name) for name in names) > 2
    under = (name_w + text_h) * 0.72 if rotate else text_h  # x tick labels' depth
    side = k * cell
    mx = 12 + text_h + 12 + math.ceil(name_w) + 10
    my = 14 + round(12 * _DPI / 72) + 14
    bar = worst_mistake > 0
    pct_w = tick_font.getlength("00.0%")
    width = mx + side + (28 + 20 + 10 + math.ceil(pct_w) + 12 + text_h + 14 if bar else 24)
    height = my + side + 10 + math.ceil(under) + 12 + text_h + 14
    raster = _Raster(width, height)
    pixels = raster.pixels
    block = colors.repeat(cell, axis=0).repeat(cell, axis=1)
    pixels[my : my + side, mx : mx + side] = block
    for edge in range(1, k):  # white lines between the cells
        pixels[my + edge * cell - 1 : my + edge * cell + 1, mx : mx + side] = 255
        pixels[my : my + side, mx + edge * cell - 1 : mx + edge * cell + 1] = 255
    dark = np.array(_rgb(_TEXT_COLOR), dtype=np.uint8)
    _box(pixels, mx - 1, my - 1, side + 2, side + 2, dark)
    centres = [round((i + 0.5) * cell) for i in range(k)]
    for c in centres:  # tick marks, out of the frame
        pixels[my + side + 1 : my + side + 6, mx + c] = dark
        pixels[my + c, mx - 6 : mx - 1] = dark
    if bar:
        bx, bh = mx + side + 28, round(side * 0.75)
        by = my + (side - bh) // 2
        ramp = np.linspace(1.0, 0.0, bh)[:, None].repeat(20, axis=1)
        pixels[by : by + bh, bx : bx + 20] = _colorize(ramp, "Reds", 0.0, 1.0)[..., :3]
        _box(pixels, bx - 1, by - 1, 22, bh + 2, dark)
        bar_ticks = [(by + bh - round(v / top * bh), v) for v in _nice_ticks(top)]
        for y, _v in bar_ticks:
            pixels[min(y, by + bh - 1), bx + 21 : bx + 26] = dark

    draw = raster.draw()
    for i in range(k):
        for j in range(k):
            count = matrix[i, j]
            if count == 0 and i != j:
                continue
            strong = share[i, j] > 0.55 if i == j else share[i, j] > 0.6 * worst_mistake
            draw.text((mx + centres[j], my + centres[i]),
                      f"{count:,}" if float(count).is_integer() else f"{count:.2f}",
                      font=cell_font, fill="white" if strong else _TEXT_COLOR, anchor="mm")
    for i, name in enumerate(names):
        draw.text((mx - 9, my + centres[i]), name, font=tick_font, fill=_TEXT_COLOR,
                  anchor="rm")
        if rotate:
            raster.paste_rotated(name, tick_font, _TEXT_COLOR,
                                 (mx + centres[i] + 4, my + side + 10), 45, at="right")
        else:
            draw.text((mx + centres[i], my + side + 9), name, font=tick_font, fill=_TEXT_COLOR,
                      anchor="mt")
    draw.text((mx + side / 2, height - 12), "Predicted label", font=label_font,
              fill=_TEXT_COLOR, anchor="md")
    raster.paste_rotated("True label", label_font, _TEXT_COLOR, (12 + text_h / 2, my + side / 2),
                         90, at="centre")
    total = matrix.sum()
    accuracy = np.trace(matrix) / total if total else float("nan")
    draw.text((mx + side / 2, 14), title or f"Confusion matrix (accuracy {accuracy:.2%})",
              font=title_font, fill="black", anchor="ma")
    if bar:
        for y, v in bar_ticks:
            draw.text((bx + 29, y), f"{v:.1%}", font=tick_font, fill=_TEXT_COLOR, anchor="lm")
        raster.paste_rotated("mistakes: share of the true class", label_font, _TEXT_COLOR,
                             (bx + 29 + pct_w + 10 + text_h / 2, by + bh / 2), 90, at="centre")
    return _save_raster(raster, path)


def _box(pixels: np.ndarray, x: int, y: int, w: int, h: int, color: np.ndarray) -> None:
    """A 1 px outline."""
    pixels[y, x : x + w] = color
    pixels[y + h - 1, x : x + w] = color
    pixels[y : y + h, x] = color
    pixels[y : y + h, x + w - 1] = color



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
    raster = _tile_image(
        rgba, rows, cols, [[] for _ in range(n)], [_FRAME_COLOR] * n,
        title or f"First-layer weights ({n} of {len(tiles)} units; red +, blue -)",
        fontsize=9, target=80 if tiles.shape[1] < 10 else 84, frame=1, title_size=11,
    )
    return _save_raster(raster, path)


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
