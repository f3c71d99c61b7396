"""THE worker engine: where a party runs its heavy HE kernels, on its own CPU cores (never a peer's).

Every algorithm reaches its workers through :func:`get` and the :class:`WorkerEngine` interface, so
another engine plugs in with :func:`set_factory` without touching an algorithm: Ray actors on the party's
own cluster (:mod:`atoll.crypto.engine_ray`) with ``set_factory("ray", address=...)``, or with
``ATOLL_ENGINE=ray`` in the party's environment (read on the first :func:`get`)::

    from atoll.crypto import engine
    eng = engine.get(jobs)              # 1 (or None) -> InlineEngine (this process); n > 1 -> n local worker
                                        # processes (cached per n, shared by every algorithm of this process);
                                        # <= 0 -> all cores; a WorkerEngine is returned as it is
    eng.n_workers
    eng.map(fn, [args_0, args_1, ...])  # [fn(*args_i)], in order (task i on worker i % n_workers)
    eng.each(fn, args)                  # fn(*args) once on every worker (e.g. build a key's tables)
    res = eng.place([v_0, v_1, ...])    # v_i stays resident on worker i (e.g. a block of rows)
    res = eng.place_all(v)              # the same value on every worker (e.g. a public key)
    eng.run(fn, res, [args_0, ...])     # [fn(v_i, *args_i)], task i on worker i, next to its resident value
    eng.release(res)                    # or: with eng.place(...) as res: ...
    eng.shutdown()                      # stop the workers (cached engines stop when the process ends)

Every ``jobs=`` argument of :mod:`atoll.crypto` (encrypt, decrypt, ``matvec_t``, ``rerandomize``,
histograms, packing) accepts a worker count or an engine.

``fn`` must be a module-level function (it reaches a worker by reference). Arguments, resident values and
results are this party's own values -- gmpy2 integers (large lists travel packed, see :func:`ship`), numpy
arrays, public keys -- and cross by local pickling over pipes to this party's own processes, never the
federation wire. Decryption ships only modular exponentiations (secret exponent and modulus) to them.

Local worker processes (:class:`ProcessEngine`) are forked on Linux (no re-import of the caller's
``__main__``; fixed-base tables built before the workers start are inherited), or come from a
``forkserver`` (which preloads :mod:`atoll.crypto.he`) in a process that runs gRPC threads, where forking
is unsafe; ``ATOLL_HE_START_METHOD=spawn|forkserver|fork`` overrides the choice (spawn needs the usual
``if __name__ == "__main__":`` guard). Each worker is its own single-process executor, so task ``i`` lands
on a known worker and resident values stay where they were placed. Workers end with their owner: the
engines are stopped before a ``multiprocessing`` child's exit hook joins its children (or that exit would
hang), and each worker exits by itself when the owning process is gone (killed, crashed). Inside a
daemonic process (which may not have children) work runs in-process, with a one-time warning.
"""

from __future__ import annotations

import abc
import atexit
import itertools
import logging
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence, Union

import gmpy2

from atoll._process import cpu_count, die_with_parent
from atoll.errors import CryptoError

log = logging.getLogger(__name__)

__all__ = ["Jobs", "WorkerEngine", "InlineEngine", "ProcessEngine", "Resident", "get", "set_factory", "resolve_jobs",
           "split", "ship", "unship", "powmod_list", "warm_up", "can_fork_workers", "shutdown", "KINDS",
           "factory_for"]


#: what every ``jobs=`` argument of atoll.crypto accepts: a worker count or an engine
Jobs = Union[int, "WorkerEngine", None]


def resolve_jobs(jobs: Jobs) -> int:
    """Number of workers: ``None``/1 -> 1, ``<= 0`` -> all cores, an engine -> its worker count."""
    if isinstance(jobs, WorkerEngine):
        return jobs.n_workers
    if jobs is None:
        return 1
    jobs = int(jobs)
    return cpu_count() if jobs <= 0 else jobs


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


def ship(values: list) -> tuple:
    """A list of non-negative integers (ciphertexts) as one packed blob: about twice as fast to pickle."""
    if not values:
        return (b"", 1, 0)
    width = max(1, max(v.bit_length() for v in values))
    return (gmpy2.to_binary(gmpy2.pack(values, width)), width, len(values))


def unship(blob: tuple) -> list:
    """Inverse of :func:`ship`: the list of gmpy2 integers."""
    raw, width, count = blob
    if not count:
        return []
    out = gmpy2.unpack(gmpy2.from_binary(raw), width)
    if len(out) < count:  # zeros at the top of the pack are not stored
        out += [gmpy2.mpz(0)] * (count - len(out))
    return out


# ----------------------------------------------------------------------------- the interface

class Resident:
    """A handle on values placed on an engine's workers (``values[i]`` on worker ``i``)."""

    __slots__ = ("engine", "rid", "n")

    def __init__(self, engine: "WorkerEngine", rid: int, n: int):
        self.engine, self.rid, self.n = engine, rid, n

    def __enter__(self) -> "Resident":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.engine.release(self)

    def __repr__(self) -> str:
        return f"Resident(id={self.rid}, workers={self.n})"


class WorkerEngine(abc.ABC):
    """A party's workers for HE kernels. Implementations: :class:`InlineEngine`, :class:`ProcessEngine`."""

    n_workers: int

    @abc.abstractmethod
    def map(self, fn: Callable, args: Sequence[tuple]) -> list:
        """``[fn(*a) for a in args]``, task ``i`` on worker ``i % n_workers``, results in order."""

    @abc.abstractmethod
    def each(self, fn: Callable, args: tuple = ()) -> list:
        """``fn(*args)`` once on every worker; the results by worker."""

    @abc.abstractmethod
    def place(self, values: Sequence[Any]) -> Resident:
        """Keep ``values[i]`` on worker ``i`` (at most ``n_workers`` values) until :meth:`release`."""

    def place_all(self, value: Any) -> Resident:
        """Keep ``value`` on every worker."""
        return self.place([value] * self.n_workers)

    @abc.abstractmethod
    def run(self, fn: Callable, resident: Resident, args: Sequence[tuple]) -> list:
        """``[fn(value_i, *args[i])]`` with task ``i`` on worker ``i`` (``len(args) <= resident.n``)."""

    @abc.abstractmethod
    def release(self, resident: Resident) -> None:
        """Forget the resident values (idempotent)."""

    @abc.abstractmethod
    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers; resident values are lost."""


def _check_run(resident: Resident, engine: WorkerEngine, args: Sequence[tuple]) -> None:
    if resident.engine is not engine:
        raise CryptoError("these resident values were placed on another engine")
    if len(args) > resident.n:
        raise CryptoError(f"{len(args)} tasks for values resident on {resident.n} workers")


def _released(resident_id: int) -> CryptoError:
    return CryptoError(f"resident values {resident_id} were released (or never reached this worker); place them again")


class InlineEngine(WorkerEngine):
    """One worker: this process (``jobs=1``; also the fallback inside daemonic processes)."""

    n_workers = 1

    def __init__(self) -> None:
        self._state: dict[int, Any] = {}
        self._ids = itertools.count()

    def map(self, fn: Callable, args: Sequence[tuple]) -> list:
        return [fn(*a) for a in args]

    def each(self, fn: Callable, args: tuple = ()) -> list:
        return [fn(*args)]

    def place(self, values: Sequence[Any]) -> Resident:
        if len(values) > 1:
            raise CryptoError(f"{len(values)} values for an engine with one worker")
        rid = next(self._ids)
        if values:
            self._state[rid] = values[0]
        return Resident(self, rid, len(values))

    def run(self, fn: Callable, resident: Resident, args: Sequence[tuple]) -> list:
        _check_run(resident, self, args)
        if args and resident.rid not in self._state:
            raise _released(resident.rid)
        return [fn(self._state[resident.rid], *a) for a in args]

    def release(self, resident: Resident) -> None:
        self._state.pop(resident.rid, None)

    def shutdown(self, wait: bool = True) -> None:
        self._state.clear()


# ---- worker side of ProcessEngine: resident values by id
_STATE: dict[int, Any] = {}


def _w_put(rid: int, value: Any) -> None:
    _STATE[rid] = value


def _w_drop(rid: int) -> None:
    _STATE.pop(rid, None)


def _w_run(fn: Callable, rid: int, args: tuple) -> Any:
    if rid not in _STATE:
        raise _released(rid)
    return fn(_STATE[rid], *args)


def _start_method() -> str:
    """``fork`` (fast) unless this process runs gRPC threads (a party of a gRPC federation):
    forking a process in the middle of gRPC calls is unsafe, so workers then come from a
    fresh ``forkserver``."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" not in methods:
        return "spawn"
    return "forkserver" if "grpc" in sys.modules and "forkserver" in methods else "fork"


class ProcessEngine(WorkerEngine):
    """``n`` local worker processes, each its own single-process executor (so task ``i`` has a known worker)."""

    def __init__(self, n: int, start_method: str | None = None):
        if n < 1:
            raise CryptoError("a process engine needs at least one worker")
        method = start_method or os.environ.get("ATOLL_HE_START_METHOD") or _start_method()
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["atoll.crypto.he"])
        log.debug("starting %d HE worker processes (%s)", n, method)
        self.n_workers = n
        self.start_method = method
        self._workers = [ProcessPoolExecutor(1, mp_context=ctx, initializer=die_with_parent) for _ in range(n)]
        self._ids = itertools.count()
        self.broken = False
        self.closed = False

    def _gather(self, futures: list) -> list:
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool:
            self.broken = True
            raise CryptoError("an HE worker process died (killed, or out of memory); the work was lost: "
                              "run it again (a fresh set of workers starts) or use jobs=1") from None

    def _submit(self, i: int, fn: Callable, *args: Any):
        if self.closed:
            raise CryptoError("this worker engine was shut down; get a new one with engine.get(jobs)")
        try:
            return self._workers[i].submit(fn, *args)
        except BrokenProcessPool:
            self.broken = True
            raise CryptoError("an HE worker process died; run the work again (a fresh set of workers "
                              "starts) or use jobs=1") from None

    def map(self, fn: Callable, args: Sequence[tuple]) -> list:
        n = self.n_workers
        return self._gather([self._submit(i % n, fn, *a) for i, a in enumerate(args)])

    def each(self, fn: Callable, args: tuple = ()) -> list:
        return self._gather([self._submit(i, fn, *args) for i in range(self.n_workers)])

    def place(self, values: Sequence[Any]) -> Resident:
        if len(values) > self.n_workers:
            raise CryptoError(f"{len(values)} values for an engine with {self.n_workers} workers")
        rid = next(self._ids)
        self._gather([self._submit(i, _w_put, rid, v) for i, v in enumerate(values)])
        return Resident(self, rid, len(values))

    def run(self, fn: Callable, resident: Resident, args: Sequence[tuple]) -> list:
        _check_run(resident, self, args)
        return self._gather([self._submit(i, _w_run, fn, resident.rid, a) for i, a in enumerate(args)])

    def release(self, resident: Resident) -> None:
        if self.closed or self.broken:
            return
        for i in range(resident.n):  # FIFO per worker: later tasks run after the drop; no need to wait
            try:
                self._workers[i].submit(_w_drop, resident.rid)
            except (BrokenProcessPool, RuntimeError):
                return

    def pids(self) -> list[int]:
        """Process ids of the live workers (started on first use)."""
        return [p for w in self._workers for p in (getattr(w, "_processes", None) or {})]

    def shutdown(self, wait: bool = True) -> None:
        self.closed = True
        for w in self._workers:
            w.shutdown(wait=wait, cancel_futures=True)


# ----------------------------------------------------------------------------- engine selection

_INLINE = InlineEngine()
_ENGINES: dict[int, WorkerEngine] = {}
_LOCK = threading.Lock()
_UNSET: Any = object()
_FACTORY: Any = _UNSET  # a factory, None (local processes), or not chosen yet (see _factory)
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


#: engines a party may choose by name (never a name a peer or a job file imports): name -> module, class
KINDS = {"local": None, "ray": ("atoll.crypto.engine_ray", "RayEngine")}


def factory_for(kind: str, **options: Any) -> Callable[[int], WorkerEngine] | None:
    """The factory of engine ``kind`` (see :data:`KINDS`) with its options (``None`` for local processes);
    e.g. ``factory_for("ray", address="auto")``."""
    if kind not in KINDS:
        raise CryptoError(f"unknown worker engine {kind!r}: choose one of {sorted(KINDS)}")
    if KINDS[kind] is None:
        if options:
            raise CryptoError(f"the local worker engine takes no options (got {sorted(options)})")
        return None
    import functools
    import importlib

    module, name = KINDS[kind]
    return functools.partial(getattr(importlib.import_module(module), name), **options)


def set_factory(factory: Callable[[int], WorkerEngine] | str | None, **options: Any) -> None:
    """Make :func:`get` build its engines of ``n > 1`` workers with ``factory(n)`` (e.g. a Ray engine; built
    once per ``n`` and cached like the local ones); ``None`` restores local processes. ``factory`` may be a
    name of :data:`KINDS` with its options: ``set_factory("ray", address="auto")``. Stops the cached engines.

    Without a call, the party's environment chooses: ``ATOLL_ENGINE=ray`` (Ray then reads ``RAY_ADDRESS``)."""
    global _FACTORY
    if isinstance(factory, str):
        factory = factory_for(factory, **options)
    elif options:
        raise CryptoError("engine options go with an engine name, e.g. set_factory('ray', address='auto')")
    shutdown(wait=False)
    _FACTORY = factory


def _factory() -> Callable[[int], WorkerEngine] | None:
    """The factory set by :func:`set_factory`, else the one ``ATOLL_ENGINE`` names (read once)."""
    global _FACTORY
    if _FACTORY is _UNSET:
        with _LOCK:
            if _FACTORY is _UNSET:
                _FACTORY = factory_for(os.environ.get("ATOLL_ENGINE", "").strip().lower() or "local")
    return _FACTORY  # type: ignore[return-value]


def get(jobs: Jobs = 1) -> WorkerEngine:
    """The engine for ``jobs`` (see the module docstring); local process engines are cached per size."""
    if isinstance(jobs, WorkerEngine):
        return jobs
    n = resolve_jobs(jobs)
    if n <= 1:
        return _INLINE
    factory = _factory()
    if factory is None and not can_fork_workers():
        return _INLINE
    with _LOCK:
        eng = _ENGINES.get(n)
        if eng is None or getattr(eng, "broken", False) or getattr(eng, "closed", False):
            if eng is not None:
                eng.shutdown(wait=False)
            eng = (factory or ProcessEngine)(n)
            _ENGINES[n] = eng
            _shutdown_before_exit()
        return eng


_FINALIZER: Any = None


def _shutdown_before_exit() -> None:
    """Stop the engines before multiprocessing's exit hook joins this process's children.

    In a process started by ``multiprocessing`` (e.g. a party of ``launch(mode="processes")``),
    ``_bootstrap`` joins every non-daemonic child before ``atexit`` handlers run: workers, still
    waiting for tasks, would block that exit until the launcher kills the process. Finalizers with an
    exit priority run first; this one must also run before the task queue's own finalizer (priority
    10) stops the thread that feeds it, and waits until the workers got their stop signal and exited.
    (Called with ``_LOCK`` held.)
    """
    global _FINALIZER
    if _FINALIZER is None or not _FINALIZER.still_active():
        import multiprocessing.util

        _FINALIZER = multiprocessing.util.Finalize(None, shutdown, kwargs={"wait": True}, exitpriority=100)


def shutdown(wait: bool = False) -> None:
    """Stop the cached engines (called at exit); ``wait``: until their workers have exited."""
    with _LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for e in engines:
        e.shutdown(wait=wait)


atexit.register(shutdown)


# ----------------------------------------------------------------------------- shared kernels

def _powmod_list_worker(bases: tuple, exp, mod) -> tuple:
    return ship(list(gmpy2.powmod_base_list(unship(bases), exp, mod)))


def powmod_list(bases: list, exp, mod, jobs: Jobs = 1) -> list:
    """``[b**exp mod mod for b in bases]``, split across the engine's workers for large lists.

    Used by decryption: the exponent and modulus (secret factors) then cross a local pipe to this
    party's own worker processes, never the network.
    """
    eng = get(jobs)
    n = eng.n_workers
    if n <= 1 or len(bases) < 4 * n:
        return list(gmpy2.powmod_base_list(bases, exp, mod)) if bases else []
    parts = eng.map(_powmod_list_worker, [(ship(bases[a:b]), exp, mod) for a, b in split(len(bases), n)])
    return [v for part in parts for v in unship(part)]


def _warm_key(pk) -> int:
    pk._fresh_masks(1)  # builds the fixed-base tables of this worker
    return os.getpid()


def warm_up(pk, jobs: Jobs) -> None:
    """Build ``pk``'s fixed-base tables here and in every worker of the engine for ``jobs``."""
    pk._fresh_masks(1)
    eng = get(jobs)
    if eng.n_workers > 1:
        eng.each(_warm_key, (pk,))
