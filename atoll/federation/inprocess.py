"""In-process federation: every party is a thread of one process (tests, simulation).

An :class:`InProcessHub` is the switchboard; each party has one
:class:`InProcessEndpoint` on it (``hub.endpoint("guest")``) that serves many jobs, as a
gRPC endpoint does: ``hub.endpoint(p).open_job(job_id, parties)`` gives the job's
transport. Payloads are the same wire bytes as over gRPC. A ``recorder`` callback on
the hub sees every message ``(sender, receiver, address, payload)`` — the basis of the
wire-audit tests.

``hub.transport(party)`` is the older, job-less form: a transport that serves whatever
job an address names, opening it on first use for all the hub's parties. Its ``abort``
marks the party failed in every job it serves, and in the ones it serves later.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Mapping

from atoll.errors import FederationError, UnknownParty
from atoll.federation.transport import (Endpoint, JobTable, JobTransport, OpenJob, Payload, Transport,
                                        as_bytes, job_of, party_names)

Recorder = Callable[[str, str, str, bytes], None]


class InProcessHub:
    """The shared switchboard of one in-process federation (one endpoint per party)."""

    def __init__(self, parties: Iterable[str], recorder: Recorder | None = None,
                 open_timeout: float = 60.0):
        self.parties = list(parties)
        self.recorder = recorder
        #: how long a message waits for its receiver to open the job before the send fails
        self.open_timeout = open_timeout
        self._endpoints = {p: InProcessEndpoint(self, p) for p in self.parties}
        self._lock = threading.Lock()
        self._legacy_failed: dict[str, str] = {}
        self._legacy_jobs: set[tuple[str, str]] = set()

    def endpoint(self, party: str) -> "InProcessEndpoint":
        if party not in self._endpoints:
            raise UnknownParty(f"party {party!r} is not on this hub {sorted(self._endpoints)}")
        return self._endpoints[party]

    def transport(self, party: str) -> "InProcessTransport":
        """A job-less transport for ``party`` (see the module docstring)."""
        self.endpoint(party)
        return InProcessTransport(self, party)

    def _record(self, sender: str, receiver: str, address: str, payload: bytes) -> None:
        if self.recorder is not None:
            with self._lock:
                self.recorder(sender, receiver, address, payload)

    # ------------------------------------------------------------------ the job-less form
    def _legacy_job(self, party: str, job_id: str) -> OpenJob | None:
        ep = self.endpoint(party)
        with self._lock:
            job = ep.jobs.get(job_id)
            if job is None and ep.jobs.state(job_id) != "closed":
                job = ep.jobs.open(job_id, self.parties)
                self._legacy_jobs.add((party, job_id))
                for failed, reason in self._legacy_failed.items():
                    if failed != party:
                        job.mailbox.mark_failed(failed, reason)
            return job

    def _legacy_abort(self, party: str, reason: str) -> None:
        with self._lock:
            self._legacy_failed.setdefault(party, reason)
            jobs = [(p, j) for p, j in self._legacy_jobs if p != party]
        for p, job_id in jobs:
            job = self.endpoint(p).jobs.get(job_id)
            if job is not None:
                job.mailbox.mark_failed(party, reason)


class InProcessEndpoint(Endpoint):
    """One party's endpoint on an :class:`InProcessHub`."""

    def __init__(self, hub: InProcessHub, party: str):
        self.hub = hub
        self.party = party
        self.jobs = JobTable(party)

    def open_job(self, job_id: str, parties: Mapping[str, str] | Iterable[str]) -> "InProcessJobTransport":
        names = party_names(parties)
        unknown = sorted(names - set(self.hub.parties))
        if unknown:
            raise UnknownParty(f"job {job_id!r} names parties {unknown} that are not on this hub")
        return InProcessJobTransport(self, self.jobs.open(job_id, names))

    def _deliver(self, job_id: str, sender: str, address: str, payload: bytes) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            if self.jobs.state(job_id) == "closed":
                return  # its receivers are gone: dropped, never buffered
            job = self.jobs.wait_open(job_id, self.hub.open_timeout)
            if job is None:
                if self.jobs.state(job_id) == "closed":
                    return
                raise FederationError(f"party {self.party!r} did not open job {job_id!r} within "
                                      f"{self.hub.open_timeout:g} s; has it joined the job?")
        if sender not in job.parties:
            raise UnknownParty(f"{sender!r} is not a party of job {job_id!r} at {self.party!r}")
        job.mailbox.deliver(sender, address, payload)

    def _mark_failed(self, job_id: str, party: str, reason: str) -> None:
        job = self.jobs.get(job_id)
        if job is not None and party in job.parties:
            job.mailbox.mark_failed(party, reason)


class InProcessJobTransport(JobTransport):
    """One party's transport in one job over an in-process hub."""

    endpoint: InProcessEndpoint

    def send(self, receiver: str, address: str, payload: Payload) -> None:
        self._check_send(receiver, address)
        payload = as_bytes(payload)
        self.endpoint.hub._record(self.party, receiver, address, payload)
        self.endpoint.hub.endpoint(receiver)._deliver(self.job_id, self.party, address, payload)

    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        return self._take(sender, address, timeout, describe)

    def abort(self, reason: str) -> None:
        for p in self.parties:
            if p != self.party:
                self.endpoint.hub.endpoint(p)._mark_failed(self.job_id, self.party, reason)


class InProcessTransport(Transport):
    """The job-less transport of one party (``hub.transport(party)``; see the module docstring)."""

    def __init__(self, hub: InProcessHub, party: str):
        self.hub = hub
        self.party = party

    def send(self, receiver: str, address: str, payload: Payload) -> None:
        if receiver not in self.hub.parties:
            raise UnknownParty(f"{self.party!r} cannot send to unknown party {receiver!r}")
        payload = as_bytes(payload)
        self.hub._record(self.party, receiver, address, payload)
        job = self.hub._legacy_job(receiver, job_of(address))
        if job is not None:
            job.mailbox.deliver(self.party, address, payload)

    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        if sender not in self.hub.parties:
            raise UnknownParty(f"{self.party!r} cannot receive from unknown party {sender!r}")
        job = self.hub._legacy_job(self.party, job_of(address))
        if job is None:
            raise FederationError(f"job {job_of(address)!r} was closed at {self.party!r}")
        return job.mailbox.take(sender, address, timeout, describe)

    def abort(self, reason: str) -> None:
        self.hub._legacy_abort(self.party, reason)
