"""What one `mnistlab serve` process may spend, and the pieces that hold it to that.

The whole server stays under ``MEMORY_BOUND_MIB`` of resident memory (VmHWM) whatever
clients send, because every large allocation is either bounded per connection or
admitted against one budget:

* request bodies go to a temporary file past ``SPOOL_BYTES`` (so 32 uploads of 20 MiB
  waiting for their turn cost 32 x 64 KiB of memory, not 640 MiB), and at most
  ``MAX_CONNECTIONS`` connections are served at once (uvicorn answers 503 beyond);
* every image decode + preprocess first reserves what it will need from
  ``DECODE_BUDGET_BYTES``, estimated from the header before any pixel is decoded
  (``decode_cost``: the decoded pixels, libjpeg's coefficient buffers, the reduced copy;
  plus the header data Pillow keeps and the preprocessing at working size), and waits
  in line until the budget has room; at most one decode per core runs at a time;
* an image whose estimate alone exceeds the budget is refused with 422.

Worst case: the idle server holds about 70 MiB; the budget adds at most 384 MiB of
estimated decode memory (the estimates run 10-80% above what decodes measure); the
connections at most ``MAX_CONNECTIONS`` x ~0.2 MiB (spool, uvicorn's buffer); glibc is
told to return big blocks at once (``run_server``). Measured (tests/test_serve_load.py,
32 concurrent worst-case uploads, 2 and 16 decode slots): a 332-334 MiB peak.

The pixel cap stays ``MAX_PIXELS`` (40 MP): what phones send by default (12 and 24 MP)
and canvases (280x280 from the draw page) is well inside it, and since an image is
reduced to working size while it decodes, a 40 MP one is estimated at 190-330 MiB (a
16-bit or RGBA PNG, a progressive 4:4:4 JPEG), which the budget admits one at a time; a
progressive CMYK JPEG that size (about 400 MiB) is refused.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mnistlab.handwriting.preprocess import MAX_FILE_BYTES

MEMORY_BOUND_MIB = 600
"""The resident-memory bound the server is held to (and tests/test_serve_load.py checks)."""

MAX_IMAGE_BYTES = MAX_FILE_BYTES
"""Largest image upload (20 MiB, as for files): 12 MP phone JPEGs run 3-12 MB and the 24 MP
ones recent phones take by default more; the old 8 MiB limit refused many of them."""

MAX_BODY_BYTES = MAX_IMAGE_BYTES + 64 * 1024
"""Largest request body: a 20 MiB image plus room for multipart framing."""

MAX_JSON_BYTES = 128 * 1024
"""Largest JSON body: 784 pixel values, even pretty-printed with long floats, are < 32 KiB."""

DRAIN_BYTES = 64 * 1024 * 1024
"""An over-limit body up to this size is read and discarded before the 413 is sent, so a
client that writes its whole body before reading (urllib, requests) sees the 413 instead
of a connection reset. Bigger bodies get the 413 at once and the connection closed."""

SPOOL_BYTES = 64 * 1024
"""Bodies and uploaded files stay in memory up to this size, then go to a temporary file."""

DECODE_BUDGET_BYTES = 384 * 1024 * 1024
"""Memory all image decodes + preprocessing in flight may use together (estimated)."""

PREPROCESS_BYTES_PER_PIXEL = 80
"""Peak memory of ``preprocess_image`` per pixel of its working image (measured: a
1024x1024 photo peaks at 56-72 MiB; the float32 maps, the background fit, the specks)."""

IMAGE_OVERHEAD_BYTES = 4 * 1024 * 1024
"""Added to every image's estimate: the model's forward pass, Python objects, the answer."""

OPEN_BYTES = MAX_IMAGE_BYTES + 4 * 1024 * 1024
"""Reserved while an image's header is read: its metadata, at most the file, and PNG text
(capped at 4 MiB, see ``PNG_TEXT_BYTES``)."""

PNG_TEXT_BYTES = 4 * 1024 * 1024
"""Cap on decompressed PNG text chunks per image (Pillow's default is 64 MiB)."""

MAX_CONNECTIONS = 128
"""Connections served at once; uvicorn answers 503 to more (its ``limit_concurrency``)."""

HEADER_TIMEOUT_S = 10.0
"""A connection must complete a request's headers within this many seconds of opening
(or of the previous response), or it is closed."""

KEEP_ALIVE_S = 5.0
"""An idle keep-alive connection is closed after this many seconds (uvicorn's default)."""

BODY_GRACE_S = 10.0
BODY_MIN_RATE = 256 * 1024
"""A request body must arrive within BODY_GRACE_S + its length / BODY_MIN_RATE seconds
(a 20 MiB photo: 90 s, about 2 Mbit/s, a poor mobile uplink; a canvas PNG: 10 s), or the
request gets 408 and the connection is closed."""


def decode_slots() -> int:
    """Image decodes run at once: one per core this process may use (they are CPU-bound)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class DecodeBudget:
    """An async, first-come-first-served reservation of bytes and slots.

    ``async with budget.hold(cost):`` waits until ``cost`` bytes (capped at the total, so
    any request can run alone) and one slot are free, in arrival order, so a big image
    is never starved by a stream of small ones.
    """

    def __init__(self, total_bytes: int, slots: int) -> None:
        self.total_bytes = total_bytes
        self.slots = slots
        self.used_bytes = 0
        self.running = 0
        self.peak_bytes = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @asynccontextmanager
    async def hold(self, cost: int) -> AsyncIterator[None]:
        cost = max(0, min(cost, self.total_bytes))
        if not self._waiting and self._fits(cost):
            self._take(cost)
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (cost, granted)
            self._waiting.append(entry)
            try:
                await granted
            except BaseException:
                if granted.done() and not granted.cancelled():
                    self._give_back(cost)  # granted just as we were cancelled
                else:
                    if entry in self._waiting:
                        self._waiting.remove(entry)
                    self._wake()
                raise
        try:
            yield
        finally:
            self._give_back(cost)

    def _fits(self, cost: int) -> bool:
        return self.running < self.slots and self.used_bytes + cost <= self.total_bytes

    def _take(self, cost: int) -> None:
        self.used_bytes += cost
        self.running += 1
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)

    def _give_back(self, cost: int) -> None:
        self.used_bytes -= cost
        self.running -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            cost, granted = self._waiting.popleft()
            if granted.done():  # cancelled while queued
                continue
            self._take(cost)
            granted.set_result(None)
