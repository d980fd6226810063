"""An evaluation set of digits from "writers" who are not in MNIST, drawn programmatically.

Never train on it: nothing under ``src/`` imports this file (it lives in ``benchmarks/`` on
purpose), and its randomness comes only from ``numpy.random.default_rng([SET_TAG, seed])``,
a stream no training code uses. The training augmentation (``mnistlab.handwriting.augment``)
works on MNIST's own strokes with its own seeds and shares no templates with this file.

Each digit is a handful of strokes (polylines through control points, smoothed as
Catmull-Rom splines) in one of several styles per class, styles MNIST shows rarely among
them: European 1s with a long flag, with and without a base; crossed 7s; open 4s; 9s with a
straight tail; 2s with a loop; flat-topped 3s; 8s of two stacked loops; and so on. Every
digit gets its own slant, rotation, aspect, jitter of the control points, pen width and
pressure, then is rendered in one of the ``RENDERS``:

- ``canvas_dark``: black ink on a white 280x280 drawing page (PNG);
- ``canvas_light``: white ink on black, as a dark-mode page (PNG);
- ``scan``: a form scanned at low resolution: the digit 24-56 px high, off-centre in a
  larger box of light, textured, unevenly lit paper, dark ink, blurred; a third JPEG;
- ``photo``: a phone photo of paper: larger, light falling off across the page, sensor
  noise, JPEG.

Half of the set is ``scan`` (the kind of the hidden set the issue describes), the rest split
evenly. ``make_writers_set(n, seed)`` returns encoded image files (bytes), labels, style and
render names: feed the bytes through ``decode_image(..., max_side=WORK_MAX_SIDE)`` and
``preprocess_image``, which is exactly what ``mnistlab predict IMAGE`` does with a file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "RENDERS",
    "SET_TAG",
    "STYLES",
    "Hand",
    "WriterDigit",
    "make_hand",
    "make_writers_set",
    "render_digit",
    "write_digits",
]

SET_TAG = 0x57524954  # "WRIT": the first word of every seed sequence this set uses

Stroke = list[tuple[float, float]]  # control points (x, y) in a unit box, y downward

# fmt: off
# Each style: strokes in a box x in [0, w], y in [0, 1] (w: the style's width).
STYLES: dict[int, dict[str, tuple[float, list[Stroke]]]] = {
    0: {
        "oval": (0.62, [[(0.31, 0.0), (0.05, 0.2), (0.0, 0.55), (0.12, 0.9), (0.35, 1.0),
                         (0.56, 0.82), (0.62, 0.45), (0.52, 0.1), (0.31, 0.0), (0.2, 0.06)]]),
        "narrow": (0.4, [[(0.22, 0.0), (0.03, 0.25), (0.0, 0.6), (0.12, 0.95), (0.28, 0.98),
                          (0.4, 0.65), (0.37, 0.22), (0.22, 0.0)]]),
        "round": (0.85, [[(0.5, 0.02), (0.12, 0.15), (0.0, 0.55), (0.25, 0.95), (0.6, 0.97),
                          (0.85, 0.6), (0.75, 0.15), (0.45, 0.0)]]),
    },
    1: {  # nominal shapes: the flagged 1s are drawn by ``_european_one`` (see there)
        "stick": (0.08, [[(0.06, 0.0), (0.0, 1.0)]]),
        "short_flag": (0.3, [[(0.05, 0.22), (0.3, 0.0)], [(0.3, 0.0), (0.26, 1.0)]]),
        "long_flag": (0.4, [[(0.0, 0.45), (0.4, 0.0)], [(0.4, 0.0), (0.36, 1.0)]]),
        "flag_base": (0.65, [[(0.05, 0.35), (0.38, 0.0)], [(0.38, 0.0), (0.33, 1.0)],
                             [(0.0, 1.0), (0.65, 1.0)]]),
        "long_flag_base": (0.8, [[(0.0, 0.5), (0.4, 0.0)], [(0.4, 0.0), (0.36, 1.0)],
                                 [(0.0, 1.0), (0.8, 0.98)]]),
    },
    2: {
        "plain": (0.7, [[(0.05, 0.22), (0.3, 0.0), (0.6, 0.05), (0.65, 0.3), (0.35, 0.65),
                         (0.0, 1.0), (0.7, 0.98)]]),
        "loop": (0.75, [[(0.05, 0.2), (0.35, 0.0), (0.65, 0.1), (0.6, 0.4), (0.25, 0.8),
                         (0.08, 0.98), (0.0, 0.85), (0.18, 0.8), (0.4, 0.95), (0.75, 0.98)]]),
        "z": (0.7, [[(0.02, 0.12), (0.3, 0.0), (0.62, 0.08), (0.55, 0.3), (0.02, 1.0),
                     (0.7, 1.0)]]),
        "curly": (0.7, [[(0.0, 0.3), (0.2, 0.02), (0.55, 0.0), (0.68, 0.25), (0.45, 0.6),
                         (0.1, 0.95), (0.35, 0.88), (0.7, 0.96)]]),
        # narrow and upright: a small hook, a steep diagonal, a short base (a 2 that a
        # model may take for a 1 with a flag and a base)
        "narrow": (0.45, [[(0.0, 0.18), (0.2, 0.0), (0.42, 0.08), (0.4, 0.32), (0.2, 0.65),
                           (0.02, 1.0), (0.45, 0.98)]]),
        "narrow_loop": (0.5, [[(0.02, 0.15), (0.25, 0.0), (0.45, 0.12), (0.38, 0.45),
                               (0.12, 0.85), (0.05, 0.98), (0.0, 0.88), (0.15, 0.86),
                               (0.3, 0.97), (0.5, 0.97)]]),
    },
    3: {
        "round": (0.65, [[(0.05, 0.1), (0.35, 0.0), (0.6, 0.15), (0.5, 0.4), (0.25, 0.48),
                          (0.55, 0.58), (0.65, 0.8), (0.4, 1.0), (0.0, 0.9)]]),
        "flat_top": (0.65, [[(0.0, 0.02), (0.62, 0.0), (0.25, 0.42), (0.55, 0.55), (0.65, 0.8),
                             (0.4, 1.0), (0.02, 0.9)]]),
    },
    4: {
        "closed": (0.75, [[(0.5, 1.0), (0.52, 0.0), (0.0, 0.68), (0.75, 0.68)]]),
        "open": (0.75, [[(0.1, 0.0), (0.02, 0.6), (0.75, 0.6)], [(0.55, 0.15), (0.52, 1.0)]]),
        "open_tall": (0.65, [[(0.15, 0.0), (0.0, 0.55), (0.65, 0.52)], [(0.5, 0.0), (0.5, 1.0)]]),
    },
    5: {
        "plain": (0.65, [[(0.6, 0.0), (0.1, 0.02), (0.05, 0.45), (0.4, 0.4), (0.63, 0.65),
                          (0.5, 0.95), (0.0, 0.95)]]),
        "two_stroke": (0.65, [[(0.1, 0.0), (0.05, 0.45), (0.4, 0.4), (0.63, 0.65), (0.5, 0.95),
                               (0.0, 0.92)], [(0.12, 0.0), (0.65, 0.02)]]),
    },
    6: {
        "curved": (0.65, [[(0.55, 0.0), (0.15, 0.3), (0.0, 0.7), (0.25, 1.0), (0.55, 0.9),
                           (0.6, 0.62), (0.3, 0.52), (0.08, 0.62), (0.02, 0.75)]]),
        "straight": (0.6, [[(0.45, 0.0), (0.08, 0.55), (0.05, 0.85), (0.3, 1.0), (0.58, 0.85),
                            (0.5, 0.58), (0.2, 0.58), (0.06, 0.75)]]),
    },
    7: {
        "plain": (0.7, [[(0.0, 0.02), (0.7, 0.0), (0.25, 1.0)]]),
        "crossed": (0.7, [[(0.0, 0.02), (0.7, 0.0), (0.25, 1.0)], [(0.22, 0.5), (0.65, 0.48)]]),
        "serif": (0.7, [[(0.0, 0.2), (0.02, 0.0), (0.7, 0.02), (0.3, 1.0)]]),
        "curved_crossed": (0.7, [[(0.0, 0.05), (0.7, 0.0), (0.4, 0.5), (0.32, 1.0)],
                                 [(0.2, 0.55), (0.65, 0.52)]]),
    },
    8: {
        "figure": (0.6, [[(0.5, 0.08), (0.3, 0.0), (0.08, 0.12), (0.15, 0.35), (0.5, 0.6),
                          (0.6, 0.85), (0.32, 1.0), (0.02, 0.85), (0.1, 0.6), (0.45, 0.35),
                          (0.52, 0.12)]]),
        "two_loops": (0.6, [[(0.3, 0.48), (0.08, 0.3), (0.14, 0.05), (0.4, 0.02), (0.5, 0.25),
                             (0.3, 0.48)],
                            [(0.3, 0.48), (0.02, 0.72), (0.2, 1.0), (0.52, 0.95), (0.6, 0.7),
                             (0.3, 0.48)]]),
        # a small top loop over a big bottom one, the strokes crossing at a slant
        "small_top": (0.62, [[(0.42, 0.05), (0.25, 0.0), (0.12, 0.12), (0.22, 0.32),
                              (0.52, 0.55), (0.62, 0.82), (0.35, 1.0), (0.02, 0.85),
                              (0.08, 0.58), (0.42, 0.3), (0.45, 0.1)]]),
        "snowman": (0.6, [[(0.3, 0.42), (0.12, 0.28), (0.16, 0.04), (0.38, 0.0), (0.48, 0.22),
                           (0.32, 0.42)],
                          [(0.32, 0.42), (0.04, 0.6), (0.05, 0.9), (0.3, 1.0), (0.58, 0.88),
                           (0.55, 0.55), (0.32, 0.42)]]),
    },
    9: {
        "straight": (0.6, [[(0.58, 0.25), (0.35, 0.0), (0.05, 0.12), (0.05, 0.4), (0.35, 0.48),
                            (0.58, 0.25), (0.56, 1.0)]]),
        "curved": (0.6, [[(0.58, 0.22), (0.35, 0.0), (0.05, 0.12), (0.08, 0.4), (0.35, 0.47),
                          (0.58, 0.25), (0.56, 0.7), (0.35, 1.0), (0.08, 0.9)]]),
        "slant_tail": (0.6, [[(0.6, 0.2), (0.32, 0.0), (0.0, 0.2), (0.2, 0.45), (0.6, 0.2),
                              (0.35, 1.0)]]),
        # the loop drawn first, then the straight tail as its own stroke down its right side
        "two_stroke": (0.58, [[(0.55, 0.12), (0.3, 0.0), (0.04, 0.1), (0.0, 0.32), (0.25, 0.45),
                               (0.55, 0.35), (0.56, 0.15)], [(0.56, 0.02), (0.52, 1.0)]]),
        # a loop left a little open at the bottom, a long straight tail
        "open_loop": (0.6, [[(0.5, 0.38), (0.2, 0.42), (0.02, 0.25), (0.15, 0.02),
                             (0.45, 0.0), (0.58, 0.15), (0.56, 0.5), (0.54, 1.0)]]),
    },
}

# fmt: on

RENDERS: tuple[str, ...] = ("canvas_dark", "canvas_light", "scan", "photo")
_RENDER_WEIGHTS = (0.2, 0.15, 0.5, 0.15)


@dataclass(frozen=True)
class WriterDigit:
    """One evaluation digit: its encoded image file, label, style and render."""

    data: bytes
    label: int
    style: str
    render: str
    fmt: str  # "PNG" or "JPEG"


def make_writers_set(count: int, seed: int = 0) -> list[WriterDigit]:
    """``count`` digits, classes in turn (0, 1, ..., 9, 0, ...), styles and renders drawn
    at random. Deterministic: the same (count, seed) gives the same bytes."""
    rng = np.random.default_rng([SET_TAG, seed])
    out = []
    for i in range(count):
        label = i % 10
        styles = sorted(STYLES[label])
        style = styles[int(rng.integers(len(styles)))]
        render = RENDERS[int(rng.choice(len(RENDERS), p=_RENDER_WEIGHTS))]
        img, fmt = render_digit(label, style, render, rng)
        out.append(_encode(img, fmt, label, style, render, rng))
    return out


@dataclass(frozen=True)
class Hand:
    """One writer's habits, kept across all their digits: a style per digit, a slant, an
    aspect, a rotation, how shaky (jitter), a pen (0..1 within the render's pen range) and
    the medium they write on. Each digit still varies a little around these."""

    styles: tuple[str, ...]  # styles[d]: how this writer writes d
    slant: float
    aspect: float
    angle: float  # degrees
    jitter: float
    pen: float
    render: str


def make_hand(rng: np.random.Generator) -> Hand:
    """A writer drawn at random: every habit from the ranges ``make_writers_set`` uses."""
    styles = tuple(sorted(STYLES[d])[int(rng.integers(len(STYLES[d])))] for d in range(10))
    return Hand(
        styles=styles,
        slant=float(rng.uniform(-0.15, 0.45)),
        aspect=float(rng.uniform(0.8, 1.25)),
        angle=float(rng.uniform(-10, 10)),
        jitter=float(rng.uniform(0.015, 0.06)),
        pen=float(rng.uniform(0, 1)),
        render=RENDERS[int(rng.choice(len(RENDERS), p=_RENDER_WEIGHTS))],
    )


def write_digits(hand: Hand, labels: list[int], rng: np.random.Generator) -> list[WriterDigit]:
    """Digits of ``labels`` in ``hand``, encoded as ``make_writers_set`` encodes them."""
    return [_encode(*render_digit(d, hand.styles[d], hand.render, rng, hand), d,
                    hand.styles[d], hand.render, rng) for d in labels]  # fmt: skip


def _encode(img: Image.Image, fmt: str, label: int, style: str, render: str,
            rng: np.random.Generator) -> WriterDigit:  # fmt: skip
    buffer = io.BytesIO()
    if fmt == "JPEG":
        img.save(buffer, format="JPEG", quality=int(rng.integers(45, 86)))
    else:
        img.save(buffer, format="PNG")
    return WriterDigit(buffer.getvalue(), label, style, render, fmt)


# ------------------------------------------------------------------------------ strokes


def _catmull_rom(points: np.ndarray, per_segment: int = 16) -> np.ndarray:
    """A smooth curve through ``points`` (k, 2); the end points are repeated."""
    if len(points) < 3:
        t = np.linspace(0, 1, per_segment)[:, None]
        return points[0] + t * (points[-1] - points[0])
    p = np.vstack([points[0], points, points[-1]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    out = []
    for k in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[k - 1], p[k], p[k + 1], p[k + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))  # fmt: skip
    out.append(points[-1:])
    return np.vstack(out)


_FLAGS = {  # style: (flag length range as a share of the height, with a base?)
    "short_flag": ((0.15, 0.3), False),
    "long_flag": ((0.33, 0.55), False),
    "flag_base": ((0.15, 0.5), True),
    "long_flag_base": ((0.33, 0.55), True),
}


def _european_one(style: str, rng: np.random.Generator) -> tuple[float, list[Stroke]]:
    """A flagged 1 as real writers make it: the flag a stroke from the top of the stem
    down to the left, a sharp corner where it meets the stem (its own polyline, so the
    spline does not round the corner into an arch), 20-60 degrees from vertical (short
    flags up to 70), its length a share of the height, half of them curved (bowed up and
    to the left, or sagging toward the stem); the base, if any, a horizontal serif across
    the stem's foot, short to long (up to almost the height), a little off-centre.
    Returns (width, strokes) as STYLES does."""
    (lo, hi), base = _FLAGS[style]
    length = rng.uniform(lo, hi)
    top_angle = 70.0 if length < 0.3 else 60.0
    angle = np.deg2rad(rng.uniform(20.0, top_angle))  # from vertical
    end = np.array([-length * np.sin(angle), length * np.cos(angle)])  # from the stem's top
    flag: list[tuple[float, float]] = [(float(end[0]), float(end[1])), (0.0, 0.0)]
    if rng.random() < 0.5:  # curved: the middle bowed out (up and left) or in (sagging)
        bow = rng.uniform(0.04, 0.12) * length / 0.4 * (1 if rng.random() < 0.5 else -1)
        mid = end / 2 + bow * np.array([-np.cos(angle), -np.sin(angle)])
        flag.insert(1, (float(mid[0]), float(mid[1])))
    foot = rng.uniform(-0.06, 0.03)  # the stem may lean a little on its own
    stem: list[tuple[float, float]] = [(0.0, 0.0), (foot, 1.0)]
    strokes = [flag, stem]
    if base:
        half = rng.uniform(0.12, 0.45)
        centre = foot + rng.uniform(-0.25, 0.15) * half
        tilt = rng.uniform(-0.03, 0.03)
        strokes.append([(centre - half, 1.0 + tilt), (centre + half, 1.0 - tilt)])
    xs = [x for stroke in strokes for x, _ in stroke]
    left = min(xs)
    return max(xs) - left, [[(x - left, y) for x, y in stroke] for stroke in strokes]


def _writer_strokes(
    label: int, style: str, rng: np.random.Generator, hand: Hand | None = None
) -> list[np.ndarray]:
    """The style's strokes under this writer's hand: jitter, aspect, slant, rotation; in a
    unit-height box, as dense polylines (x, y). Without a ``hand`` each is drawn anew; with
    one, each varies a little around the hand's."""
    width, strokes = STYLES[label][style]
    jitter = rng.uniform(0.015, 0.06) if hand is None else hand.jitter
    if label == 1 and style in _FLAGS:  # drawn to measure; no jitter to open the corner
        width, strokes = _european_one(style, rng)
        jitter = 0.0
    if hand is None:
        aspect = rng.uniform(0.8, 1.25)
        slant = rng.uniform(-0.15, 0.45)  # top leans right for > 0 (most writers lean right)
        angle = np.deg2rad(rng.uniform(-10, 10))
    else:
        aspect = hand.aspect * np.exp(rng.normal(0, 0.05))
        slant = hand.slant + rng.normal(0, 0.05)
        angle = np.deg2rad(hand.angle + rng.normal(0, 2))
    cos, sin = np.cos(angle), np.sin(angle)
    curves = []
    for stroke in strokes:
        pts = np.array(stroke, dtype=np.float64)
        pts = pts + rng.normal(0.0, jitter, pts.shape)
        if style == "stick":  # a plain 1 may be a little curved
            pts = np.vstack([pts[0], (pts[0] + pts[1]) / 2 + [rng.normal(0, 0.03), 0], pts[1]])
        curve = _catmull_rom(pts)
        x, y = (curve[:, 0] - width / 2) * aspect, curve[:, 1] - 0.5
        x = x + slant * (-y)
        curves.append(np.stack([cos * x - sin * y, sin * x + cos * y], 1))
    return curves


def _draw(
    curves: list[np.ndarray],
    height_px: float,
    pen_px: float,
    size: tuple[int, int],
    origin: tuple[float, float],
    rng: np.random.Generator,
    supersample: int = 4,
) -> np.ndarray:
    """Ink coverage (H, W) float in [0, 1]: the curves scaled to ``height_px``, centred at
    ``origin``, drawn with a round pen of ``pen_px`` (pressure varies along each stroke),
    supersampled then box-reduced, so edges are anti-aliased."""
    s = supersample
    w, h = size
    canvas = Image.new("L", (w * s, h * s), 0)
    draw = ImageDraw.Draw(canvas)
    for curve in curves:
        xy = (curve * height_px + origin) * s
        n = len(xy)
        pressure = 1.0 + rng.uniform(-0.25, 0.25) * np.sin(
            np.linspace(0, np.pi, n) + rng.uniform(0, np.pi)
        )
        for k in range(n - 1):
            r = max(pen_px * pressure[k] * s / 2, 0.5)
            x0, y0 = xy[k]
            x1, y1 = xy[k + 1]
            draw.line([(x0, y0), (x1, y1)], fill=255, width=max(1, round(2 * r)))
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=255)
        r = max(pen_px * pressure[-1] * s / 2, 0.5)
        draw.ellipse([xy[-1][0] - r, xy[-1][1] - r, xy[-1][0] + r, xy[-1][1] + r], fill=255)
    small = canvas.reduce(s)
    return np.asarray(small, dtype=np.float64) / 255.0


def render_digit(
    label: int, style: str, render: str, rng: np.random.Generator, hand: Hand | None = None
) -> tuple[Image.Image, str]:
    """One digit of ``label`` in ``style``, rendered as ``render`` (by ``hand``, if given):
    (grayscale image, the file format it is to be saved in)."""
    curves = _writer_strokes(label, style, rng, hand)

    def pen_share(lo: float, hi: float) -> float:  # the hand's pen, or one drawn at random
        if hand is None:
            return rng.uniform(lo, hi)
        return lo + (hi - lo) * float(np.clip(hand.pen + rng.normal(0, 0.08), 0, 1))

    if render in ("canvas_dark", "canvas_light"):
        side = 280
        height = rng.uniform(110, 220)
        pen = height * pen_share(0.05, 0.14)
        cx, cy = side / 2 + rng.uniform(-30, 30), side / 2 + rng.uniform(-20, 20)
        ink = _draw(curves, height, pen, (side, side), (cx, cy), rng)
        arr = 255 * (1 - ink) if render == "canvas_dark" else 255 * ink
        return Image.fromarray(np.rint(arr).astype(np.uint8), mode="L"), "PNG"
    if render == "scan":
        height = rng.uniform(20, 50)  # low resolution: a form's box at 100-200 dpi
        pen = max(1.2, height * pen_share(0.08, 0.24))  # thick pens at scan resolution
        w, h = int(height * rng.uniform(1.6, 2.6)), int(height * rng.uniform(1.3, 1.9))
        # off-centre inside the box, the digit may sit anywhere it fits
        cx = rng.uniform(0.3, 0.7) * w
        cy = rng.uniform(0.42, 0.58) * h
        ink = _draw(curves, height, pen, (w, h), (cx, cy), rng)
        ink = (
            np.asarray(
                Image.fromarray(np.rint(ink * 255).astype(np.uint8)).filter(
                    ImageFilter.GaussianBlur(rng.uniform(0.3, 1.4))
                ),
                dtype=np.float64,
            )
            / 255.0
        )
        paper = rng.uniform(0.8, 0.97)
        ys, xs = np.mgrid[0:h, 0:w]
        a = rng.uniform(0, 2 * np.pi)
        grad = rng.uniform(0.0, 0.08) * (np.cos(a) * xs / w + np.sin(a) * ys / h)
        texture = rng.normal(0.0, rng.uniform(0.005, 0.03), (h, w))
        ink_level = rng.uniform(0.05, 0.35)
        gray = (paper - grad + texture) * (1 - ink) + ink_level * ink
        img = Image.fromarray(np.clip(np.rint(gray * 255), 0, 255).astype(np.uint8), mode="L")
        return img, "JPEG" if rng.random() < 1 / 3 else "PNG"
    if render == "photo":
        side = int(rng.integers(300, 640))
        height = side * rng.uniform(0.3, 0.6)
        pen = height * pen_share(0.04, 0.12)
        cx = side / 2 + rng.uniform(-0.15, 0.15) * side
        cy = side / 2 + rng.uniform(-0.12, 0.12) * side
        ink = _draw(curves, height, pen, (side, side), (cx, cy), rng, supersample=2)
        ys, xs = np.mgrid[0:side, 0:side] / side
        a = rng.uniform(0, 2 * np.pi)
        light = 0.75 + rng.uniform(0.2, 0.5) * (np.cos(a) * (xs - 0.5) + np.sin(a) * (ys - 0.5))
        albedo = 0.9 - rng.uniform(0.6, 0.78) * ink
        gray = albedo * light + rng.normal(0.0, 0.025, (side, side))
        img = Image.fromarray(np.clip(np.rint(gray * 255), 0, 255).astype(np.uint8), mode="L")
        return img, "JPEG"
    raise ValueError(f"unknown render {render!r}; expected one of {RENDERS}")
