"""Turn any image a person gives into a 28x28 MNIST-like digit: white ink on black, uint8.

A model trained on MNIST only recognizes inputs prepared the way MNIST was: each digit
was size-normalized so its longer side fills a 20x20 box (aspect ratio kept, anti-aliased),
then shifted by whole pixels so its center of mass sits at (14, 14) of a 28x28 frame.
Canvas drawings, scans and phone photos look nothing like that, so this module redoes
that pipeline for them:

1. decode safely: file size and pixel count are checked before pixels are decoded;
   a picture more than twice the working size is reduced while it decodes, so memory
   stays bounded (``decode_cost`` tells how much); EXIF rotation is applied;
2. flatten transparency sensibly and convert to grayscale at a bounded working size;
3. decide which way the ink runs (dark on light or light on dark), subtract a smooth
   background estimate (uneven light), suppress the noise floor and stretch contrast
   so ink is 1.0 and paper is 0.0;
4. drop specks (small connected components) and crop to the ink's bounding box;
5. thicken very thin strokes (pen on a big photo), scale the longer side to 20 px and
   place the digit by its center of mass in the 28x28 frame.

The pipeline expects one digit on a plain background; a photo showing the table around
the paper, or several digits, gives a poor crop.

One module, though long: the steps above are one pipeline whose order matters (each
step's input is the previous one's output), and decoding sits with it because its memory
bound depends on the size the pipeline will reduce the image to.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError

from mnistlab.errors import ImageError

__all__ = [
    "BOX_SIZE",
    "FRAME_SIZE",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "WORK_MAX_SIDE",
    "decode_cost",
    "decode_image",
    "decode_opened",
    "load_image",
    "open_image",
    "preprocess_file",
    "preprocess_image",
]

MAX_FILE_BYTES = 20 * 1024 * 1024
"""Largest image file accepted (20 MiB); bigger files are refused before being read."""

MAX_PIXELS = 40_000_000
"""Largest image accepted (40 megapixels), checked from the header before decoding."""

WORK_MAX_SIDE = 1024
"""Images are reduced so their longer side is at most this before analysis (speed, noise)."""

FRAME_SIZE = 28
"""Side of the output frame, as in MNIST."""

BOX_SIZE = 20
"""The digit's longer side is scaled to this many pixels, as in MNIST."""

_BG_GRID = 8  # blocks along the longer side for the background estimate ...
_BG_MIN_CELL = 16.0  # ... each at least this many pixels wide
_BG_CELL_SAMPLES = 24  # a cell's percentiles use at least this many pixels a side
_EVEN_BORDER = 0.08  # border brightness spread (20th to 80th percentile) of an even background
_MIN_PAPER = 0.2  # paper darker than this is not divided by (noise would blow up)
_NOISE_SIGMAS = 4.0  # ink must stand this many local noise sigmas above the paper
_MIN_CONTRAST = 0.05  # weaker "ink" than this (of full scale) counts as a blank image
_MIN_SNR = 7.0  # ... and so does ink weaker than this many noise sigmas
_SPECK_FRACTION = 0.03  # components lighter than this share of the largest are specks
_FAINT_LINKED = 0.15  # faint ink this strong (of full) stays where it continues a stroke
_MIN_STROKE_PX = 1.0  # strokes thinner than this in the 20 px box get thickened ...
_TARGET_STROKE_PX = 2.2  # ... to about this width (MNIST's median is about 2.4)
_THICKEN_SCALE = 4  # thickening happens at this multiple of the final resolution


def load_image(path: str | os.PathLike[str], *, max_side: int | None = None) -> Image.Image:
    """Open and decode an image file, refusing anything too big, broken or not an image.

    Limits are checked before the pixels are decoded: the file size against
    ``MAX_FILE_BYTES`` and the header's width x height against ``MAX_PIXELS``, so a
    decompression bomb costs nothing. ``max_side`` lets JPEG decode at a reduced scale
    (never below ``max_side`` on either side) and box-reduces any image whose longer side
    is at least twice ``max_side`` (keeping it at least ``max_side``); smaller images
    decode exactly as without it. EXIF orientation is applied, so phone
    photos come out upright. Raises ``ImageError`` naming the file and the problem.
    """
    p = Path(path)
    return decode_image(_read_limited(p), name=str(p), max_side=max_side)


def decode_image(
    data: bytes | BinaryIO,
    *,
    name: str = "image",
    max_side: int | None = None,
    formats: tuple[str, ...] | None = None,
) -> Image.Image:
    """Decode image file bytes (an upload, a file's content) with the same limits as
    ``load_image``; ``data`` may also be a seekable binary file. ``name`` labels error
    messages, ``formats`` (Pillow's names, e.g. ``("PNG", "JPEG")``) restricts what opens.

    With ``max_side``, an image more than twice that size is reduced while decoding (JPEG
    by DCT scaling, then every format by an integer box average in bands of rows), so the
    working copy never exceeds about ``(2 * max_side)**2`` pixels; what it costs at most
    is ``decode_cost`` of the opened image."""
    return decode_opened(open_image(data, name=name, formats=formats), name=name, max_side=max_side)


def open_image(
    data: bytes | BinaryIO, *, name: str = "image", formats: tuple[str, ...] | None = None
) -> Image.Image:
    """Read an image's header only (nothing is decoded yet) and check its size limits:
    at most ``MAX_FILE_BYTES`` of data and ``MAX_PIXELS`` pixels. Pass the result to
    ``decode_opened``; ``decode_cost`` says what that will cost in memory."""
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        stream.seek(0, io.SEEK_END)
        size = stream.tell()
        stream.seek(0)
    except (OSError, ValueError) as exc:
        raise ImageError(f"{name}: cannot read the image data ({_reason(exc)})") from exc
    if size == 0:
        raise ImageError(f"{name}: no data, expected an image file")
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{name}: larger than the limit of {MAX_FILE_BYTES // 2**20} MiB")
    try:
        with warnings.catch_warnings():
            # Our own limit is lower than Pillow's warning threshold; we raise below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(stream, formats=list(formats) if formats else None)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image is too large ({exc})") from exc
    except UnidentifiedImageError as exc:
        if formats:
            raise ImageError(
                f"{name}: not a readable image (expected {' or '.join(formats)})"
            ) from exc
        raise ImageError(f"{name}: not a readable image (unrecognized file format)") from exc
    except Exception as exc:  # Pillow's format sniffers raise many types on garbage
        raise ImageError(f"{name}: not a readable image ({_reason(exc)})") from exc

    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name}: image is {width}x{height} = {width * height:,} pixels, "
            f"more than the limit of {MAX_PIXELS:,}"
        )
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image has no pixels ({width}x{height})")
    return img


def decode_opened(
    img: Image.Image, *, name: str = "image", max_side: int | None = None
) -> Image.Image:
    """Decode an image from ``open_image``: pixels loaded, reduced when ``max_side`` asks
    (see ``decode_image``), EXIF orientation applied."""
    if max_side is not None and _is_jpeg(img):
        img.draft(img.mode, (max_side, max_side))
    try:
        img.load()
        orientation = _exif_orientation(img)
        if max_side is not None:
            reduced = _reduce_for_work(img, max_side)
            if reduced is not img:
                img.close()  # frees the full-size pixels now, not when the caller lets go
                img = reduced
    except Exception as exc:  # truncated/corrupt data: OSError, SyntaxError, ValueError, ...
        raise ImageError(f"{name}: image data is corrupt or truncated ({_reason(exc)})") from exc
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    if method is not None:
        with contextlib.suppress(Exception):  # a broken EXIF block must not lose a good image
            img = img.transpose(method)
    return img


def decode_cost(img: Image.Image, *, max_side: int | None = None) -> int:
    """Bytes of memory ``decode_opened(img, max_side=max_side)`` needs at most, from the
    header alone: the decoded pixels (Pillow keeps 1, 2 or 4 bytes a pixel), for JPEG
    libjpeg's whole-image DCT coefficient buffers (2 bytes per coefficient, held by
    progressive and multi-scan files even when decoding at a reduced scale), and the
    reduced copy."""
    width, height = img.size
    cost = 0
    if _is_jpeg(img):
        scale = _jpeg_draft_scale(img.size, max_side) if max_side is not None else 1
        width, height = -(-width // scale), -(-height // scale)
        if img.info.get("progressive") or _jpeg_later_scans(img):
            cost += _jpeg_coefficient_bytes(img)
    cost += width * height * _BYTES_PER_PIXEL.get(img.mode, 4)
    if max_side is not None and max(width, height) // max_side >= 2:
        factor = max(width, height) // max_side
        reduced = -(-width // factor) * -(-height // factor)
        cost += reduced * 4 + _BAND_PIXELS * 32  # the result, and one band's copies
    return cost


def preprocess_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Load an image file and turn it into a (28, 28) uint8 MNIST-like digit."""
    img = load_image(path, max_side=WORK_MAX_SIDE)
    return preprocess_image(img, name=str(path))


def preprocess_image(image: Image.Image | np.ndarray, *, name: str = "image") -> np.ndarray:
    """Turn a digit image into a (28, 28) uint8 array shaped like an MNIST digit.

    ``image`` is a Pillow image of any mode, or an array: (H, W) grayscale, (H, W, 3)
    RGB or (H, W, 4) RGBA; uint8 0..255, bool, or float 0..1. Dark-on-light and
    light-on-dark both work; transparent pixels count as background. An input that is
    already MNIST-like comes back nearly unchanged. ``name`` labels error messages.
    Raises ``ImageError`` when the image is too large or holds no ink.
    """
    img = _as_pil(image, name)
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name}: image is {width}x{height} pixels, more than the limit of {MAX_PIXELS:,}"
        )
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image has no pixels ({width}x{height})")
    gray = _to_gray(img, name)  # (H, W) float32 in [0, 1] at working size
    ink = _ink_map(gray, name)  # (H, W) float32, ink 1.0, background 0.0
    kept = _drop_specks(ink >= 0.5, ink)
    if not kept.any():
        raise ImageError(f"{name}: no ink found (the image looks blank)")
    # Faint ink stays near the strokes (their soft edges) and where it continues them: a
    # low-resolution scan's strokes fade in and out along their length.
    radius = max(2, round(max(ink.shape) / 200))
    near = _dilate(kept, radius) | _connected_to(kept, ink >= _FAINT_LINKED)
    ink = np.where(near, ink, 0.0).astype(np.float32)
    top, bottom, left, right = _bbox(ink > 0)
    patch = ink[top:bottom, left:right]
    stroke = _stroke_width(kept[top:bottom, left:right])
    digit = _fit_box(patch, stroke)
    return _center_in_frame(digit)


# ----------------------------------------------------------------------------- decoding


def _read_limited(p: Path) -> bytes:
    """Read a regular file of at most MAX_FILE_BYTES (no FIFOs or devices: they can hang)."""
    try:
        if not p.is_file():
            what = "no such file" if not p.exists() else "not a regular file"
            raise ImageError(f"{p}: {what}")
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(f"{p}: file is larger than the limit of {MAX_FILE_BYTES // 2**20} MiB")
        with p.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ImageError(f"{p}: cannot read file ({_reason(exc)})") from exc
    if not data:
        raise ImageError(f"{p}: file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{p}: file is larger than the limit of {MAX_FILE_BYTES // 2**20} MiB")
    return data


_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
"""Bytes a pixel of each mode takes in Pillow's memory; every other mode takes 4."""

_BAND_PIXELS = 1 << 20  # reduction works on bands of rows holding about this many pixels

_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # EXIF orientation -> the transposition that makes the picture upright (as ImageOps)


def _is_jpeg(img: Image.Image) -> bool:
    return img.format in ("JPEG", "MPO")


def _exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright); 1 when the EXIF block is missing or broken."""
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:
        return 1


def _jpeg_draft_scale(size: tuple[int, int], max_side: int) -> int:
    """The DCT scale Pillow's ``draft(mode, (max_side, max_side))`` picks: 1, 2, 4 or 8."""
    scale = min(size[0] // max_side, size[1] // max_side)
    return next((s for s in (8, 4, 2) if scale >= s), 1)


def _jpeg_later_scans(img: Image.Image) -> bool:
    """Whether a JPEG has a start-of-scan marker after its first scan's header (a file
    Pillow has only opened sits just past that header). Entropy-coded data cannot hold
    the bytes FF DA, so any later ones are another scan, or a second picture after the
    end of this one; either way libjpeg is assumed to buffer the whole image. True when
    the data cannot be read."""
    stream = getattr(img, "fp", None)
    if stream is None:
        return True
    try:
        start = stream.tell()
        try:
            previous = b""
            while chunk := stream.read(1 << 20):
                if b"\xff\xda" in previous[-1:] + chunk:
                    return True
                previous = chunk
            return False
        finally:
            stream.seek(start)
    except Exception:
        return True


def _jpeg_coefficient_bytes(img: Image.Image) -> int:
    """libjpeg's whole-image coefficient buffers: 2 bytes per coefficient of each component."""
    width, height = img.size
    layers = getattr(img, "layer", None) or [(None, 1, 1, None)] * 4
    h_max = max(layer[1] for layer in layers) or 1
    v_max = max(layer[2] for layer in layers) or 1
    total = 0
    for _, h, v, _ in layers:
        blocks_x = -(-width * max(h, 1) // (h_max * 8))
        blocks_y = -(-height * max(v, 1) // (v_max * 8))
        total += (blocks_x + 1) * (blocks_y + 1) * 64 * 2  # rounded up to whole MCUs
    return total


def _work_mode(img: Image.Image) -> str:
    """The mode ``_normalize_mode`` would give this image: F, LA, RGBA, L or RGB."""
    mode = img.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return "F"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return "LA" if mode in ("LA", "La", "L") else "RGBA"
    if mode in ("L", "RGB"):
        return mode
    return "L" if mode == "1" else "RGB"


def _reduce_for_work(img: Image.Image, max_side: int) -> Image.Image:
    """Box-average an image whose longer side is at least twice ``max_side`` by the
    integer factor that keeps that side at least ``max_side``, in bands of rows, so no
    full-size converted copy is ever made. The mode becomes what ``_normalize_mode``
    gives (high bit depths scaled to 0..1 exactly as it scales them); smaller images
    come back untouched."""
    width, height = img.size
    factor = max(width, height) // max_side
    if factor < 2:
        return img
    mode = _work_mode(img)
    rows = max(1, _BAND_PIXELS // (width * factor)) * factor
    out = Image.new(mode, (-(-width // factor), -(-height // factor)))
    scale = _high_bit_range(img, rows) if mode == "F" else None
    for top in range(0, height, rows):
        band = img.crop((0, top, width, min(height, top + rows)))
        if scale is not None:
            lo, hi = scale
            values = _finite_values(band)
            values -= lo
            values /= max(hi - lo, 1e-12)
            np.clip(values, 0.0, 1.0, out=values)
            band = Image.fromarray(values.astype(np.float32), mode="F")
        elif band.mode != mode:
            band = band.convert(mode)
        out.paste(band.reduce(factor), (0, top // factor))
    return out


def _finite_values(band: Image.Image) -> np.ndarray:
    """A band's pixels as float64, NaN and infinities zeroed (as ``_normalize_mode`` does)."""
    values = np.array(band, dtype=np.float64)
    return np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def _high_bit_range(img: Image.Image, rows: int) -> tuple[float, float]:
    """The (lo, hi) that ``_normalize_mode`` scales a high-bit-depth image by, band by band."""
    width, height = img.size
    lowest, top = math.inf, -math.inf
    for start in range(0, height, rows):
        band = _finite_values(img.crop((0, start, width, min(height, start + rows))))
        lowest, top = min(lowest, float(band.min())), max(top, float(band.max()))
    lo = min(0.0, lowest)
    if img.mode == "F" and top <= 1.0:
        hi = 1.0
    elif top <= 255.0:
        hi = 255.0
    elif top <= 65535.0:
        hi = 65535.0
    else:
        hi = top
    return lo, hi


def _reason(exc: BaseException) -> str:
    """A short human reason for an exception from a decoder."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_pil(image: Image.Image | np.ndarray, name: str) -> Image.Image:
    """Accept a Pillow image or a numpy array; arrays become L, RGB, RGBA or F images."""
    if isinstance(image, Image.Image):
        return image
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{name}: expected a PIL image or numpy array, got {type(image).__name__}")
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(
            f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) array, got {arr.shape}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"{name}: image has no pixels ({arr.shape})")
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: image has more than {MAX_PIXELS:,} pixels")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise ImageError(f"{name}: unsupported array dtype {arr.dtype}")
        values = arr.astype(np.float64)
        if not np.isfinite(values).all():
            raise ImageError(f"{name}: array contains NaN or infinite values")
        if np.issubdtype(arr.dtype, np.floating) and values.max(initial=0.0) <= 1.0:
            values = values * 255.0
        arr = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2] if arr.ndim == 3 else 2]
    return Image.fromarray(np.ascontiguousarray(arr), mode=mode)


def _to_gray(img: Image.Image, name: str) -> np.ndarray:
    """Grayscale float32 in [0, 1] at working size, transparency flattened.

    Transparent pixels are background. When most of the image is transparent (a canvas
    drawing), the opaque pixels are the strokes and the fill is chosen to contrast with
    them, so dark strokes and white strokes on a transparent canvas both work. When
    most is opaque (a photo with a transparent margin), the fill matches the opaque
    part's median, i.e. the paper.
    """
    try:
        img = _normalize_mode(img)
        if max(img.size) > WORK_MAX_SIDE:
            scale = WORK_MAX_SIDE / max(img.size)
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img = img.resize(size, Image.Resampling.BOX)
        if img.mode == "F":
            return np.asarray(img, dtype=np.float32)
        alpha = None
        if img.mode in ("RGBA", "LA"):
            alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
            img = img.convert("RGB") if img.mode == "RGBA" else img.getchannel("L")
        gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except ImageError:
        raise
    except Exception as exc:  # exotic modes Pillow cannot convert
        raise ImageError(f"{name}: unsupported image ({_reason(exc)})") from exc
    if alpha is not None and alpha.min() < 0.999:
        coverage = float(alpha.mean())
        if coverage <= 0.0:
            raise ImageError(f"{name}: no ink found (the image is fully transparent)")
        if coverage < 0.5:
            stroke_level = float((alpha * gray).sum() / alpha.sum())
            fill = 0.0 if stroke_level > 0.5 else 1.0
        else:
            fill = float(np.median(gray[alpha > 0.5])) if (alpha > 0.5).any() else 1.0
        gray = alpha * gray + (1.0 - alpha) * fill
    return gray.astype(np.float32)


def _normalize_mode(img: Image.Image) -> Image.Image:
    """Reduce Pillow's many modes to L, LA, RGB, RGBA or F (high bit depth scaled to 0..1)."""
    mode = img.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        lo = min(0.0, float(arr.min()))
        top = float(arr.max())
        if mode == "F" and top <= 1.0:
            hi = 1.0
        elif top <= 255.0:
            hi = 255.0
        elif top <= 65535.0:
            hi = 65535.0
        else:
            hi = top
        scaled = np.clip((arr - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        return Image.fromarray(scaled.astype(np.float32), mode="F")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        return img.convert("LA") if mode in ("LA", "La", "L") else img.convert("RGBA")
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    return img.convert("RGB")


# ---------------------------------------------------------------------------- ink map


def _ink_map(gray: np.ndarray, name: str) -> np.ndarray:
    """Ink strength in [0, 1] with the background at 0, whichever way the ink runs.

    On an even background (a plain border) the background is one level. Otherwise the
    polarity comes from a two-sided fit, and the background is a smooth surface fitted
    to block percentiles (the 25th under bright ink, the 75th under dark ink, so ink
    covering much of a block does not count as paper); subtracting it removes a gradient
    of light across a photo. Dark ink is measured relative to the paper's brightness,
    which cancels uneven light. The noise level is then measured per block, and only ink
    standing out of the local noise is kept, so the grain of a dim corner does not turn
    into specks of "ink".
    """
    ring = _border_ring(gray)
    ring_median = float(np.median(ring))
    # A plain border (a canvas, a scan, a clean crop) means an even background: one level
    # serves, and no surface fit can be fooled by a digit that fills most of the image.
    low, high = np.percentile(ring, (20, 80))
    even = float(high - low) < _EVEN_BORDER

    def surface(q: float, ink_sign: float) -> np.ndarray:
        if even:
            return np.full(gray.shape, ring_median, dtype=np.float32)
        return _background(gray, q, ink_sign)

    # Which way does the ink run? Against a two-sided fit through block medians, the
    # ink is the side with the stronger excursions.
    excursion = _box2(gray - surface(50, 0.0))
    peak_light, peak_dark = float(excursion.max()), float(-excursion.min())
    tie = abs(peak_dark - peak_light) < 0.02
    invert = ring_median > 0.5 if tie else peak_dark > peak_light
    if invert:
        # Paper reflects a share of the light that falls on it and ink a smaller share,
        # so dark ink's darkening relative to the paper is the same in bright and dim light.
        under = surface(75, -1.0)
        residual = under - gray
        residual /= np.maximum(under, _MIN_PAPER, out=under)
    else:
        residual = gray - surface(25, +1.0)
    # Is it grainy? Every 4th pixel of the smooth noise map tells (at 1/16 of the cost).
    _, sigma = _paper_noise(residual, even, step=4)
    if min(residual.shape) >= 200 and float(np.median(sigma)) > 0.01:
        residual = _box3(residual)  # grainy photo: average out noise, strokes are wide here
    level, sigma = _paper_noise(residual, even)
    excess = residual - level
    contrast = _peak(excess)
    snr = _peak(excess / np.maximum(sigma, 1.0 / 255.0))
    if contrast < _MIN_CONTRAST or snr < _MIN_SNR:
        raise ImageError(
            f"{name}: no ink found (the image looks blank: contrast {contrast:.3f}, "
            f"signal-to-noise {snr:.1f})"
        )
    ink = np.clip(excess - _NOISE_SIGMAS * sigma, 0.0, None)
    threshold = _otsu(ink)
    core = ink[ink > threshold]
    hi = float(np.percentile(core, 98)) if core.size else float(ink.max())
    hi = hi if hi > 0.0 else float(ink.max())
    return np.clip(ink / max(hi, 1e-6), 0.0, 1.0).astype(np.float32)


def _paper_noise(
    residual: np.ndarray, even: bool, step: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Maps of the paper's level and noise sigma (at every ``step``-th pixel).

    On an even background the border ring is paper: its median and MAD serve. Otherwise
    each block's lower tail is used: ink only raises values, so the 10th and 25th
    percentiles of a block are paper unless ink covers most of it; for Gaussian noise
    they sit 1.28 and 0.67 sigma below the mean.
    """
    if even:
        ring = _border_ring(residual)
        median = float(np.median(ring))
        mad = 1.4826 * float(np.median(np.abs(ring - median)))
        shape = residual[::step, ::step].shape
        return np.full(shape, median), np.full(shape, mad)
    grids, _, _ = _block_percentiles(residual, (10, 25))
    sigma = np.maximum(grids[1] - grids[0], 0.0) / (1.2816 - 0.6745)
    level = grids[1] + 0.6745 * sigma
    # A block mostly filled by a stroke reads as bright, noisy "paper"; its neighbours
    # know better, and paper brightness and grain change slowly.
    level, sigma = _neighbourhood_min(level), _neighbourhood_min(sigma)
    return _upsample(level, residual.shape, step), _upsample(sigma, residual.shape, step)


def _neighbourhood_min(grid: np.ndarray) -> np.ndarray:
    """Minimum over each cell's 3x3 neighbourhood of a small grid."""
    padded = np.pad(grid, 1, mode="edge")
    h, w = grid.shape
    return np.min([padded[i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=0)


def _box3(arr: np.ndarray) -> np.ndarray:
    """3x3 mean filter (edges replicated), separably: sums of 3 rows, then of 3 columns."""
    padded = np.pad(arr.astype(np.float32, copy=False), 1, mode="edge")
    rows = padded[:-2] + padded[1:-1]
    rows += padded[2:]
    total = rows[:, :-2] + rows[:, 1:-1]
    total += rows[:, 2:]
    total /= 9.0
    return total


def _upsample(grid: np.ndarray, shape: tuple[int, int], step: int = 1) -> np.ndarray:
    """Bilinear upsampling of a block grid to the image size, float32 (only every
    ``step``-th pixel of each axis when asked).

    The same weights as Pillow's BILINEAR resize (cell centers at half-pixel offsets,
    edges clamped), computed as two gathered rows and a lerp: about a third of Pillow's
    time with its copies in and out, on a 640 px photo.
    """
    if grid.size == 1:
        return np.full((-(-shape[0] // step), -(-shape[1] // step)), grid.flat[0], np.float32)
    g = grid.astype(np.float32)
    y0, y1, fy = _lerp_taps(g.shape[0], shape[0], step)
    x0, x1, fx = _lerp_taps(g.shape[1], shape[1], step)
    rows = g[:, x0] + (g[:, x1] - g[:, x0]) * fx  # (grid rows, width)
    top, out = rows[y0], rows[y1]
    out -= top
    out *= fy[:, None]
    out += top
    return out


def _lerp_taps(
    n_in: int, n_out: int, step: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every ``step``-th of ``n_out`` output pixels: the two input cells it lies
    between (clamped at the edges) and the weight of the second, as bilinear resizing."""
    src = (np.arange(0, n_out, step) + 0.5) * (n_in / n_out) - 0.5
    lo = np.floor(src)
    frac = (src - lo).astype(np.float32)
    lo = lo.astype(np.intp)
    return np.clip(lo, 0, n_in - 1), np.clip(lo + 1, 0, n_in - 1), frac


def _background(gray: np.ndarray, q: float, ink_sign: float) -> np.ndarray:
    """A smooth surface through the ``q``-th percentiles of a coarse grid of blocks.

    ``ink_sign`` is +1 when ink is brighter than the paper, -1 when darker, 0 when
    unknown. Blocks whose value sticks out toward the ink side of the fit (a stroke
    filling the block; either side when unknown) are dropped and the fit repeated.
    Lighting in photos (a gradient, vignetting) is smooth, so a low-degree polynomial
    models it, extrapolates sanely to the image edges, and cannot follow the strokes.
    """
    grids, ys, xs = _block_percentiles(gray, (q,))
    grid = grids[0]
    values = grid.ravel().astype(np.float64)
    if min(grid.shape) < 3:  # too few blocks for a surface: one level for the whole image
        level = {1.0: values.min(), -1.0: values.max()}.get(ink_sign, np.median(values))
        return np.full(gray.shape, level, dtype=np.float32)
    degree = {3: 1, 4: 1, 5: 2}.get(min(grid.shape), 3)  # keep blocks >> coefficients
    powers = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    design = np.stack([gy.ravel() ** i * gx.ravel() ** j for i, j in powers], axis=1)
    # Start from a plane through all blocks, drop the quarter lying most toward the ink,
    # then refit at full degree, dropping blocks that stick out toward the ink.
    plane = design[:, [k for k, (i, j) in enumerate(powers) if i + j <= 1]]
    toward_ink = _toward(values - plane @ np.linalg.lstsq(plane, values, rcond=None)[0], ink_sign)
    keep = toward_ink <= np.percentile(toward_ink, 75)
    coef = np.zeros(len(powers))
    for _ in range(5):
        coef = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
        toward_ink = _toward(values - design @ coef, ink_sign)
        spread = max(1.4826 * float(np.median(np.abs(toward_ink[keep]))), 0.01)
        new_keep = toward_ink < 2.5 * spread
        if (new_keep == keep).all() or new_keep.sum() < len(powers) + 2:
            break
        keep = new_keep
    h, w = gray.shape
    py = (np.arange(h) + 0.5) / h * 2 - 1
    px = (np.arange(w) + 0.5) / w * 2 - 1
    # Horner's rule in y over the polynomials in x, sum_i y^i * (sum_j c_ij x^j): two
    # in-place float32 passes per degree instead of a float64 outer product per term.
    in_x = np.zeros((degree + 1, w))
    for c, (i, j) in zip(coef, powers, strict=True):
        in_x[i] += c * px**j
    in_x = in_x.astype(np.float32)
    column = py.astype(np.float32)[:, None]
    surface = np.empty((h, w), dtype=np.float32)
    surface[:] = in_x[degree]
    for i in range(degree - 1, -1, -1):
        surface *= column
        surface += in_x[i]
    return np.clip(surface, 0.0, 1.0, out=surface)


def _toward(deviation: np.ndarray, ink_sign: float) -> np.ndarray:
    """How far each deviation from the fit points toward the ink (both ways when unknown)."""
    return np.abs(deviation) if ink_sign == 0 else deviation * ink_sign


def _block_percentiles(
    arr: np.ndarray, qs: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentiles ``qs`` of each cell of a coarse grid: (len(qs), rows, cols), and the
    cell centers along y and x scaled to [-1, 1]."""
    h, w = arr.shape
    cell = max(max(h, w) / _BG_GRID, _BG_MIN_CELL)
    rows = np.linspace(0, h, max(1, round(h / cell)) + 1).astype(int)
    cols = np.linspace(0, w, max(1, round(w / cell)) + 1).astype(int)
    grids = np.empty((len(qs), len(rows) - 1, len(cols) - 1), dtype=np.float32)
    # A big cell's percentiles come from every step-th pixel of every step-th row (at
    # least _BG_CELL_SAMPLES a side are kept): a regular subsample has the same
    # distribution of paper and noise (no averaging), at a fraction of the cost.
    step = max(1, int(cell // _BG_CELL_SAMPLES))  # 1 below 2 * _BG_CELL_SAMPLES
    # Cells differ in size by a pixel at most: one percentile call per cell size (at most
    # four), over the cells of that size stacked, instead of one call per cell (the same
    # values, 10x faster on a photo's grid).
    sizes: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i in range(len(rows) - 1):
        for j in range(len(cols) - 1):
            sizes.setdefault((rows[i + 1] - rows[i], cols[j + 1] - cols[j]), []).append((i, j))
    for (bh, bw), cells in sizes.items():
        stack = np.stack([arr[rows[i] : rows[i] + bh : step, cols[j] : cols[j] + bw : step].ravel()
                          for i, j in cells])
        values = np.percentile(stack, qs, axis=1)  # (len(qs), cells)
        for k, (i, j) in enumerate(cells):
            grids[:, i, j] = values[:, k]
    ys = (rows[:-1] + rows[1:]) / h - 1.0  # center / h * 2 - 1
    xs = (cols[:-1] + cols[1:]) / w - 1.0
    return grids, ys, xs


def _peak(residual: np.ndarray) -> float:
    """Strongest 2x2-averaged residual: a 1 px line keeps half its contrast, lone noise less."""
    return float(_box2(residual).max())


def _box2(arr: np.ndarray) -> np.ndarray:
    """Means of each 2x2 neighbourhood (the array itself when a side is under 2 px)."""
    if min(arr.shape) < 2:
        return arr
    total = arr[:-1, :-1] + arr[1:, :-1]
    total += arr[:-1, 1:]
    total += arr[1:, 1:]
    total *= 0.25  # exactly / 4
    return total


def _border_ring(gray: np.ndarray) -> np.ndarray:
    """The pixels of the outer ring (about 5% of each side, at least 1 px)."""
    h, w = gray.shape
    bh, bw = max(1, h // 20), max(1, w // 20)
    return np.concatenate(
        [gray[:bh].ravel(), gray[-bh:].ravel(), gray[:, :bw].ravel(), gray[:, -bw:].ravel()]
    )


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold: the cut that best separates the histogram into two classes."""
    top = float(values.max())
    if top <= 0.0:
        return 0.0
    # np.histogram(values, 256, range=(0, top)) by counting bin indices: the same bins
    # (the last one closed) up to rounding at the edges, in a fraction of the time; the
    # zeros (most of an ink map) all fall in the first bin and are only counted.
    positive = values[values > 0.0]
    bins = (positive * np.float32(256.0 / top)).astype(np.intp)
    np.minimum(bins, 255, out=bins)
    hist = np.bincount(bins, minlength=256).astype(np.float64)
    hist[0] += values.size - positive.size
    edges = np.linspace(0.0, top, 257)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centers)
    m0 = s0 / np.maximum(w0, 1e-12)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1e-12)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


# ----------------------------------------------------------------- specks, bbox, strokes


@dataclass(frozen=True)
class _Runs:
    """The horizontal runs of a mask and the 8-connected component each belongs to."""

    row: np.ndarray  # (n,) the run's row
    start: np.ndarray  # (n,) its first column
    end: np.ndarray  # (n,) one past its last column
    label: np.ndarray  # (n,) its component, 0..components-1

    def paint(self, keep: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The mask of the runs where ``keep`` (n,) is True."""
        h, w = shape
        marks = np.zeros((h, w + 1), dtype=np.int32)
        np.add.at(marks, (self.row[keep], self.start[keep]), 1)
        np.add.at(marks, (self.row[keep], self.end[keep]), -1)
        return np.cumsum(marks, axis=1)[:, :w] > 0

    def sums(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(n,) each run's sum of ``values`` (over the mask's pixels only)."""
        w = mask.shape[1]
        inside = np.where(mask, values, 0.0).ravel()  # the gaps between runs add nothing
        return np.add.reduceat(inside, self.row * w + self.start, dtype=np.float64)


def _runs(mask: np.ndarray) -> _Runs:
    """Label the 8-connected components of ``mask`` on its horizontal runs, with a
    union-find: the Python loop runs over runs (a few per row), not pixels."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    changes = np.flatnonzero(edges)  # row-major: a run's start, then its (exclusive) end
    rising = edges.ravel()[changes] == 1
    run_row, run_start = np.divmod(changes[rising], w + 1)
    run_end = changes[~rising] % (w + 1)
    n = run_row.size
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(run_row, np.arange(h + 1)).tolist()
    starts, ends = run_start.tolist(), run_end.tolist()
    for r in range(h - 1):
        i, i_end, j, j_end = first[r], first[r + 1], first[r + 1], first[r + 2]
        while i < i_end and j < j_end:
            if starts[i] <= ends[j] and starts[j] <= ends[i]:  # touching, diagonals included
                a, b = find(i), find(j)
                if a != b:
                    parent[b] = a
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    roots = np.array([find(i) for i in range(n)], dtype=np.intp)
    _, labels = np.unique(roots, return_inverse=True)
    return _Runs(run_row, run_start, run_end, labels.reshape(-1))


def _drop_specks(mask: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Keep the 8-connected components of ``mask`` whose ink is at least
    ``_SPECK_FRACTION`` of the heaviest component's; return the cleaned mask."""
    runs = _runs(mask)
    if runs.row.size == 0:
        return np.zeros_like(mask)
    mass = np.bincount(runs.label, weights=runs.sums(weight, mask))
    keep_run = mass[runs.label] >= _SPECK_FRACTION * mass.max()
    if keep_run.all():  # no specks (the usual case): the mask as it is
        return mask.copy()
    return runs.paint(keep_run, mask.shape)


def _connected_to(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """The pixels of ``weak`` in an 8-connected component that holds a ``strong`` pixel
    (hysteresis, as Canny's edge linking): a faint stretch of a stroke stays with it, a
    faint smudge apart from every stroke goes."""
    runs = _runs(weak)
    if runs.row.size == 0:
        return np.zeros_like(weak)
    touches = np.bincount(runs.label, weights=runs.sums(strong, weak)) > 0
    return runs.paint(touches[runs.label], weak.shape)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1) square, separably with shifted ORs."""
    rows = mask.copy()
    for k in range(1, radius + 1):
        rows[k:] |= mask[:-k]
        rows[:-k] |= mask[k:]
    out = rows.copy()
    for k in range(1, radius + 1):
        out[:, k:] |= rows[:, :-k]
        out[:, :-k] |= rows[:, k:]
    return out


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the True pixels, bottom/right exclusive."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a binary mask: 2 * area / perimeter.

    The perimeter is counted as horizontal plus vertical pixel edges, which overstates
    it by 4/pi on average over stroke directions (Cauchy-Crofton); we correct for that.
    """
    area = float(mask.sum())
    padded = np.pad(mask, 1).astype(np.int8)
    edges = np.abs(np.diff(padded, axis=0)).sum() + np.abs(np.diff(padded, axis=1)).sum()
    return (8.0 / math.pi) * area / max(float(edges), 1.0)


# ------------------------------------------------------------------- size and position


def _fit_box(patch: np.ndarray, stroke: float) -> np.ndarray:
    """Scale the cropped ink so its longer side is BOX_SIZE, thickening very thin strokes."""
    h, w = patch.shape
    scale = BOX_SIZE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL (width, height)
    img = Image.fromarray(patch.astype(np.float32), mode="F")
    if stroke * scale < _MIN_STROKE_PX:
        fine = (size[0] * _THICKEN_SCALE, size[1] * _THICKEN_SCALE)
        grow = (_TARGET_STROKE_PX - stroke * scale) * _THICKEN_SCALE  # px to add at fine scale
        k = 2 * max(1, round(grow / 2)) + 1
        arr = np.asarray(img.resize(fine, Image.Resampling.LANCZOS), dtype=np.float32)
        arr = np.pad(np.clip(arr, 0.0, 1.0), k // 2)
        arr = np.asarray(Image.fromarray(arr, mode="F").filter(ImageFilter.MaxFilter(k)))
        top, bottom, left, right = _bbox(arr > 0.02)
        arr = arr[top:bottom, left:right]
        h2, w2 = arr.shape
        scale2 = BOX_SIZE / max(h2, w2)
        size = (max(1, round(w2 * scale2)), max(1, round(h2 * scale2)))
        img = Image.fromarray(np.ascontiguousarray(arr), mode="F")
    if img.size != size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    peak = float(digit.max())
    if peak <= 0.0:
        raise ImageError("no ink left after scaling")  # unreachable for non-empty patches
    return digit / peak if peak < 1.0 else digit


def _center_in_frame(digit: np.ndarray) -> np.ndarray:
    """Place the digit in a 28x28 frame with its center of mass at (14, 14), whole-pixel shift."""
    h, w = digit.shape
    total = float(digit.sum())
    ys, xs = np.indices(digit.shape)
    cy = float((digit * ys).sum()) / total
    cx = float((digit * xs).sum()) / total
    center = FRAME_SIZE / 2
    top = min(max(math.floor(center - cy + 0.5), 0), FRAME_SIZE - h)
    left = min(max(math.floor(center - cx + 0.5), 0), FRAME_SIZE - w)
    frame = np.zeros((FRAME_SIZE, FRAME_SIZE), dtype=np.float32)
    frame[top : top + h, left : left + w] = digit
    return np.rint(frame * 255.0).astype(np.uint8)
