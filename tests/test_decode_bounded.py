"""Decoding at working size: bounded memory for huge pictures, identical results for normal ones.

`decode_image(..., max_side=WORK_MAX_SIDE)` (what `mnistlab predict` and the server use)
reduces an image twice that size while decoding; `decode_cost` says from the header what
that costs. Peak memory is measured in a fresh subprocess (ru_maxrss), so the numbers
are the process's, Pillow's and libjpeg's buffers included.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from mnistlab.handwriting.preprocess import (
    WORK_MAX_SIDE,
    decode_cost,
    decode_image,
    open_image,
    preprocess_image,
)
from mnistlab.serve.limits import DecodeBudget


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def a_one(side: int, dtype=np.uint8, white=255) -> np.ndarray:
    page = np.full((side, side), white, dtype)
    page[side // 5 : side * 4 // 5, side * 9 // 20 : side * 11 // 20] = 0
    return page


PEAK_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from mnistlab.handwriting.preprocess import (
        WORK_MAX_SIDE, decode_cost, decode_opened, open_image)
    data = open(sys.argv[1], "rb").read()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image = open_image(data)
    cost = decode_cost(image, max_side=WORK_MAX_SIDE)
    decoded = decode_opened(image, max_side=WORK_MAX_SIDE)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(cost / 2**20, peak / 1024, *decoded.size)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB")
@pytest.mark.parametrize(
    ("kind", "limit_mib"),
    [("png16", 200), ("jpeg_progressive", 200)],
)
def test_a_huge_small_file_decodes_within_its_estimate(tmp_path, kind, limit_mib):
    """Before: a 16-bit 6300x6300 PNG peaked at 987 MiB and 3 s (float64 copies at full size)."""
    if kind == "png16":
        data = encoded(Image.fromarray(a_one(6300, np.uint16, 65535)), "PNG")
    else:
        rgb = Image.fromarray(a_one(6300)).convert("RGB")
        data = encoded(rgb, "JPEG", quality=80, progressive=True)
    path = tmp_path / "image"
    path.write_bytes(data)
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True, check=True
    )
    cost_mib, peak_mib, width, height = (float(v) for v in out.stdout.split())
    assert len(data) < 2**20
    assert peak_mib < limit_mib, f"{kind}: peak {peak_mib:.0f} MiB"
    assert peak_mib <= cost_mib * 1.05 + 8, f"{kind}: estimate {cost_mib:.0f} < {peak_mib:.0f}"
    assert WORK_MAX_SIDE <= max(width, height) < 2 * WORK_MAX_SIDE


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16"])
def test_images_under_twice_the_working_size_decode_exactly_as_in_full(mode):
    base = Image.fromarray(a_one(1500))
    image = Image.fromarray(a_one(1500, np.uint16, 65535)) if mode == "I;16" else base.convert(mode)
    data = encoded(image, "PNG")
    reduced = decode_image(data, max_side=WORK_MAX_SIDE)
    full = decode_image(data)
    assert reduced.size == full.size and reduced.mode == full.mode
    assert np.array_equal(np.asarray(reduced), np.asarray(full))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_a_huge_image_gives_the_same_digit_as_decoding_it_in_full(mode):
    side = 4200
    if mode == "I;16":
        image = Image.fromarray(a_one(side, np.uint16, 65535))
    else:
        image = Image.fromarray(a_one(side)).convert(mode)
    data = encoded(image, "PNG")
    reduced = decode_image(data, max_side=WORK_MAX_SIDE)
    assert max(reduced.size) < 2 * WORK_MAX_SIDE
    fast = preprocess_image(reduced).astype(int)
    slow = preprocess_image(decode_image(data)).astype(int)
    # Box averages in two steps instead of one: the same digit, at most a pixel's shift.
    shifts = [
        np.abs(np.roll(fast, (dy, dx), (0, 1)) - slow).mean()
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    ]
    assert min(shifts) < 2.0


def test_exif_orientation_is_applied_to_a_reduced_image():
    image = Image.fromarray(a_one(3000)).crop((0, 0, 3000, 2200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    data = encoded(image.convert("RGB"), "JPEG", exif=exif.tobytes())
    decoded = decode_image(data, max_side=WORK_MAX_SIDE)
    assert decoded.width < decoded.height  # upright: portrait


def test_decode_cost_counts_jpeg_coefficient_buffers_only_for_multi_scan_files():
    rgb = Image.fromarray(a_one(4000)).convert("RGB")
    baseline = decode_cost(open_image(encoded(rgb, "JPEG")), max_side=WORK_MAX_SIDE)
    progressive = decode_cost(
        open_image(encoded(rgb, "JPEG", progressive=True)), max_side=WORK_MAX_SIDE
    )
    assert baseline <= 2000 * 2000 * 4 + 2**20  # decoded at 1/2 scale: 2000x2000, 4 bytes each
    assert progressive > 4000 * 4000 * 1.5 * 2  # 4:2:0 coefficients, 2 bytes each


def test_open_image_can_be_restricted_to_formats():
    gif = encoded(Image.fromarray(a_one(100)), "GIF")
    with pytest.raises(ValueError, match="expected PNG or JPEG"):
        open_image(gif, name="x.gif", formats=("PNG", "JPEG"))
    assert open_image(gif).format == "GIF"


def test_decode_budget_admits_in_order_within_bytes_and_slots():
    async def scenario() -> list[str]:
        budget = DecodeBudget(total_bytes=100, slots=2)
        log: list[str] = []
        release = asyncio.Event()

        async def job(name: str, cost: int) -> None:
            async with budget.hold(cost):
                log.append(f"start {name}")
                assert budget.used_bytes <= 100 and budget.running <= 2
                await release.wait()
            log.append(f"end {name}")

        tasks = [asyncio.create_task(job("big", 80))]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(job("bigger", 500)))  # capped at the total
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(job("small", 10)))  # waits: first come first served
        await asyncio.sleep(0.01)
        assert log == ["start big"]
        release.set()
        await asyncio.gather(*tasks)
        assert budget.used_bytes == 0 and budget.running == 0
        return log

    log = asyncio.run(scenario())
    assert log.index("start bigger") > log.index("end big")
    assert log.index("start small") > log.index("start bigger")
