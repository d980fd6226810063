"""Latency of `POST /api/predict` on loopback, with 1 and with 32 concurrent clients.

    python benchmarks/bench_serve.py [--requests 400] [--max-seconds 30]

Starts `mnistlab serve` on a free 127.0.0.1 port, sends a bounded number of requests (each
scenario also stops after --max-seconds), and prints p50/p99 latency and throughput for:
a PNG upload of a 280x280 drawing (the page's path: decode + preprocess + model), a JSON
28x28 pixel array (model only), and `GET /api/health` as the framework's own floor.

Then, memory: 32 concurrent uploads of small files that are costly to decode (16-bit and
RGBA 6300x6300 PNGs, progressive 4:2:0 and 4:4:4 and baseline 6300x6300 JPEGs, a 40 MP
strip), and the server's peak resident memory (VmHWM, Linux) against the documented bound
(`mnistlab.serve.limits.MEMORY_BOUND_MIB`). Skip it with --no-worst-case.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table
from mnistlab.datasets import load_data


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("server did not start within 30 s")


async def run_clients(url: str, make_request, clients: int, total: int, max_seconds: float):
    """``clients`` concurrent loops sharing ``total`` requests; returns latencies and wall time."""
    latencies: list[float] = []
    remaining = total
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def loop(worker: int) -> None:
            nonlocal remaining
            index = worker
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                start = time.perf_counter()
                response = await make_request(http, index)
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()
                index += clients

        start = time.perf_counter()
        await asyncio.gather(*(loop(worker) for worker in range(clients)))
    return np.array(latencies), time.perf_counter() - start


def vm_hwm_mib(pid: int) -> float:
    """Peak resident memory of a process in MiB, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def worst_case_uploads() -> dict[str, bytes]:
    """Small files, big pictures, all within the 40 MP pixel cap (as tests/test_serve_load.py)."""
    side = 6300
    grey16 = np.zeros((side, side), np.uint16)
    grey16[2000:4300, 3000:3300] = 60000
    images = {"PNG 16-bit 6300x6300": encoded(grey16, "PNG")}
    del grey16
    rgb = np.full((side, side, 3), 255, np.uint8)
    rgb[2000:4300, 3000:3300] = 0
    images["JPEG progressive 4:2:0"] = encoded(rgb, "JPEG", quality=80, progressive=True)
    images["JPEG progressive 4:4:4"] = encoded(
        rgb, "JPEG", quality=80, progressive=True, subsampling=0
    )
    images["JPEG baseline 6300x6300"] = encoded(rgb, "JPEG", quality=80)
    opaque = np.full((side, side, 1), 255, np.uint8)
    images["PNG RGBA 6300x6300"] = encoded(np.dstack([rgb, opaque]), "PNG")
    del rgb
    strip = np.full((38800, 1030), 255, np.uint8)
    strip[10000:30000, 400:600] = 0
    images["PNG strip 1030x38800"] = encoded(strip, "PNG")
    return images


async def upload_together(url: str, uploads: list[tuple[str, bytes]]) -> list[int]:
    limits = httpx.Limits(max_connections=len(uploads))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        responses = await asyncio.gather(
            *(
                http.post("/api/predict", files={"file": ("x", data, "application/octet-stream")})
                for _, data in uploads
            )
        )
    return [response.status_code for response in responses]


def worst_case_rows(url: str, pid: int, clients: int = 32) -> list[tuple[str, ...]]:
    from mnistlab.serve.limits import MEMORY_BOUND_MIB

    images = worst_case_uploads()
    names = sorted(images)
    uploads = [(names[i % len(names)], images[names[i % len(names)]]) for i in range(clients)]
    before = vm_hwm_mib(pid)
    start = time.perf_counter()
    statuses = asyncio.run(upload_together(url, uploads))
    wall = time.perf_counter() - start
    peak = vm_hwm_mib(pid)
    codes = ", ".join(f"{code} x{statuses.count(code)}" for code in sorted(set(statuses)))
    return [
        (
            f"{clients} worst-case uploads at once",
            f"{before:.0f}",
            f"{peak:.0f}",
            str(MEMORY_BOUND_MIB),
            f"{wall:.1f}",
            codes,
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="per scenario (default 400)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="per scenario cap")
    parser.add_argument(
        "--no-worst-case", action="store_true", help="skip the 32 worst-case uploads (memory)"
    )
    args = parser.parse_args()

    _, (x_test, _) = load_data()
    pngs = []
    for digit in x_test[:64]:
        buffer = io.BytesIO()
        Image.fromarray(255 - digit).resize((280, 280)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    arrays = [digit.tolist() for digit in x_test[:64]]

    scenarios = {
        "PNG upload 280x280": lambda http, i: http.post(
            "/api/predict", files={"file": ("d.png", pngs[i % 64], "image/png")}
        ),
        "JSON 28x28 pixels": lambda http, i: http.post(
            "/api/predict", json={"pixels": arrays[i % 64]}
        ),
        "GET /api/health (floor)": lambda http, i: http.get("/api/health"),
    }
    port = free_port()
    server = start_server(port)
    rows = []
    memory_rows = []
    try:
        for name, request in scenarios.items():
            for clients in (1, 32):
                latencies, wall = asyncio.run(
                    run_clients(
                        f"http://127.0.0.1:{port}",
                        request,
                        clients,
                        args.requests,
                        args.max_seconds,
                    )
                )
                p50, p99 = np.percentile(latencies, [50, 99]) * 1000
                rows.append(
                    (
                        name,
                        str(clients),
                        str(len(latencies)),
                        f"{p50:.1f}",
                        f"{p99:.1f}",
                        f"{len(latencies) / wall:.0f}",
                    )
                )
        if not args.no_worst_case and sys.platform.startswith("linux"):
            memory_rows = worst_case_rows(f"http://127.0.0.1:{port}", server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print_table(
        "POST /api/predict latency on loopback (one uvicorn worker)",
        rows,
        ("request", "clients", "requests", "p50 ms", "p99 ms", "req/s"),
    )
    if memory_rows:
        print_table(
            "Server memory (VmHWM) under worst-case uploads",
            memory_rows,
            ("scenario", "MiB before", "peak MiB", "bound MiB", "seconds", "answers"),
        )


if __name__ == "__main__":
    main()
