"""``Context``: how one party's role code talks to the other parties of a job.

A protocol role never sees sockets or threads. It gets a ``Context`` and calls

    ctx.send("host", "residual", enc_d)          # to a party, or to every party of a role
    d = ctx.recv("guest", "residual")            # from one party (or a role with one party)
    parts = ctx.gather("host", "wx")             # {"host_0": ..., "host_1": ...}
    with ctx.scope("epoch", 3): ...              # messages inside are addressed .../epoch=3/...

Every message is addressed by (job id, task, scope path, key, sender, receiver),
so two jobs — or two epochs — between the same parties never mix. Values go
through the safe wire codec (:mod:`atoll.wire`) on every transport, the
in-process one included, so a protocol that passes its tests in one process
sends exactly the same bytes over gRPC.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterable, Iterator, Mapping, Sequence

from atoll import wire
from atoll.crypto import he as _he  # noqa: F401  (registers the HE wire types before anything is decoded)
from atoll.errors import FederationError, UnknownParty
from atoll.federation.transport import Transport

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0


class Context:
    """One party's view of a running job.

    ``parties`` maps each party name to its role (``{"guest": "guest",
    "host_0": "host", "host_1": "host", "arbiter": "arbiter"}``). ``transport`` is the
    job's transport (``endpoint.open_job(job_id, parties)``), whose job id the context
    takes; ``job_id`` names the job on a job-less transport (default ``"job"``).
    """

    def __init__(self, party: str, parties: Mapping[str, str], transport: Transport,
                 job_id: str | None = None, task: str = "main", timeout: float = DEFAULT_TIMEOUT,
                 max_bytes: int = wire.DEFAULT_MAX_BYTES):
        if party not in parties:
            raise UnknownParty(f"party {party!r} is not in this job's parties {sorted(parties)}")
        bound = getattr(transport, "job_id", None)  # a job's transport (endpoint.open_job) knows its job
        if job_id is not None and bound is not None and job_id != bound:
            raise FederationError(f"this transport is job {bound!r}'s; it cannot carry job {job_id!r}")
        job_id = job_id or bound or "job"
        self.party = party
        self.parties = dict(parties)
        self.role = self.parties[party]
        self.transport = transport
        self.job_id = job_id
        self.task = task
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._scope: list[str] = []

    # ------------------------------------------------------------------ naming
    def parties_of(self, role: str) -> list[str]:
        """Parties playing ``role``, sorted (``host_0`` before ``host_1``)."""
        return sorted(p for p, r in self.parties.items() if r == role)

    @property
    def roles(self) -> list[str]:
        return sorted(set(self.parties.values()))

    def resolve(self, names: str | Iterable[str]) -> list[str]:
        """Party names for a party or role name (or several), self excluded."""
        if isinstance(names, str):
            names = [names]
        out: list[str] = []
        for name in names:
            if name in self.parties:
                found = [name]
            else:
                found = self.parties_of(name)
                if not found:
                    raise UnknownParty(
                        f"{name!r} is neither a party nor a role of this job "
                        f"(parties: {sorted(self.parties)}, roles: {self.roles})")
            out += [p for p in found if p != self.party and p not in out]
        return out

    @property
    def scope_path(self) -> str:
        return "/".join(self._scope)

    def _address(self, key: str) -> str:
        if not key or "/" in key:
            raise FederationError(f"message key {key!r} must be non-empty and contain no '/'")
        return "/".join([self.job_id, self.task, *self._scope, key])

    def _describe(self, key: str) -> str:
        where = ", ".join(self._scope)
        return f"{key!r} ({where})" if where else repr(key)

    # ------------------------------------------------------------------ scoping
    @contextlib.contextmanager
    def scope(self, name: str, value: Any = None) -> Iterator["Context"]:
        """Address every message inside the block under ``name`` (``=value``)."""
        part = str(name) if value is None else f"{name}={value}"
        if "/" in part:
            raise FederationError(f"scope {part!r} must not contain '/'")
        self._scope.append(part)
        try:
            yield self
        finally:
            self._scope.pop()

    def for_task(self, task: str) -> "Context":
        """A context on the same transport for another task (component) of the job."""
        return Context(self.party, self.parties, self.transport, self.job_id, task,
                       self.timeout, self.max_bytes)

    # ------------------------------------------------------------------ messaging
    def send(self, to: str | Sequence[str], key: str, value: Any) -> None:
        """Send ``value`` to a party, to every party of a role, or to several."""
        receivers = self.resolve(to)
        if not receivers:
            raise UnknownParty(f"send {key!r}: {to!r} names no party other than {self.party!r}")
        payload = wire.dumps_parts(value)
        address = self._address(key)
        for receiver in receivers:
            self.transport.send(receiver, address, payload)

    def broadcast(self, to_roles: str | Sequence[str], key: str, value: Any) -> None:
        """Send one value to every party of the given roles (encoded once)."""
        self.send(to_roles, key, value)

    def recv(self, frm: str, key: str, timeout: float | None = None) -> Any:
        """Receive ``key`` from one party (or from a role that has exactly one party)."""
        senders = self.resolve(frm)
        if len(senders) != 1:
            raise UnknownParty(f"recv {key!r} from {frm!r}: that names {len(senders)} parties "
                               f"{senders}; use gather() for several")
        return self._recv_one(senders[0], key, timeout)

    def gather(self, frm_roles: str | Sequence[str], key: str,
               timeout: float | None = None) -> dict[str, Any]:
        """Receive ``key`` from every party of the given roles: ``{party: value}``."""
        return {p: self._recv_one(p, key, timeout) for p in self.resolve(frm_roles)}

    def _recv_one(self, sender: str, key: str, timeout: float | None) -> Any:
        t = self.timeout if timeout is None else timeout
        payload = self.transport.recv(sender, self._address(key), t, self._describe(key))
        return wire.loads(payload, max_bytes=self.max_bytes)
