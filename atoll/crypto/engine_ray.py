"""A party's worker engine on its own Ray cluster: :class:`RayEngine`, the :class:`~atoll.crypto.engine.WorkerEngine`
interface on Ray actors (issue 18).

Selected without touching an algorithm, by the party that owns the cluster::

    engine.set_factory("ray", address="auto")   # or: ATOLL_ENGINE=ray (and RAY_ADDRESS=...) in the party's environment
    eng = engine.get(4)                         # four Ray actors; every jobs=4 of atoll.crypto now runs on them

One actor per worker, so values placed (:meth:`~RayEngine.place`) on worker ``i`` stay resident in actor ``i``'s
process (a block of rows, a public key with its fixed-base tables) and task ``i`` of
:meth:`~RayEngine.run` runs next to them; each actor runs its tasks one at a time, in the order they were
sent, like a local worker process. Results are bit-identical to the local engine's: the same module-level
kernels run on the same arguments.

Placed values are also put in Ray's object store (one copy for :meth:`~RayEngine.place_all`), owned by
this driver until :meth:`~RayEngine.release`: when an actor's process dies mid-task (killed, out of
memory), Ray restarts it (up to ``retries`` times) and retries its tasks, and the restarted actor reads its
resident values back from the store, so the result is the same. The price is a second copy of each
resident value in the object store. An actor killed on purpose (``ray.kill``) or a lost driver is not
retried: that is a :class:`~atoll.errors.CryptoError`, and :func:`~atoll.crypto.engine.get` then builds
a fresh engine, as for a dead local process.

Ray connects to ``address`` (``"auto"``: the cluster of this machine, ``"ray://host:10001"``: a remote one,
``None``: ``RAY_ADDRESS`` if set) or, with neither, starts a local instance of ``num_cpus`` CPUs. The cluster
must be this party's own: arguments, resident values and results are this party's values (gmpy2 integers
packed with :func:`~atoll.crypto.engine.ship`, numpy arrays, public keys) and travel by Ray's serialisation
(cloudpickle) between this party's driver and its own actors, exactly as the local engine pickles them over
pipes to its own processes -- never anything received from a peer, which arrives through the safe codec
first, and never the federation wire. A public key crosses as its checked public fields (its pool of
precomputed random factors stays with its owner); decryption ships only modular exponentiations. Ray is the
optional extra ``atoll[ray]``, imported when a Ray engine is built.

What this engine does not do (yet): split data into blocks by itself (an algorithm places its blocks with
:meth:`place`, as on the local engine) or read data out of core.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any, Callable, Sequence

from atoll.crypto.engine import Resident, WorkerEngine, _check_run, _released
from atoll.errors import AtollError, ConfigError, CryptoError

log = logging.getLogger(__name__)

__all__ = ["RayEngine"]

#: seconds to wait for the actors to start: a cluster without room for them is an error, not a hang
START_TIMEOUT_S = 120.0


class _Worker:
    """One Ray actor: runs module-level functions and keeps resident values by id (see engine's ``_STATE``)."""

    def __init__(self) -> None:
        self.state: dict[int, Any] = {}

    def pid(self) -> int:
        return os.getpid()

    def call(self, fn: Callable, args: tuple) -> Any:
        return fn(*args)

    def put(self, rid: int, value: Any) -> None:
        self.state[rid] = value

    def drop(self, rid: int) -> None:
        self.state.pop(rid, None)

    def run(self, fn: Callable, rid: int, stored: list, args: tuple) -> Any:
        if rid not in self.state:  # this actor was restarted (its process died): read the value back
            import ray

            self.state[rid] = ray.get(stored[0])
        return fn(self.state[rid], *args)


def _ray():
    try:
        import ray
    except ImportError as e:
        raise ConfigError("the Ray worker engine needs Ray: pip install 'atoll[ray]'") from e
    return ray


def connect(address: str | None = None, num_cpus: int | None = None):
    """Ray, initialised: joins ``address`` (or ``RAY_ADDRESS``) or starts a local instance of ``num_cpus`` CPUs."""
    ray = _ray()
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    return ray


class RayEngine(WorkerEngine):
    """``n`` Ray actors of this party's own cluster, actor ``i`` is worker ``i``.

    ``cpus_per_worker``: the CPUs Ray reserves for each actor (``0`` lets more actors than CPUs share a
    small cluster, as in tests).
    """

    def __init__(self, n: int, address: str | None = None, num_cpus: int | None = None,
                 cpus_per_worker: float = 1.0, retries: int = 3):
        if n < 1:
            raise CryptoError("a Ray engine needs at least one worker")
        self._ray = ray = connect(address, num_cpus)
        actor = ray.remote(num_cpus=cpus_per_worker, max_restarts=retries, max_task_retries=retries,
                           scheduling_strategy="SPREAD")(_Worker)  # over the cluster's nodes
        self._workers = [actor.remote() for _ in range(n)]
        self.n_workers = n
        self._ids = itertools.count()
        self._stored: dict[int, list] = {}  # resident values in Ray's object store, by id: one ref per worker
        self.broken = False
        self.closed = False
        self.tasks = 0  # tasks sent to the actors so far
        try:
            ray.get([w.pid.remote() for w in self._workers], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise CryptoError(f"the Ray cluster has no room for {n} workers of {cpus_per_worker} CPU each "
                              f"within {START_TIMEOUT_S:.0f} s: ask for fewer jobs or add nodes") from None
        log.debug("started %d Ray workers", n)

    def pids(self) -> list[int]:
        """Process ids of the actors (on their nodes; an actor restarted by Ray has a new one)."""
        return self._gather([w.pid.remote() for w in self._workers])

    def _gather(self, refs: list) -> list:
        ray = self._ray
        self.tasks += len(refs)
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, AtollError):
                raise cause from None
            raise
        except ray.exceptions.RayActorError:
            self.broken = True
            raise CryptoError("a Ray worker of this engine died (killed, or its node was lost); the work was lost: "
                              "run it again (a fresh set of workers starts) or use jobs=1") from None

    def _check_open(self) -> None:
        if self.closed:
            raise CryptoError("this worker engine was shut down; get a new one with engine.get(jobs)")

    def map(self, fn: Callable, args: Sequence[tuple]) -> list:
        self._check_open()
        n = self.n_workers
        return self._gather([self._workers[i % n].call.remote(fn, tuple(a)) for i, a in enumerate(args)])

    def each(self, fn: Callable, args: tuple = ()) -> list:
        self._check_open()
        return self._gather([w.call.remote(fn, tuple(args)) for w in self._workers])

    def place(self, values: Sequence[Any]) -> Resident:
        self._check_open()
        if len(values) > self.n_workers:
            raise CryptoError(f"{len(values)} values for an engine with {self.n_workers} workers")
        rid = next(self._ids)
        refs = [self._ray.put(v) for v in values]
        self._stored[rid] = refs
        self._gather([self._workers[i].put.remote(rid, ref) for i, ref in enumerate(refs)])
        return Resident(self, rid, len(values))

    def place_all(self, value: Any) -> Resident:
        """``value`` on every worker, serialised once (one object in Ray's store, read by every actor)."""
        self._check_open()
        ref = self._ray.put(value)
        rid = next(self._ids)
        self._stored[rid] = [ref] * self.n_workers
        self._gather([w.put.remote(rid, ref) for w in self._workers])
        return Resident(self, rid, self.n_workers)

    def run(self, fn: Callable, resident: Resident, args: Sequence[tuple]) -> list:
        _check_run(resident, self, args)
        self._check_open()
        refs = self._stored.get(resident.rid)
        if args and refs is None:
            raise _released(resident.rid)
        # the ref travels inside a list, so Ray does not fetch the value for every call: the actor reads it
        # from the object store only after a restart
        return self._gather([self._workers[i].run.remote(fn, resident.rid, [refs[i]], tuple(a))
                             for i, a in enumerate(args)])

    def release(self, resident: Resident) -> None:
        self._stored.pop(resident.rid, None)
        if self.closed or self.broken:
            return
        for i in range(resident.n):  # in order per actor: later tasks run after the drop; no need to wait
            self._workers[i].drop.remote(resident.rid)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the actors (the Ray cluster itself stays up: it is the party's, not this engine's)."""
        if self.closed:
            return
        self.closed = True
        self._stored.clear()
        for w in self._workers:
            try:
                self._ray.kill(w)
            except Exception:  # noqa: BLE001 - Ray already shut down, or the actor is gone
                pass
