"""The engine's threads: how many, the pool they live in, and running one task on each.

NumPy releases the GIL inside its ufunc loops and matrix products, so plain Python threads
run them at the same time. The optimizer splits its update across them, and ``predict``
and ``evaluate`` give each thread whole chunks of the batch (data parallel) while BLAS
runs on one thread per chunk: BLAS would otherwise split every product again and keep its
own threads spinning on the cores ours need.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

from threadpoolctl import ThreadpoolController

T = TypeVar("T")
R = TypeVar("R")

_POOLS: dict[int, ThreadPoolExecutor] = {}
_BLAS_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: new pools, and a lock that no
    thread of the parent can still be holding."""
    global _BLAS_LOCK
    _POOLS.clear()
    _BLAS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def default_threads() -> int:
    """MNISTLAB_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs this process may use."""
    for var in ("MNISTLAB_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) > 0:
            return int(os.environ[var])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of ``workers`` engine threads (made once, then reused)."""
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="mnistlab-engine")
    return _POOLS[workers]


def run_each(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """[fn(item) for item in items], the first in this thread and each other in one of
    the pool's threads at the same time; returns when all are done (errors propagate)."""
    items = list(items)
    if len(items) < 2:
        return [fn(item) for item in items]
    # each runs in a copy of our context, so np.errstate settings apply there too
    futures = [pool(len(items) - 1).submit(contextvars.copy_context().run, fn, item)
               for item in items[1:]]
    try:
        first = fn(items[0])
    finally:
        wait(futures)  # never leave a task running behind an error
    return [first, *(future.result() for future in futures)]


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """Made on first use, once NumPy has loaded its BLAS."""
    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Within the block, NumPy's BLAS computes each product on the calling thread alone.

    The limit is process-wide, and threadpoolctl lets one thread set it, so one such block
    runs at a time (another thread's waits): each restores the limit it found."""
    with _BLAS_LOCK, _blas_controller().limit(limits=1, user_api="blas"):
        yield


MIN_PARALLEL_ROWS = 256  # per thread; fewer rows are not worth a thread hand-off
CHUNKS_PER_THREAD = 4  # at least, in a parallel predict or evaluate


def threads_for(rows: int) -> int:
    """``default_threads()`` if ``rows`` rows are worth spreading over them, else 1."""
    threads = default_threads()
    return threads if rows >= threads * MIN_PARALLEL_ROWS else 1


def each_chunk(layers: list[Any], loss: Any, n: int, size: int,
               visit: Callable[[list[Any], Any, slice], R]) -> list[R]:
    """[visit(layers, loss, rows) for consecutive ranges of rows covering range(n), each
    at most ``size``], in the order of the rows.

    With several threads (``threads_for``) each thread takes whole chunks through its own
    replica of the layers (and copy of the loss, which caches its inputs too) while BLAS
    keeps each product on one thread: then biases, activations and small products run in
    parallel too, on chunks that are still in cache, and BLAS has no idle threads spinning
    on the cores.
    """
    threads = threads_for(n)
    if threads == 1:
        return [visit(layers, loss, slice(s, s + size)) for s in range(0, n, size)]
    # as many chunks for every thread, and several: a thread that starts late (its core
    # busy elsewhere) then leaves the others a few chunks more, not a whole share
    chunks = threads * max(CHUNKS_PER_THREAD, math.ceil(n / (threads * size)))
    rows = math.ceil(n / chunks)
    starts = iter(range(0, n, rows))  # shared: each thread takes the next chunk
    results: dict[int, R] = {}

    def work(replica: tuple[list[Any], Any]) -> None:
        for start in starts:
            results[start] = visit(*replica, slice(start, start + rows))

    replicas = [([layer.replica() for layer in layers], copy.copy(loss))
                for _ in range(threads)]
    with single_threaded_blas():
        run_each(work, replicas)
    return [results[start] for start in sorted(results)]
