"""Test-time views: the few ways the recognizer looks at one preprocessed digit.

A digit is read as it is and turned 14 degrees either way, all three a little softened, and
the model's probabilities are averaged over the views (test-time augmentation). Writers
outside MNIST slant their digits more than MNIST does, and a low-resolution scan gives
hard-edged blocks where MNIST has soft, anti-aliased strokes: the softening (a Gaussian of
0.5 px) brings those back toward MNIST's look, the turned views let a slanted digit meet a
model that learned it upright. On MNIST test the views change next to nothing (0.9951 ->
0.9953 with the bundled ensemble); the README gives the figures and how the angle and the
blur were chosen.

Plain NumPy, batched: one bilinear resampling per angle for the whole batch.
"""

from __future__ import annotations

import math

import numpy as np

VIEW_ANGLES = (0.0, 14.0, -14.0)
"""Degrees each view turns the digit (counter-clockwise), about the frame's centre."""

SOFTEN_SIGMA = 0.5
"""The softening Gaussian's standard deviation, in pixels of the 28x28 frame."""


def reading_views(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 digits -> (V * N, 28, 28) uint8: every view of the batch in turn,
    view 0 (the digit softened, not turned) first."""
    soft = soften(images)
    return np.concatenate([soft if angle == 0.0 else rotate(soft, angle) for angle in VIEW_ANGLES])


def soften(images: np.ndarray, sigma: float = SOFTEN_SIGMA) -> np.ndarray:
    """A separable Gaussian blur of each (28, 28) uint8 image, rescaled so its brightest
    pixel stays as bright as before (a blur lowers a thin stroke's peak)."""
    radius = max(1, math.ceil(4 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    x = images.astype(np.float32)
    for axis in (1, 2):
        padded = np.pad(x, [(radius, radius) if a == axis else (0, 0) for a in range(3)])
        size = x.shape[axis]
        blurred = np.zeros_like(x)
        for k, weight in enumerate(taps):
            blurred += weight * padded.take(np.arange(k, k + size), axis=axis)
        x = blurred
    peak_before = images.max(axis=(1, 2), initial=0).astype(np.float32)
    peak_after = x.max(axis=(1, 2), initial=0.0)
    gain = np.divide(peak_before, peak_after, out=np.zeros_like(peak_after), where=peak_after > 0)
    return _to_uint8(x * gain[:, None, None])


def rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    """Each (H, W) uint8 image turned ``degrees`` counter-clockwise about its centre,
    bilinear, with black outside the frame."""
    n, h, w = images.shape
    t = math.radians(degrees)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    # Each output pixel samples the point that the turn brings to it: the output point turned
    # back. Rows grow downward, so turning back by ``degrees`` on screen is
    # (x, y) -> (x cos - y sin, x sin + y cos) about the centre.
    dy, dx = ys - cy, xs - cx
    src_x = cx + dx * math.cos(t) - dy * math.sin(t)
    src_y = cy + dx * math.sin(t) + dy * math.cos(t)
    y0, x0 = np.floor(src_y).astype(int), np.floor(src_x).astype(int)
    fy, fx = (src_y - y0).astype(np.float32), (src_x - x0).astype(np.float32)
    x = images.astype(np.float32)
    out = np.zeros((n, h, w), dtype=np.float32)
    for oy, ox, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                           (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):  # fmt: skip
        yy, xx = y0 + oy, x0 + ox
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        out += np.where(inside, weight, 0.0) * x[:, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
    return _to_uint8(out)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 255.0)).astype(np.uint8)
