"""Tests for turning people's images into MNIST-like digits, and the robustness variants."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from mnistlab.errors import ImageError, MnistlabError
from mnistlab.handwriting import preprocess
from mnistlab.handwriting.preprocess import (
    MAX_FILE_BYTES,
    MAX_PIXELS,
    decode_image,
    load_image,
    preprocess_file,
    preprocess_image,
)
from mnistlab.handwriting.robustness import ROBUSTNESS_KINDS, make_robustness_variants

# ----------------------------------------------------------------------------- helpers


def assert_mnist_like(out: np.ndarray, *, com_tolerance: float = 1.0) -> None:
    """The shape MNIST digits have: 28x28 uint8, ink within a 20x20 box, center of mass
    at (14, 14), dark background, full-strength ink."""
    assert out.shape == (28, 28)
    assert out.dtype == np.uint8
    rows = np.flatnonzero(out.any(axis=1))
    cols = np.flatnonzero(out.any(axis=0))
    assert rows.size and cols.size, "no ink in the output"
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert max(height, width) == 20, (height, width)
    mass = out.astype(np.float64)
    ys, xs = np.indices(out.shape)
    cy, cx = (mass * ys).sum() / mass.sum(), (mass * xs).sum() / mass.sum()
    assert abs(cy - 14) <= com_tolerance and abs(cx - 14) <= com_tolerance, (cy, cx)
    # Background dark: MNIST itself touches the outermost ring in about 1% of digits
    # (a "7" centered by mass reaches down to the last row), so only its mean is bounded.
    ring = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
    assert ring.mean() < 16, ring
    assert out.max() == 255
    assert np.median(out) == 0


def white_canvas(size: tuple[int, int] = (800, 600)) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", size, 255)
    return img, ImageDraw.Draw(img)


def zero_digit(
    size: tuple[int, int] = (800, 600), box=(420, 80, 640, 440), width=28
) -> Image.Image:
    """An off-center "0": a thick black ellipse on a white canvas."""
    img, draw = white_canvas(size)
    draw.ellipse(box, outline=0, width=width)
    return img


def ink_bbox(out: np.ndarray, level: int = 128) -> tuple[int, int]:
    rows = np.flatnonzero((out >= level).any(axis=1))
    cols = np.flatnonzero((out >= level).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------- good inputs


def test_thick_one_off_center_on_white() -> None:
    img, draw = white_canvas()
    draw.line([(600, 60), (630, 520)], fill=0, width=40)
    out = preprocess_image(img)
    assert_mnist_like(out)
    height, width = ink_bbox(out)
    assert height >= 19 and width <= 6  # a tall, narrow stroke stays tall and narrow


def test_ellipse_zero_keeps_aspect_and_hole() -> None:
    out = preprocess_image(zero_digit())
    assert_mnist_like(out)
    height, width = ink_bbox(out, level=1)
    assert height == 20 and 11 <= width <= 14  # 220 x 360 ellipse -> about 12 x 20
    assert out[14, 14] == 0  # the hole of the zero is background


@pytest.mark.parametrize("stroke", [(0, 0, 0, 255), (255, 255, 255, 255), (200, 30, 30, 255)])
def test_transparent_canvas_any_stroke_colour(stroke: tuple[int, int, int, int]) -> None:
    # What an HTML canvas exports: transparent black background, opaque strokes.
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse((70, 40, 200, 240), outline=stroke, width=18)
    out = preprocess_image(img)
    assert_mnist_like(out)
    assert out[14, 14] == 0


def test_white_background_photo_with_transparent_margin() -> None:
    # Mostly opaque (paper) with a transparent margin: the margin counts as paper.
    img = zero_digit().convert("RGBA")
    alpha = Image.new("L", img.size, 255)
    ImageDraw.Draw(alpha).rectangle((0, 0, 60, 600), fill=0)
    img.putalpha(alpha)
    assert_mnist_like(preprocess_image(img))


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "CMYK", "LA", "I;16", "I", "F"])
def test_every_common_mode(mode: str) -> None:
    base = zero_digit(size=(400, 300), box=(200, 40, 310, 220), width=14)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(base, dtype=np.uint16) * 257)
    elif mode == "F":
        img = Image.fromarray(np.asarray(base, dtype=np.float32) / 255.0)
    else:
        img = base.convert(mode)
    assert_mnist_like(preprocess_image(img))


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (200, 200), 0)
    img.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    ImageDraw.Draw(img).line([(100, 20), (110, 180)], fill=1, width=16)
    path = tmp_path / "palette.png"
    img.save(path, transparency=0)
    assert_mnist_like(preprocess_file(path))


def test_jpeg_round_trip_file(tmp_path: Path) -> None:
    path = tmp_path / "zero.jpg"
    zero_digit().convert("RGB").save(path, quality=60)
    out = preprocess_file(path)
    assert_mnist_like(out)
    assert out[14, 14] == 0


def test_simulated_phone_photo() -> None:
    """Dark ink on paper, light falling off across the page and into the corners,
    sensor noise, JPEG: the digit still comes out clean on black."""
    rng = np.random.default_rng(7)
    h, w = 900, 1200
    img, draw = white_canvas((w, h))
    draw.line([(500, 250), (760, 250)], fill=0, width=16)  # a "7"
    draw.line([(760, 250), (600, 700)], fill=0, width=16)
    albedo = np.asarray(img, dtype=np.float64) / 255 * 0.75 + 0.15
    ys, xs = np.mgrid[0:h, 0:w]
    light = (0.25 + 0.75 * xs / w) * (1 - 0.5 * (((xs - w / 2) / w) ** 2 + ((ys - h / 2) / h) ** 2))
    photo = np.clip(albedo * light + rng.normal(0, 0.04, (h, w)), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray((photo * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=80)
    out = preprocess_image(decode_image(buffer.getvalue()))
    assert_mnist_like(out)
    assert (out > 0).mean() < 0.25  # no noise specks or shading left as "ink"
    assert out[:10, :].max() > 200  # the bar of the 7 is at the top


def test_thin_pen_strokes_are_thickened() -> None:
    img, draw = white_canvas((2000, 2000))
    draw.ellipse((700, 500, 1100, 1300), outline=0, width=4)  # 0.5% of the digit's height
    out = preprocess_image(img)
    assert_mnist_like(out)
    assert (out >= 128).sum() >= 40  # a visible ring, not a faint hairline


def test_specks_are_ignored() -> None:
    img = zero_digit()
    draw = ImageDraw.Draw(img)
    for x, y in [(30, 30), (770, 570), (100, 500), (760, 40)]:
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=0)
    with_specks = preprocess_image(img)
    assert_mnist_like(with_specks)
    assert np.abs(with_specks.astype(int) - preprocess_image(zero_digit()).astype(int)).max() < 40


def test_a_stroke_that_fades_along_its_length_stays_whole() -> None:
    """A low-resolution scan's strokes fade where they cross its pixels unluckily; the
    faint stretch continues the stroke, so it is kept (hysteresis), while faint ink that
    touches no stroke is not."""
    img, draw = white_canvas((200, 240))
    draw.rectangle((90, 40, 110, 120), fill=0)  # the strong half of a "1"
    draw.rectangle((90, 121, 110, 200), fill=170)  # its faint half, still one stroke
    draw.rectangle((20, 100, 40, 200), fill=170)  # a faint smudge apart from it
    out = preprocess_image(img)
    assert_mnist_like(out)
    height, width = ink_bbox(out, level=20)
    # The whole bar (161x21 px) scaled to 20 px high is 3 px wide; its strong half alone
    # would be 5 px wide, and with the smudge the ink would be wider than high.
    assert (height, width) == (20, 3)


def test_numpy_inputs_match_pil() -> None:
    img = zero_digit(size=(300, 300), box=(60, 50, 200, 250), width=16)
    expected = preprocess_image(img)
    gray = np.asarray(img)
    assert np.array_equal(preprocess_image(gray), expected)
    assert np.array_equal(preprocess_image(gray.astype(np.float32) / 255.0), expected)
    assert np.array_equal(preprocess_image(np.stack([gray] * 3, axis=-1)), expected)
    assert_mnist_like(preprocess_image(gray < 128))


def test_mnist_digits_come_back_nearly_unchanged(mnist) -> None:
    (_, _), (x_test, _) = mnist
    diffs = np.array(
        [np.abs(preprocess_image(d).astype(int) - d.astype(int)).mean() for d in x_test[:200]]
    )
    assert np.median(diffs) < 0.5  # out of 255: essentially the same picture
    assert np.percentile(diffs, 95) < 2.0


def test_preprocessing_is_idempotent() -> None:
    once = preprocess_image(zero_digit())
    twice = preprocess_image(once)
    assert np.abs(once.astype(int) - twice.astype(int)).mean() < 1.0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    side=st.integers(60, 700),
    rel=st.tuples(*[st.floats(0.05, 0.95)] * 4),
    width=st.integers(3, 30),
    shape=st.sampled_from(["ellipse", "line"]),
    dark_on_light=st.booleans(),
)
def test_any_drawn_stroke_becomes_mnist_like(side, rel, width, shape, dark_on_light) -> None:
    x0, x1 = sorted((rel[0] * side, rel[2] * side))
    y0, y1 = sorted((rel[1] * side, rel[3] * side))
    if max(x1 - x0, y1 - y0) < 8:
        x1, y1 = x0 + 8, y0 + 8
    paper, ink = (255, 0) if dark_on_light else (0, 255)
    img = Image.new("L", (side + 20, side + 20), paper)
    draw = ImageDraw.Draw(img)
    width = min(width, max(1, side // 10))
    if shape == "ellipse":
        draw.ellipse((x0, y0, x1, y1), outline=ink, width=width)
    else:
        draw.line([(x0, y0), (x1, y1)], fill=ink, width=width)
    out = preprocess_image(img)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert max(ink_bbox(out, level=1)) == 20
    assert out[0].max() == 0 and out[-1].max() == 0 and out[:, 0].max() == 0
    assert out.max() == 255


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (400, 300), 255),
        Image.new("RGB", (50, 50), (0, 0, 0)),
        Image.new("RGBA", (280, 280), (0, 0, 0, 0)),
        Image.new("RGBA", (280, 280), (255, 255, 255, 0)),
    ],
    ids=["white", "black", "transparent", "transparent-white"],
)
def test_empty_canvas_is_an_image_error(image: Image.Image) -> None:
    with pytest.raises(ImageError, match="no ink"):
        preprocess_image(image, name="canvas.png")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blank_noisy_photo_is_an_image_error(seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs = np.mgrid[0:500, 0:500][1]
    paper = 200 * (0.5 + 0.5 * xs / 500) + rng.normal(0, 10, (500, 500))
    with pytest.raises(ImageError, match="no ink"):
        preprocess_image(np.clip(paper, 0, 255).astype(np.uint8))


def test_truncated_png(tmp_path: Path) -> None:
    data = png_bytes(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8))
    )
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.png.*(corrupt|truncated|readable)"):
        preprocess_file(path)


def test_text_file_renamed_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are not the pixels you are looking for\n")
    with pytest.raises(ImageError, match=r"notes\.png: not a readable image"):
        load_image(path)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, followed by a tiny bogus IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


@pytest.mark.parametrize("side", [7000, 40000])  # over our limit; over Pillow's bomb limit
def test_oversized_image_refused_before_decoding(tmp_path: Path, side: int) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(side, side))
    with pytest.raises(
        ImageError, match=r"huge\.png: image is .*too large|huge\.png: image is \d+x"
    ):
        load_image(path)


def test_pixel_limit_is_documented_and_sane() -> None:
    assert 7000 * 7000 > MAX_PIXELS >= 4000 * 3000  # a 12 MP phone photo is fine


def test_oversized_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ImageError, match=r"big\.jpg: file is larger than the limit"):
        load_image(path)


def test_oversized_array_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preprocess, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="more than"):
        preprocess_image(np.zeros((100, 100), np.uint8))


@pytest.mark.parametrize("what", ["missing", "directory", "empty"])
def test_not_a_usable_file(tmp_path: Path, what: str) -> None:
    path = tmp_path / "x.png"
    if what == "directory":
        path.mkdir()
    elif what == "empty":
        path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"x\.png: "):
        preprocess_file(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(path)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((0, 5)), np.zeros((5, 5, 2)), np.full((9, 9), np.nan), np.zeros((2, 2, 2, 2))],
    ids=["empty", "two-channels", "nan", "4d"],
)
def test_bad_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ImageError):
        preprocess_image(bad)


def test_errors_are_catchable_as_the_family_and_as_value_error() -> None:
    with pytest.raises(MnistlabError):
        decode_image(b"GIF89a garbage", name="upload")
    with pytest.raises(ValueError, match="upload"):
        decode_image(b"", name="upload")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img, draw = white_canvas((300, 200))
    draw.line([(40, 100), (260, 100)], fill=0, width=20)  # a horizontal bar
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the bar shows vertical
    path = tmp_path / "rotated.jpg"
    img.convert("RGB").save(path, exif=exif.tobytes())
    assert load_image(path).size == (200, 300)
    height, width = ink_bbox(preprocess_file(path))
    assert height > width


# -------------------------------------------------------------------- robustness kinds


@pytest.fixture(scope="module")
def some_digits(mnist) -> np.ndarray:
    (_, _), (x_test, _) = mnist
    return x_test[:12]


@pytest.mark.parametrize("kind", ROBUSTNESS_KINDS)
def test_robustness_variants_preprocess_back(kind: str, some_digits: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    for digit in some_digits:
        variant = make_robustness_variants(digit, kind, rng)
        assert isinstance(variant, Image.Image) and variant.mode == "L"
        assert variant.size[0] >= 28
        out = preprocess_image(variant)
        correlation = np.corrcoef(out.ravel().astype(float), digit.ravel().astype(float))[0, 1]
        assert correlation > (0.35 if kind in ("rotated", "thick") else 0.55), correlation


def test_robustness_variants_are_seeded(some_digits: np.ndarray) -> None:
    for kind in ("off_center", "rotated", "photo"):
        a = make_robustness_variants(some_digits[0], kind, np.random.default_rng(3))
        b = make_robustness_variants(some_digits[0], kind, np.random.default_rng(3))
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_robustness_variant_geometry(some_digits: np.ndarray) -> None:
    digit = some_digits[0]
    rng = np.random.default_rng(0)
    assert make_robustness_variants(digit, "canvas280", rng).size == (280, 280)
    inverted = np.asarray(make_robustness_variants(digit, "inverted", rng))
    assert np.array_equal(inverted, 255 - digit)
    off = np.asarray(make_robustness_variants(digit, "off_center", rng)).astype(float)
    ys, xs = np.indices(off.shape)
    cy, cx = (off * ys).sum() / off.sum(), (off * xs).sum() / off.sum()
    assert max(abs(cy - 200), abs(cx - 200)) > 80  # really off center
    thick = np.asarray(make_robustness_variants(digit, "thick", rng))
    thin = np.asarray(make_robustness_variants(digit, "thin", rng))
    assert (thick > 127).sum() > (thin > 127).sum() * 1.5


def test_robustness_rejects_bad_input(some_digits: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown robustness kind"):
        make_robustness_variants(some_digits[0], "sideways", rng)
    with pytest.raises(ValueError, match=r"\(28, 28\)"):
        make_robustness_variants(np.zeros((28, 27), np.uint8), "inverted", rng)
