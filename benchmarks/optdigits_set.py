"""Real digits from writers outside MNIST: the UCI optdigits test set, as small scans.

UCI's "Optical Recognition of Handwritten Digits" (Alpaydin and Kaynak, 1998) holds digits
that 43 people wrote on preprinted forms, outside MNIST; its test set (1,797 digits from 13
of them) ships with scikit-learn as ``load_digits``: each digit an 8x8 grid of ink counts
0..16 (a 32x32 bitmap counted in 4x4 blocks). Its writers make the styles MNIST lacks (the
European 1 with a flag and a base, among others), and its digits are thick, low-resolution
blobs: a check of the real thing beside the programmatic ``writers_set``. Never trained on.

Each digit becomes a file as a scanned form gives it: the grid enlarged to 24-48 px
(bicubic, or nearest for a blocky scan), dark ink on light paper with some grain, placed
off-centre on a larger page, a third saved as JPEG; then read as ``mnistlab predict`` reads
a file. With ``bitmaps=True`` each grid is first made back into a black-and-white 32x32
bitmap, as the forms were scanned before UCI counted them into 8x8 (enlarged bicubic to
32x32, thresholded at 35-50% of full ink): hard-edged strokes with no grey, the harder
set. Needs scikit-learn (``pip install scikit-learn``); without it ``available()`` is
False and ``bench_writers.py`` leaves the rows out.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

SET_TAG = 7_351  # this set's own randomness
BITMAP_TAG = 32  # the bitmap rendering's own stream beside it


@dataclass(frozen=True)
class ScannedDigit:
    label: int
    data: bytes  # an encoded PNG or JPEG file
    render: str  # "scan" or "scan_jpeg"


def available() -> bool:
    """Whether scikit-learn (which holds the data) is installed."""
    return importlib.util.find_spec("sklearn") is not None


def make_optdigits_set(
    count: int | None = None, seed: int = 0, *, bitmaps: bool = False
) -> list[ScannedDigit]:
    """``count`` digits (default all 1,797) of the optdigits test set as image files, from
    the 8x8 grids or (``bitmaps``) from 32x32 black-and-white bitmaps rebuilt from them."""
    from sklearn.datasets import load_digits

    data = load_digits()
    grids, labels = data.images / 16.0, data.target.astype(int)
    rng = np.random.default_rng([SET_TAG, seed, BITMAP_TAG] if bitmaps else [SET_TAG, seed])
    order = rng.permutation(len(labels))[:count]
    return [
        _scan(_bitmap(grids[i], rng) if bitmaps else grids[i], int(labels[i]), rng) for i in order
    ]


def _bitmap(grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An 8x8 grid of ink 0..1 as a 32x32 bitmap of 0.0 and 1.0."""
    ink = Image.fromarray((grid * 255).astype(np.uint8)).resize((32, 32), Image.Resampling.BICUBIC)
    return (np.asarray(ink, dtype=np.float32) / 255.0 >= rng.uniform(0.35, 0.5)).astype(np.float64)


def _scan(grid: np.ndarray, label: int, rng: np.random.Generator) -> ScannedDigit:
    side = int(rng.integers(24, 49))
    blocky = rng.random() < 0.3
    ink = Image.fromarray((grid * 255).astype(np.uint8)).resize(
        (side, side), Image.Resampling.NEAREST if blocky else Image.Resampling.BICUBIC
    )
    ink = np.asarray(ink, dtype=np.float32) / 255.0
    page_h, page_w = (int(side * rng.uniform(1.3, 2.2)) for _ in range(2))
    paper = rng.uniform(0.8, 0.97) + rng.normal(0.0, rng.uniform(0.0, 0.03), (page_h, page_w))
    top, left = int(rng.integers(0, page_h - side + 1)), int(rng.integers(0, page_w - side + 1))
    dark = rng.uniform(0.05, 0.3)  # the ink's own grey
    window = paper[top : top + side, left : left + side]
    paper[top : top + side, left : left + side] = window * (1 - ink) + dark * ink
    image = Image.fromarray((np.clip(paper, 0, 1) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    jpeg = rng.random() < 1 / 3
    if jpeg:
        image.save(buffer, "JPEG", quality=int(rng.integers(50, 91)))
    else:
        image.save(buffer, "PNG")
    return ScannedDigit(label, buffer.getvalue(), "scan_jpeg" if jpeg else "scan")
