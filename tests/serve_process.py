"""Helpers for tests that talk to a real `mnistlab serve` (uvicorn in a subprocess, loopback)."""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(*, launcher: str | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start the server on a free 127.0.0.1 port; yield (base URL, process).

    By default it is ``python -m mnistlab serve`` itself; ``launcher`` is Python code run
    with ``-c`` instead, with ``{port}`` filled in (for shorter timeouts)."""
    port = free_port()
    if launcher is None:
        command = [sys.executable, "-m", "mnistlab", "serve", "--port", str(port)]
    else:
        command = [sys.executable, "-c", launcher.format(port=port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"server exited: {server.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer /api/health within 60 s")
            time.sleep(0.1)
        yield url, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr:
            server.stderr.close()


def memory_mib(pid: int) -> dict[str, float]:
    """VmHWM (peak resident memory) and VmRSS of a process, in MiB, from /proc."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) / 1024
    return values


def encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def digit_drawing(side: int = 280) -> np.ndarray:
    """A black "1" on white, as the draw page sends it (uint8 grey)."""
    page = np.full((side, side), 255, np.uint8)
    page[side // 5 : side * 4 // 5, side * 9 // 20 : side * 11 // 20] = 0
    return page


def worst_case_images() -> dict[str, bytes]:
    """Small uploads that cost the most to decode, all within the 40 MP pixel cap:
    a 16-bit grey PNG and an RGBA PNG of 6300x6300 (PNG has no reduced decode),
    progressive JPEGs 4:2:0 and 4:4:4 (libjpeg buffers every coefficient) and a
    baseline one, and a 1030x38800 strip (reduction by its longer side)."""
    side = 6300
    grey16 = np.zeros((side, side), np.uint16)
    grey16[2000:4300, 3000:3300] = 60000
    images = {"png16": encoded(grey16, "PNG")}
    del grey16
    rgb = np.full((side, side, 3), 255, np.uint8)
    rgb[2000:4300, 3000:3300] = 0
    images["jpeg_progressive_420"] = encoded(rgb, "JPEG", quality=80, progressive=True)
    images["jpeg_progressive_444"] = encoded(
        rgb, "JPEG", quality=80, progressive=True, subsampling=0
    )
    images["jpeg_baseline"] = encoded(rgb, "JPEG", quality=80)
    rgba = np.dstack([rgb, np.full((side, side), 255, np.uint8)])
    del rgb
    images["png_rgba"] = encoded(rgba, "PNG")
    del rgba
    strip = np.full((38800, 1030), 255, np.uint8)
    strip[10000:30000, 400:600] = 0
    images["png_strip"] = encoded(strip, "PNG")
    return images
