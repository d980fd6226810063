"""Distorted versions of MNIST digits, for benchmarking how well preprocessing + model hold up.

Each kind changes one thing about how a person's digit differs from an MNIST digit
(size, position, polarity, stroke width, slant, compression, lighting), so a benchmark
can run ``preprocess_image`` on the variant and report accuracy per kind.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["ROBUSTNESS_KINDS", "make_robustness_variants"]

ROBUSTNESS_KINDS: tuple[str, ...] = (
    "canvas280",
    "off_center",
    "inverted",
    "thick",
    "thin",
    "rotated",
    "jpeg75",
    "photo",
)
"""The variant kinds ``make_robustness_variants`` knows."""

_UP = 4  # stroke and rotation edits happen at 4x scale (112 px), where they can be subtle


def make_robustness_variants(
    digit28: np.ndarray, kind: str, rng: np.random.Generator
) -> Image.Image:
    """Return one distorted copy of an MNIST digit as a grayscale (mode "L") Pillow image.

    ``digit28`` is a (28, 28) uint8 MNIST digit (white on black). Kinds:

    - ``canvas280``: scaled 10x onto a 280x280 canvas, like a drawing page;
    - ``off_center``: scaled 4-7x and placed near an edge of a 400x400 canvas;
    - ``inverted``: black on white, otherwise unchanged;
    - ``thick`` / ``thin``: strokes dilated / eroded (max / min filter at 4x scale);
    - ``rotated``: turned by a random angle in [-15, 15] degrees (at 4x scale);
    - ``jpeg75``: scaled 8x and saved as JPEG at quality 75;
    - ``photo``: dark ink on paper under uneven light with sensor noise, 10x, JPEG 85.

    Random choices come from ``rng`` only, so a seeded generator gives the same images.
    """
    digit = _check_digit(digit28)
    if kind not in ROBUSTNESS_KINDS:
        raise ValueError(f"unknown robustness kind {kind!r}; expected one of {ROBUSTNESS_KINDS}")
    img = Image.fromarray(digit, mode="L")
    if kind == "canvas280":
        return _scaled(img, 10)
    if kind == "off_center":
        return _off_center(img, rng)
    if kind == "inverted":
        return Image.fromarray(255 - digit, mode="L")
    if kind == "thick":
        return _scaled(img, _UP).filter(ImageFilter.MaxFilter(7))
    if kind == "thin":
        return _scaled(img, _UP).filter(ImageFilter.MinFilter(5))
    if kind == "rotated":
        angle = float(rng.uniform(-15.0, 15.0))
        return _scaled(img, _UP).rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=0)
    if kind == "jpeg75":
        return _jpeg(_scaled(img, 8), quality=75)
    return _photo(img, rng)


def _check_digit(digit28: np.ndarray) -> np.ndarray:
    """Validate a (28, 28) uint8 digit; float arrays in [0, 1] or [0, 255] are accepted too."""
    arr = np.asarray(digit28)
    if arr.shape != (28, 28):
        raise ValueError(f"expected a (28, 28) digit, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise ValueError(f"expected a uint8 or finite numeric digit, got {arr.dtype}")
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _scaled(img: Image.Image, factor: int) -> Image.Image:
    """Upscale smoothly (bicubic), as a digit drawn at a larger size would look."""
    size = (img.width * factor, img.height * factor)
    return img.resize(size, Image.Resampling.BICUBIC)


def _off_center(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The digit, 4-7x, near a random edge or corner of a 400x400 black canvas."""
    canvas_side = 400
    big = _scaled(img, int(rng.integers(4, 8)))
    room = canvas_side - big.width

    def near_edge() -> int:
        """A coordinate in the outer fifth of the free range, on a random side."""
        if rng.random() < 0.5:
            return int(rng.integers(0, room // 5 + 1))
        return int(rng.integers(room - room // 5, room + 1))

    x, y = near_edge(), near_edge()
    canvas = Image.new("L", (canvas_side, canvas_side), 0)
    canvas.paste(big, (x, y))
    return canvas


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    """Round-trip through JPEG at ``quality``."""
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out.convert("L")


def _photo(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Dark ink on paper, lit unevenly from a random side, with noise, as a phone sees it."""
    ink = np.asarray(_scaled(img, 10), dtype=np.float64) / 255.0  # 280x280, 1 = ink
    h, w = ink.shape
    albedo = 0.9 - 0.75 * np.clip(ink, 0.0, 1.0)  # paper 0.9, ink 0.15
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    angle = rng.uniform(0.0, 2 * np.pi)
    ramp = np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5)  # in [-0.71, 0.71]
    light = 0.7 + 0.5 * ramp  # from about 0.35 to 1.05 across the page
    photo = albedo * light + rng.normal(0.0, 0.03, size=(h, w))
    arr = np.clip(np.rint(photo * 255.0), 0, 255).astype(np.uint8)
    return _jpeg(Image.fromarray(arr, mode="L"), quality=85)
