"""Parallel execution of large encrypt / decrypt / matvec jobs.

``jobs=1`` always runs in-process. ``jobs>1`` uses a cached pool of worker
processes (``spawn`` start method, safe in threaded programs such as the
in-process federation); ``jobs<=0`` means one per CPU core. Work crosses to the
workers as gmpy2 integers and numpy arrays (local inter-process pickling of
our own values: never the federation wire). Workers cache public keys by their
fingerprint, so fixed-base tables are built once per worker and key.

Decryption uses threads instead: gmpy2's ``powmod_base_list`` releases the GIL.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

__all__ = ["resolve_jobs", "split", "process_map", "thread_map", "shutdown"]

_POOLS: dict[int, ProcessPoolExecutor] = {}
_LOCK = threading.Lock()


def resolve_jobs(jobs: int | None) -> int:
    """Number of workers: ``None``/1 -> 1, ``<= 0`` -> all cores."""
    if jobs is None:
        return 1
    jobs = int(jobs)
    if jobs <= 0:
        return os.cpu_count() or 1
    return jobs


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into ``parts`` contiguous (start, stop) chunks of near-equal size."""
    parts = max(1, min(parts, n)) if n else 1
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def _pool(jobs: int) -> ProcessPoolExecutor:
    with _LOCK:
        pool = _POOLS.get(jobs)
        if pool is None:
            log.debug("starting a pool of %d HE worker processes", jobs)
            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
            _POOLS[jobs] = pool
        return pool


def process_map(fn: Callable, args: Sequence[tuple], jobs: int) -> list[Any]:
    """Run ``fn(*a)`` for each ``a`` in ``args``; in-process when ``jobs == 1`` or a single task."""
    if jobs <= 1 or len(args) <= 1:
        return [fn(*a) for a in args]
    pool = _pool(jobs)
    futures = [pool.submit(fn, *a) for a in args]
    return [f.result() for f in futures]


def thread_map(fn: Callable, args: Sequence[tuple], jobs: int) -> list[Any]:
    """Run ``fn(*a)`` in threads (for work that releases the GIL, e.g. gmpy2 ``*_list``)."""
    if jobs <= 1 or len(args) <= 1:
        return [fn(*a) for a in args]
    with ThreadPoolExecutor(max_workers=jobs) as ex:
        return list(ex.map(lambda a: fn(*a), args))


def shutdown() -> None:
    """Stop the cached worker pools (called at exit)."""
    with _LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for p in pools:
        p.shutdown(wait=False, cancel_futures=True)


atexit.register(shutdown)
