"""Simulation engine: many clients on one machine (or a Ray cluster) with bounded memory.

The server is the same :class:`~atoll.ml.horizontal.roles.FedServer` as in
deployment; :class:`SimulationChannel` stands in for the network. A client is
*materialised* (``model_fn()`` plus its data) only while it handles a message,
then released, so memory grows with the number of clients training at once,
not with the number of clients. Client data may be a list or a callable
``cid_index -> data`` that loads or generates it on demand.

Messages are encoded with the wire codec once per stage (a model whose weights
cannot be encoded fails here first). The thread, process and Ray backends
exchange only wire bytes with their clients; the in-process backend decodes
each distinct message once, hands every client its own copy, and puts the
first reply of each stage through the codec (decoding per client costs more
than a small model's training).

Backends:

* ``"inprocess"`` (default): clients one after another in this process.
* ``"threads"``: a thread pool (numpy and torch release the GIL in their kernels).
* ``"processes"``: a process pool (``model_fn`` and the data must be picklable).
* ``"ray"``: Ray tasks (optional extra ``atoll[ray]``). Local by default; to run on a Ray
  cluster, call ``ray.init(address=...)`` before :func:`atoll.horizontal.simulate` or set
  ``RAY_ADDRESS``: tasks are then spread over the cluster's CPUs.

Training and evaluation run on the backend; the secure-aggregation stages after
training (key agreement, masking) run in this process on the small per-client
state they need (for the multi-round protocol that state is kept from round to
round: each client's pairwise keys and the shares it holds). In simulation this process plays every role, so it does hold
each client's update for a moment; the server object still only ever receives
masked vectors (the deployment wire audit in the tests checks the real path).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from atoll import wire
from atoll.errors import ConfigError
from atoll.ml.horizontal.models import Model
from atoll.ml.horizontal.roles import FedClient
from atoll.secure import secagg_multiround as mr
from atoll.secure.secagg import SecAggClient

log = logging.getLogger(__name__)

DropFn = Callable[[int, str, str], bool]
"""``drop(round, stage, client) -> True`` makes the client vanish from that stage of that round."""


def _roundtrip(value: Any) -> Any:
    return wire.loads(wire.dumps(value))


def _get_data(client_data: Any, i: int) -> Any:
    return client_data(i) if callable(client_data) else client_data[i]


def _stateless(model_fn: Callable[[], Model], name: str, data: Any, payload: bytes, train_only: bool) -> bytes:
    """Materialise one client, handle one encoded message, release it; returns the encoded reply.

    Used by the process and Ray backends: only wire bytes go in and out, as over a network.
    """
    return wire.dumps(_local(model_fn, name, data, wire.loads(payload), train_only))


def _local(model_fn: Callable[[], Model], name: str, data: Any, msg: dict, train_only: bool) -> dict:
    client = FedClient(name, model_fn(), data)
    return client.train(msg) if train_only else client.handle(msg)


_IMMUTABLE = frozenset({bytes, str, int, float, bool, type(None)})


def _copy(value: Any) -> Any:
    """Deep copy of a wire value (arrays copied), so in-memory clients never share buffers."""
    if type(value) in _IMMUTABLE:  # most leaves of a secure-aggregation message: keys, shares, names
        return value
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    return value


def _copy_shallow(msg: dict) -> dict:
    """A copy of a protocol message that shares no mutable container with the original: arrays
    (top level, or a list of them: the model weights) are copied, the lists and dicts of names,
    keys and shares one level down become new containers of the same immutable items."""
    out = {}
    for k, v in msg.items():
        t = type(v)
        if t in _IMMUTABLE:
            out[k] = v
        elif t is np.ndarray:
            out[k] = v.copy()
        elif (t is dict or t is list) and not (v and type(next(iter(v.values() if t is dict else v)))
                                               not in _IMMUTABLE):
            out[k] = v.copy()  # names, keys, ciphertexts, shares (checked on the first item)
        else:
            out[k] = _copy(v)
    return out


class SimulationChannel:
    """Channel to simulated clients ``client_0..client_{n-1}``."""

    def __init__(self, model_fn: Callable[[], Model], client_data: Sequence | Callable[[int], Any],
                 num_clients: int | None = None, backend: str = "inprocess", workers: int | None = None,
                 drop: DropFn | None = None):
        if num_clients is None:
            if callable(client_data):
                raise ConfigError("client_data is a function: give num_clients too")
            num_clients = len(client_data)
        self.model_fn = model_fn
        self.client_data = client_data
        width = len(str(num_clients - 1))
        self.clients = [f"client_{i:0{width}d}" for i in range(num_clients)]
        self._index = {c: i for i, c in enumerate(self.clients)}
        self.drop = drop
        self.backend = backend
        self._executor: Executor | None = None
        self._ray = None
        self.workers = workers = workers or len(os.sched_getaffinity(0))
        if backend == "threads":
            self._executor = ThreadPoolExecutor(workers)  # threads exchange wire bytes too
        elif backend == "processes":
            import multiprocessing as mp
            self._executor = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
        elif backend == "ray":
            self._ray = _start_ray(workers)
        elif backend != "inprocess":
            raise ConfigError(f"unknown simulation backend {backend!r}; use inprocess, threads, processes or ray")
        self._secagg: dict[str, SecAggClient] = {}
        # multi-round secure aggregation: each client's epoch state lives as long as the channel
        self._multiround: dict[str, mr.MultiRoundSecAggClient] = {}
        self._round = -1
        self._gone: set[str] = set()
        self._stage = ""
        #: ``{round: {stage: seconds}}``: the longest time one client spent on a stage's message
        #: (training included), measured for the in-process backend and the secure-aggregation
        #: stages; with clients on their own machines a stage takes about that long plus the network
        self.slowest_client_s: dict[int, dict[str, float]] = {}

    def _timed(self, stage: str, seconds: float) -> None:
        per = self.slowest_client_s.setdefault(self._round, {})
        per[stage] = max(per.get(stage, 0.0), seconds)

    # ------------------------------------------------------------------ running tasks
    def _map(self, names: list[str], msgs: dict[str, dict], train_only: bool) -> list[dict]:
        """Run clients in chunks so at most ``chunk`` are materialised at once."""
        out: list[dict] = []
        # the server usually sends one message object to every client: encode it once
        encoded: dict[int, bytes] = {}
        for c in names:
            if id(msgs[c]) not in encoded:
                encoded[id(msgs[c])] = wire.dumps(msgs[c])
        if self._executor is None and self._ray is None:
            # in memory: decode each distinct message once, hand each client its own copy; the
            # first reply of the stage goes through the codec (a reply that cannot be encoded fails here)
            decoded = {k: wire.loads(v) for k, v in encoded.items()}
            for j, c in enumerate(names):
                t0 = time.perf_counter()
                reply = _local(self.model_fn, c, _get_data(self.client_data, self._index[c]),
                               _copy(decoded[id(msgs[c])]), train_only)
                self._timed("train" if train_only else self._stage, time.perf_counter() - t0)
                out.append(_roundtrip(reply) if j == 0 else _copy(reply))
            return out
        chunk = 4 * (self.workers if self._ray is None else _ray_parallelism(self._ray[0], self.workers))
        for i in range(0, len(names), chunk):
            part = names[i:i + chunk]
            args = [(self.model_fn, c, _get_data(self.client_data, self._index[c]), encoded[id(msgs[c])],
                     train_only) for c in part]
            if self._ray is not None:
                ray, remote = self._ray
                replies = ray.get([remote.remote(*a) for a in args])
            else:
                replies = list(self._executor.map(_stateless, *zip(*args)))
            out += [wire.loads(r) for r in replies]
        return out

    def call(self, stage: str, msgs: dict[str, dict]) -> dict[str, dict]:
        rnd = next((int(m["round"]) for m in msgs.values() if "round" in m), self._round)
        if rnd != self._round or stage in ("fit", "advertise"):
            self._round, self._gone = rnd, set()
            self._secagg.clear()
        if self.drop is not None:
            self._gone |= {c for c in msgs if self.drop(rnd, stage, c)}
        names = [c for c in msgs if c not in self._gone]
        self._stage = stage
        # secure-aggregation stages: the first client of each stage goes through the codec both
        # ways, the others exchange copies (their messages have the same types; encoding hundreds
        # of keys and shares per client would dominate the simulated round)
        if stage == "advertise":
            trained = self._map(names, msgs, train_only=True)
            out = {}
            for j, (c, t) in enumerate(zip(names, trained)):
                m = _roundtrip(msgs[c]) if j == 0 else _copy(msgs[c])
                t0 = time.perf_counter()
                sa = self._secagg[c] = FedClient.secagg_client(c, t, m)
                reply = sa.handle(m)
                self._timed(stage, time.perf_counter() - t0)
                out[c] = _roundtrip(reply) if j == 0 else reply
            return out
        if stage in mr.STAGES:
            return self._multiround_stage(stage, names, msgs)
        if stage in ("share", "masked", "unmask"):
            out = {}
            for j, c in enumerate(names):
                m = _roundtrip(msgs[c]) if j == 0 else _copy(msgs[c])
                t0 = time.perf_counter()
                reply = self._secagg[c].handle(m)
                self._timed(stage, time.perf_counter() - t0)
                out[c] = _roundtrip(reply) if j == 0 else _copy(reply)
            if stage == "unmask":
                self._secagg.clear()
            return out
        return dict(zip(names, self._map(names, msgs, train_only=False)))

    def _multiround_stage(self, stage: str, names: list[str], msgs: dict[str, dict]) -> dict[str, dict]:
        """A stage of the multi-round protocol: clients whose message opens their round train first
        (on the backend); the protocol step runs on the client's kept state in this process."""
        fit = [c for c in names if msgs[c].get("type") == "fit"]
        trained = {}
        if fit:
            views: dict[int, dict] = {}  # the training part of the message, one object per distinct model
            for c in fit:
                m = msgs[c]
                if id(m["weights"]) not in views:
                    views[id(m["weights"])] = {k: m[k] for k in ("type", "round", "weights", "config", "dp") if k in m}
            trained = dict(zip(fit, self._map(fit, {c: views[id(msgs[c]["weights"])] for c in fit}, train_only=True)))
        out = {}
        for j, c in enumerate(names):
            m = _roundtrip(msgs[c]) if j == 0 else _copy_shallow(msgs[c])
            state = self._multiround.get(c)
            if state is None:
                state = self._multiround[c] = mr.MultiRoundSecAggClient(c)
            t0 = time.perf_counter()
            reply = state.handle(m, FedClient.secure_vector(trained[c]) if c in trained else None)
            self._timed(stage, time.perf_counter() - t0)
            out[c] = _roundtrip(reply) if j == 0 else _copy_shallow(reply)
        return out

    def close(self) -> None:
        self._secagg.clear()
        self._multiround.clear()
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None


def _start_ray(workers: int):
    try:
        import ray
    except ImportError as e:
        raise ConfigError("the ray backend needs Ray: pip install 'atoll[ray]'") from e
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):  # join an existing cluster (its size is the cluster's, not ours)
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True)
    return ray, ray.remote(_stateless)


def _ray_parallelism(ray, workers: int) -> int:
    """Tasks to keep in flight: the cluster's CPUs when Ray runs on more than this machine."""
    try:
        return max(workers, int(ray.cluster_resources().get("CPU", workers)))
    except Exception:  # noqa: BLE001 - an old or remote Ray without the call: keep the local figure
        return workers
