"""The real server under 32 concurrent worst-case uploads stays within its memory bound.

`mnistlab serve` runs in a subprocess on 127.0.0.1; 32 clients at once each upload one
small file that is expensive to decode (16-bit and RGBA 6300x6300 PNGs, progressive
JPEGs, a 40 MP strip). The server's peak resident memory (VmHWM from /proc) must stay
under ``MEMORY_BOUND_MIB``, every upload must get an answer (200, or a 422 naming the
image), and the server must still answer /api/health and a normal upload afterwards.
Before the decode budget, one 16-bit PNG lifted the server from 70 to 1,054 MiB and
eight at once past 7 GiB. Bounded: 2 x 32 requests, loopback only, about 30-50 s.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx
import numpy as np

from mnistlab.serve.limits import MEMORY_BOUND_MIB
from serve_process import digit_drawing, encoded, memory_mib, running_server, worst_case_images

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads VmHWM from /proc"
)

CLIENTS = 32


async def upload_all(url: str, uploads: list[tuple[str, bytes]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        return await asyncio.gather(
            *(
                http.post(
                    "/api/predict",
                    files={"file": (f"{name}.img", data, "application/octet-stream")},
                )
                for name, data in uploads
            )
        )


@pytest.fixture(scope="module")
def server():
    with running_server() as (url, process):
        yield url, process


def check_still_serving(url: str) -> None:
    assert httpx.get(f"{url}/api/health", timeout=10).status_code == 200
    drawing = encoded(digit_drawing(), "PNG")
    answer = httpx.post(
        f"{url}/api/predict", files={"file": ("one.png", drawing, "image/png")}, timeout=30
    )
    assert answer.status_code == 200 and answer.json()["digit"] == 1


def test_32_worst_case_uploads_stay_under_the_memory_bound(server):
    url, process = server
    images = worst_case_images()
    names = sorted(images)
    uploads = [(names[i % len(names)], images[names[i % len(names)]]) for i in range(CLIENTS)]
    assert max(len(data) for _, data in uploads) < 2 * 2**20  # small files, big pictures
    idle = memory_mib(process.pid)["VmHWM"]
    start = time.monotonic()
    responses = asyncio.run(upload_all(url, uploads))
    seconds = time.monotonic() - start
    peak = memory_mib(process.pid)["VmHWM"]
    statuses = sorted(
        {(name, r.status_code) for (name, _), r in zip(uploads, responses, strict=True)}
    )
    print(f"idle {idle:.0f} MiB, peak {peak:.0f} MiB, {seconds:.1f} s, {statuses}")
    assert all(r.status_code in (200, 422) for r in responses), statuses
    assert all(r.headers["content-type"] == "application/json" for r in responses)
    assert peak < MEMORY_BOUND_MIB, f"peak {peak:.0f} MiB (idle {idle:.0f} MiB)"
    check_still_serving(url)


def test_32_uploads_of_19_mib_header_heavy_jpegs_stay_under_the_bound(server):
    """Pillow keeps a JPEG's APP segments (up to the whole file) with the opened image:
    requests waiting for the decode budget must not hold them (608 MiB for 32)."""
    url, process = server
    rgb = np.full((6300, 6300, 3), 255, np.uint8)
    rgb[2000:4300, 3000:3300] = 0
    jpeg = encoded(rgb, "JPEG", quality=80, progressive=True)
    segment = b"\xff\xef" + struct.pack(">H", 65535) + bytes(65533)  # APP15, 64 KiB
    data = jpeg[:2] + segment * ((19 * 2**20 - len(jpeg)) // len(segment)) + jpeg[2:]
    start = time.monotonic()
    responses = asyncio.run(upload_all(url, [("app-heavy", data)] * CLIENTS))
    seconds = time.monotonic() - start
    peak = memory_mib(process.pid)["VmHWM"]
    print(f"peak {peak:.0f} MiB, {seconds:.1f} s")
    assert all(r.status_code == 200 for r in responses), responses[0].text
    assert peak < MEMORY_BOUND_MIB, f"peak {peak:.0f} MiB"
    check_still_serving(url)
