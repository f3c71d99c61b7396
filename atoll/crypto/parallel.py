"""Parallel execution of large encrypt / decrypt / matvec jobs.

``jobs=1`` always runs in-process. ``jobs>1`` uses a cached pool of worker
processes; ``jobs<=0`` means one per CPU core. Workers are forked on Linux
(no re-import of the caller's ``__main__``, and fixed-base tables built before
the pool starts are inherited for free); set ``ATOLL_HE_START_METHOD=spawn``
(or ``forkserver``) to change that, e.g. in programs that must not fork while
threads run (spawn requires the usual ``if __name__ == "__main__":`` guard). Work crosses to the
workers as gmpy2 integers and numpy arrays (local inter-process pickling of
our own values: never the federation wire). Fixed-base tables are cached per
process by their public base and modulus, so a worker builds them once per key.

Decryption sends only the modular exponentiations (``parallel.powmod_list``) to the workers.
Workers end with their owner: the pools are stopped before a ``multiprocessing``
child's exit hook joins its children (or its exit would hang), and each worker
exits by itself when the owning process is gone (killed, crashed).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Sequence

from atoll._process import die_with_parent

log = logging.getLogger(__name__)

__all__ = ["resolve_jobs", "split", "process_map", "powmod_list", "thread_map", "warm_up", "shutdown"]

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


def _start_method() -> str:
    """``fork`` (fast) unless this process runs gRPC threads (a party of a gRPC federation):
    forking a process in the middle of gRPC calls is unsafe, so workers then come from a
    fresh ``forkserver``."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" not in methods:
        return "spawn"
    return "forkserver" if "grpc" in sys.modules and "forkserver" in methods else "fork"


def _pool(jobs: int) -> ProcessPoolExecutor:
    with _LOCK:
        pool = _POOLS.get(jobs)
        if pool is None:
            log.debug("starting a pool of %d HE worker processes", jobs)
            method = os.environ.get("ATOLL_HE_START_METHOD") or _start_method()
            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(method),
                                       initializer=die_with_parent)
            _POOLS[jobs] = pool
            _shutdown_before_exit()
        return pool


_FINALIZER: Any = None


def _shutdown_before_exit() -> None:
    """Stop the pools before multiprocessing's exit hook joins this process's children.

    In a process started by ``multiprocessing`` (e.g. a party of
    ``launch(mode="processes")``), ``_bootstrap`` joins every non-daemonic child
    before ``atexit`` handlers run: pool workers, still waiting for tasks, would
    block that exit until the launcher kills the process. Finalizers with an exit
    priority run first; this one must also run before the task queue's own
    finalizer (priority 10) stops the thread that feeds it, and waits until the
    workers got their stop signal and exited. (Called with ``_LOCK`` held.)
    """
    global _FINALIZER
    if _FINALIZER is None or not _FINALIZER.still_active():
        import multiprocessing.util

        _FINALIZER = multiprocessing.util.Finalize(None, shutdown, kwargs={"wait": True}, exitpriority=100)


_WARNED_DAEMON = False


def can_fork_workers() -> bool:
    """False inside a daemonic process (which may not have children; parties of ``launch(mode="processes")``
    are not daemonic): work then runs in-process."""
    global _WARNED_DAEMON
    if not multiprocessing.current_process().daemon:
        return True
    if not _WARNED_DAEMON:
        _WARNED_DAEMON = True
        log.warning("HE jobs>1 requested inside a daemonic process, which cannot start worker processes; "
                    "running in-process (start the party as a non-daemonic process to parallelise)")
    return False


def process_map(fn: Callable, args: Sequence[tuple], jobs: int) -> list[Any]:
    """Run ``fn(*a)`` for each ``a`` in ``args``; in-process when ``jobs == 1``, a single task, or no children
    are allowed (daemonic process)."""
    if jobs <= 1 or len(args) <= 1 or not can_fork_workers():
        return [fn(*a) for a in args]
    pool = _pool(jobs)
    futures = [pool.submit(fn, *a) for a in args]
    return [f.result() for f in futures]


def _warm_worker(scheme: str, fields: dict, pause: float) -> int:
    import time

    from atoll.crypto.base import key_from_fields

    pk = key_from_fields(scheme, fields)
    pk._fresh_masks(1)  # builds the fixed-base tables
    time.sleep(pause)  # keep this worker busy so that the next task lands on another one
    return os.getpid()


def warm_up(pk, jobs: int) -> None:
    """Start the worker pool for ``jobs`` and build ``pk``'s tables in every worker."""
    jobs = resolve_jobs(jobs)
    pk._fresh_masks(1)
    if jobs <= 1 or not can_fork_workers():
        return
    pool = _pool(jobs)
    futures = [pool.submit(_warm_worker, pk.scheme, pk._fields(), 0.3) for _ in range(jobs)]
    pids = {f.result() for f in futures}
    log.debug("warmed %d of %d HE workers", len(pids), jobs)


def _powmod_list_worker(bases: list, exp, mod) -> list:
    import gmpy2

    return list(gmpy2.powmod_base_list(bases, exp, mod))


def powmod_list(bases: list, exp, mod, jobs: int = 1) -> list:
    """``[b**exp mod mod for b in bases]``, split across ``jobs`` worker processes for large lists.

    Used by decryption: the exponent and modulus (secret factors) then cross a
    local pipe to this party's own worker processes, never the network.
    """
    import gmpy2

    jobs = resolve_jobs(jobs)
    if jobs <= 1 or len(bases) < 4 * jobs:
        return list(gmpy2.powmod_base_list(bases, exp, mod)) if bases else []
    chunks = split(len(bases), jobs)
    parts = process_map(_powmod_list_worker, [(bases[a:b], exp, mod) for a, b in chunks], jobs)
    return [v for part in parts for v in part]


def thread_map(fn: Callable, args: Sequence[tuple], jobs: int) -> list[Any]:
    """Run ``fn(*a)`` in threads (for work that releases the GIL, e.g. gmpy2 ``*_list``)."""
    if jobs <= 1 or len(args) <= 1:
        return [fn(*a) for a in args]
    with ThreadPoolExecutor(max_workers=jobs) as ex:
        return list(ex.map(lambda a: fn(*a), args))


def shutdown(wait: bool = False) -> None:
    """Stop the cached worker pools (called at exit); ``wait``: until their workers have exited."""
    with _LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for p in pools:
        p.shutdown(wait=wait, cancel_futures=True)


atexit.register(shutdown)
