"""Endpoints, job transports and mailboxes: how encoded messages move, scoped by job.

One party (one organisation's node, or one party process of ``atoll run``) has ONE
:class:`Endpoint`: it owns the sockets (a gRPC server, or a slot on an in-process hub)
and serves many jobs at once. ``endpoint.open_job(job_id, parties)`` returns the
:class:`Transport` of that job — what a :class:`~atoll.federation.Context` uses::

    endpoint = GrpcEndpoint("bank", {"bank": "10.0.0.1:7001", "shop": "10.0.0.2:7001"}, tls)
    t = endpoint.open_job("job-42", {"bank": "guest", "shop": "host"})
    ctx = Context("bank", {"bank": "guest", "shop": "host"}, t)
    ...
    endpoint.close_job("job-42")          # frees its queued messages, failure marks, dedup ids

Everything that can go wrong is kept per job: a message names its job, and is only
accepted for a job this endpoint has open, from a party of that job; a party that fails
(``abort``) or stops answering is marked failed in that job only, so a failure in job J
never touches job K between the same parties. Messages for a job that was closed are
dropped (the job's receivers are gone); messages for a job this endpoint never opened
are refused, never buffered — the sender retries for a while, because its peer may
simply not have opened the job yet.

Addressing, encoding and scoping live in :class:`~atoll.federation.Context`; waiting,
de-duplication and failure marks live in :class:`Mailbox` (one per open job).
"""

from __future__ import annotations

import abc
import collections
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence, Union

from atoll.errors import FederationError, FederationTimeout, PeerFailed, UnknownParty


class MailboxFull(FederationError):
    """A peer sent more than the receiver holds for it untaken (bytes or messages); it may
    send again once the receiver has taken some."""

#: an encoded message: bytes, or buffers to be concatenated (see ``wire.dumps_parts``)
Payload = Union[bytes, Sequence[Union[bytes, memoryview]]]


def as_bytes(payload: Payload) -> bytes:
    return payload if isinstance(payload, bytes) else b"".join(payload)


def payload_size(payload: Payload) -> int:
    return len(payload) if isinstance(payload, bytes) else sum(memoryview(p).nbytes for p in payload)


#: how often a waiting receive asks the transport whether the sender is alive
LIVENESS_INTERVAL = 1.0
#: job ids: what a job file's name and a uuid make (no '/', which separates address parts)
JOB_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
#: how long a closed job's id is remembered (so late messages for it are dropped, not refused)
CLOSED_MEMORY = 10_000
#: what one job's mailbox holds at most that nobody has taken yet: bytes from one peer, bytes
#: in all, and messages from one peer; and how long a message waits for a reader before it is
#: dropped (an address nobody reads must not hold memory until the job ends)
MAX_PEER_BYTES = 2 << 30
MAX_JOB_BYTES = 4 << 30
MAX_PEER_MESSAGES = 100_000
EXPIRE_AFTER = 6 * 3600.0
_REASON = re.compile(r"[^A-Za-z0-9_ .,:;'()\-=/]")


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        raise FederationError(f"job id {job_id!r} must be 1-128 letters, digits or '_.:-' (no '/')")
    return job_id


def job_of(address: str) -> str:
    """The job id an address (``JOB/TASK/SCOPE.../KEY``, as Context builds it) belongs to."""
    return address.partition("/")[0]


def failure_summary(error: BaseException) -> str:
    """What a party tells its peers about its own failure: the error's category and, where
    the error names one, the step — never the error's text (it may hold ids, values, paths).
    The full text stays in the party's own log."""
    step = getattr(error, "step", None)
    root = error.__cause__ if step is not None and error.__cause__ is not None else error
    category = type(root).__name__
    peer = getattr(root, "peer", None)
    if isinstance(peer, str) and peer:
        category = f"{category} (peer {clean_reason(peer, 64)!r})"
    return f"{category} at step {step!r}" if isinstance(step, str) else category


def clean_reason(reason: object, limit: int = 200) -> str:
    """A peer's failure reason as this party will show it: short, printable, no markup."""
    return _REASON.sub("?", str(reason))[:limit] or "no reason given"


class Transport(abc.ABC):
    """Moves payloads for one party in one job (``job_id``; None for a legacy transport
    that serves whatever job an address names)."""

    party: str
    job_id: str | None = None

    @abc.abstractmethod
    def send(self, receiver: str, address: str, payload: Payload) -> None:
        """Deliver ``payload`` to ``receiver``'s mailbox under ``address`` (exactly once)."""

    @abc.abstractmethod
    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        """Wait for the payload ``sender`` sent under ``address``."""

    def abort(self, reason: str) -> None:
        """Tell the job's peers that this party has failed (best effort). ``reason`` is shown
        to them: pass :func:`failure_summary` of the error, not its text."""

    def close(self) -> None:
        """Release what this transport holds (a job transport: the job, at this party)."""

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Mailbox:
    """Messages one party received in one job, waiting to be taken, keyed by (sender, address).

    Delivery is idempotent per message id, so a retried send is seen once. A peer marked
    failed wakes every receive waiting on it with ``PeerFailed``; closing the mailbox wakes
    every receive with ``FederationError``. Marks, messages and message ids live and die
    with the mailbox, i.e. with the job.

    What waits untaken is bounded: ``max_peer_bytes`` and ``max_peer_messages`` per sender,
    ``max_job_bytes`` in all (a delivery past them raises :class:`MailboxFull`; a transport
    :meth:`reserve` reserves a message's declared size before receiving it), and a queue nobody has
    taken from for ``expire_after`` seconds is dropped.
    """

    def __init__(self, owner: str, job_id: str = "job", parties: Iterable[str] | None = None,
                 dedup_window: int = 100_000, max_peer_bytes: int = MAX_PEER_BYTES,
                 max_job_bytes: int = MAX_JOB_BYTES, max_peer_messages: int = MAX_PEER_MESSAGES,
                 expire_after: float = EXPIRE_AFTER, clock: Callable[[], float] = time.monotonic):
        self.owner = owner
        self.job_id = job_id
        self.parties = None if parties is None else frozenset(parties)
        self._cond = threading.Condition()
        self._queues: dict[tuple[str, str], collections.deque] = collections.defaultdict(collections.deque)
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._dedup_window = dedup_window
        self._failed: dict[str, str] = {}
        self._closed = False
        self._bytes = 0
        self._by_sender: collections.Counter[str] = collections.Counter()
        self._count: collections.Counter[str] = collections.Counter()
        self._reserved: collections.Counter[str] = collections.Counter()
        self._stamp: dict[tuple[str, str], float] = {}
        self.max_peer_bytes, self.max_job_bytes = max_peer_bytes, max_job_bytes
        self.max_peer_messages, self.expire_after = max_peer_messages, expire_after
        self._clock = clock
        self._last_purge = clock()

    def _admit(self, sender: str, size: int) -> None:
        """Raise MailboxFull if ``size`` more bytes from ``sender`` would pass a bound (lock held)."""
        self._purge()
        mine = self._by_sender[sender] + self._reserved[sender] + size
        if mine > self.max_peer_bytes:
            raise MailboxFull(f"{self.owner!r} holds {self.max_peer_bytes} bytes at most from {sender!r} "
                              f"in job {self.job_id!r} that it has not taken yet", peer=sender)
        if self._bytes + sum(self._reserved.values()) + size > self.max_job_bytes:
            raise MailboxFull(f"{self.owner!r} holds {self.max_job_bytes} bytes at most in job "
                              f"{self.job_id!r} that it has not taken yet", peer=sender)
        if self._count[sender] >= self.max_peer_messages:
            raise MailboxFull(f"{self.owner!r} holds {self.max_peer_messages} messages at most from "
                              f"{sender!r} in job {self.job_id!r} that it has not taken yet", peer=sender)

    def reserve(self, sender: str, size: int) -> None:
        """Count ``size`` bytes about to arrive from ``sender`` against its bounds (MailboxFull if
        they do not fit); :meth:`deliver` with ``reserved=size`` or :meth:`release` ends it."""
        with self._cond:
            self._admit(sender, size)
            self._reserved[sender] += size

    def release(self, sender: str, size: int) -> None:
        with self._cond:
            self._reserved[sender] = max(self._reserved[sender] - size, 0)

    def _purge(self) -> None:
        """Drop queues nobody has taken from for ``expire_after`` seconds (lock held)."""
        now = self._clock()
        if now - self._last_purge < min(60.0, self.expire_after / 4):
            return
        self._last_purge = now
        for key in [k for k, t in self._stamp.items() if now - t > self.expire_after]:
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        q = self._queues.pop(key, None) or ()
        n = sum(len(p) for p in q)
        self._bytes -= n
        self._by_sender[key[0]] -= n
        self._count[key[0]] -= len(q)
        self._stamp.pop(key, None)

    def deliver(self, sender: str, address: str, payload: bytes | bytearray,
                msg_id: str | None = None, reserved: int = 0) -> bool:
        """Queue a message; return False if ``msg_id`` was already delivered (or the job closed).
        Raise :class:`MailboxFull` if it passes a bound (``reserved``: bytes reserved for it)."""
        with self._cond:
            if reserved:
                self._reserved[sender] = max(self._reserved[sender] - reserved, 0)
            if self._closed:
                return False
            if msg_id is not None and msg_id in self._seen:
                return False
            self._admit(sender, len(payload))
            if msg_id is not None:
                self._seen[msg_id] = None
                if len(self._seen) > self._dedup_window:
                    self._seen.popitem(last=False)
            key = (sender, address)
            self._queues[key].append(payload)
            self._stamp[key] = self._clock()
            self._bytes += len(payload)
            self._by_sender[sender] += len(payload)
            self._count[sender] += 1
            self._cond.notify_all()
            return True

    def pending(self, sender: str) -> int:
        """Bytes from ``sender`` waiting to be taken (a transport bounds what one peer may queue)."""
        with self._cond:
            return self._by_sender[sender]

    def forget(self, sender: str) -> None:
        """Drop what ``sender`` queued and its failure mark: it starts again (a client that
        reconnected to a dial-in server is a new session; its old messages must not be read)."""
        with self._cond:
            for key in [k for k in self._queues if k[0] == sender]:
                self._drop(key)
            self._by_sender.pop(sender, None)
            self._count.pop(sender, None)
            self._failed.pop(sender, None)
            self._cond.notify_all()

    def mark_failed(self, party: str, reason: str) -> None:
        """Record that ``party`` failed in this job; receives waiting on it raise ``PeerFailed``."""
        with self._cond:
            self._failed.setdefault(party, reason)
            self._cond.notify_all()

    def failure(self, party: str) -> str | None:
        with self._cond:
            return self._failed.get(party)

    def stats(self) -> dict[str, int]:
        """Messages and bytes waiting to be taken, failure marks and remembered message ids."""
        with self._cond:
            return {"messages": sum(len(q) for q in self._queues.values()), "bytes": self._bytes,
                    "failed": len(self._failed), "ids": len(self._seen)}

    def close(self) -> None:
        """Drop everything queued and wake every waiting receive (it raises)."""
        with self._cond:
            self._closed = True
            self._queues.clear()
            self._seen.clear()
            self._failed.clear()
            self._bytes = 0
            self._by_sender.clear()
            self._count.clear()
            self._reserved.clear()
            self._stamp.clear()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def take(self, sender: str, address: str, timeout: float, describe: str,
             alive: Callable[[str], str | None] | None = None) -> bytes:
        """Wait for a message. ``alive(sender)`` returns a reason if the sender is gone."""
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + LIVENESS_INTERVAL
        key = (sender, address)
        with self._cond:
            while True:
                if self._closed:
                    raise FederationError(f"job {self.job_id!r} was closed at {self.owner!r} while it "
                                          f"waited for {describe} from {sender!r}")
                q = self._queues.get(key)
                if q:
                    payload = q.popleft()
                    self._bytes -= len(payload)
                    self._by_sender[sender] -= len(payload)
                    self._count[sender] -= 1
                    if q:
                        self._stamp[key] = self._clock()
                    else:
                        del self._queues[key]
                        self._stamp.pop(key, None)
                    return payload
                if sender in self._failed:
                    raise PeerFailed(f"party {sender!r} failed before sending {describe} "
                                     f"to {self.owner!r}: {self._failed[sender]}", peer=sender)
                now = time.monotonic()
                if now >= deadline:
                    raise FederationTimeout(
                        f"party {sender!r} did not send {describe} to {self.owner!r} "
                        f"within {timeout:g} s", peer=sender)
                if alive is not None and now >= next_check:
                    self._cond.release()
                    try:
                        reason = alive(sender)
                    finally:
                        self._cond.acquire()
                    if reason:
                        self._failed.setdefault(sender, reason)
                        continue
                    next_check = time.monotonic() + LIVENESS_INTERVAL
                wait = deadline - now
                if alive is not None:
                    wait = min(wait, max(next_check - now, 0.01))
                self._cond.wait(wait)


@dataclass
class OpenJob:
    """One job open at one endpoint: its parties and its mailbox (plus liveness bookkeeping)."""

    job_id: str
    parties: frozenset[str]
    mailbox: Mailbox
    opened: float = field(default_factory=time.monotonic)
    seen_alive: set[str] = field(default_factory=set)
    ping_failures: dict[str, int] = field(default_factory=dict)


class JobTable:
    """The jobs one endpoint has open (job id -> :class:`OpenJob`), and the ids of closed ones.

    ``state(job_id)`` is ``"open"``, ``"closed"`` (remembered for the last
    ``CLOSED_MEMORY`` closed jobs: ids only) or ``"unknown"``.
    """

    def __init__(self, owner: str, max_jobs: int = 1000, limits: Mapping[str, float] | None = None):
        self.owner = owner
        self.max_jobs = max_jobs
        self.limits = dict(limits or {})  # Mailbox bounds (max_peer_bytes, expire_after, ...)
        self._jobs: dict[str, OpenJob] = {}
        self._closed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._cond = threading.Condition()

    def open(self, job_id: str, parties: Iterable[str]) -> OpenJob:
        check_job_id(job_id)
        parties = frozenset(parties)
        if self.owner not in parties:
            raise UnknownParty(f"party {self.owner!r} is not a party of job {job_id!r} ({sorted(parties)})")
        with self._cond:
            if job_id in self._jobs:
                raise FederationError(f"job {job_id!r} is already open at {self.owner!r}; "
                                      "close it first, or give the new job another id")
            if len(self._jobs) >= self.max_jobs:
                raise FederationError(f"{self.owner!r} already has {self.max_jobs} jobs open; "
                                      "close finished jobs (close_job) or raise max_jobs")
            self._closed.pop(job_id, None)
            job = self._jobs[job_id] = OpenJob(job_id, parties, Mailbox(self.owner, job_id, parties,
                                                                        **self.limits))
            self._cond.notify_all()
            return job

    def get(self, job_id: str) -> OpenJob | None:
        with self._cond:
            return self._jobs.get(job_id)

    def state(self, job_id: str) -> str:
        with self._cond:
            if job_id in self._jobs:
                return "open"
            return "closed" if job_id in self._closed else "unknown"

    def wait_open(self, job_id: str, timeout: float) -> OpenJob | None:
        """The job once it is open (None if closed, or not opened within ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while job_id not in self._jobs:
                left = deadline - time.monotonic()
                if job_id in self._closed or left <= 0:
                    return None
                self._cond.wait(left)
            return self._jobs[job_id]

    def close(self, job_id: str) -> bool:
        """Forget the job (its mailbox is emptied and its receivers woken); False if it was not open."""
        with self._cond:
            job = self._jobs.pop(job_id, None)
            if job is None:
                return False
            self._closed[job_id] = None
            while len(self._closed) > CLOSED_MEMORY:
                self._closed.popitem(last=False)
            self._cond.notify_all()
        job.mailbox.close()
        return True

    def open_ids(self) -> list[str]:
        with self._cond:
            return sorted(self._jobs)

    def stats(self) -> dict[str, dict[str, int]]:
        with self._cond:
            jobs = list(self._jobs.values())
        return {j.job_id: j.mailbox.stats() for j in jobs}


class Endpoint(abc.ABC):
    """One party's federation endpoint, serving many jobs at once (see the module docstring).

    Implementations: :class:`atoll.federation.grpc_transport.GrpcEndpoint` (gRPC + mutual
    TLS, one server per organisation) and :class:`atoll.federation.InProcessEndpoint`
    (threads of one process).
    """

    party: str
    jobs: JobTable

    @abc.abstractmethod
    def open_job(self, job_id: str, parties: Mapping[str, str] | Iterable[str]) -> Transport:
        """Start accepting messages of ``job_id`` from its ``parties`` (names, or names ->
        roles; this party among them); return the job's transport."""

    def close_job(self, job_id: str) -> None:
        """Free everything of the job at this party: queued messages, failure marks, message
        ids. Receives still waiting in it raise; later messages for it are dropped."""
        self.jobs.close(job_id)

    def open_jobs(self) -> list[str]:
        return self.jobs.open_ids()

    def stats(self) -> dict[str, dict[str, int]]:
        """Per open job: messages and bytes waiting, failure marks, remembered message ids."""
        return self.jobs.stats()

    def close(self) -> None:
        """Close every job and release the endpoint's sockets and threads."""
        for job_id in self.jobs.open_ids():
            self.jobs.close(job_id)

    def __enter__(self) -> "Endpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JobTransport(Transport):
    """The transport of one job at one party: what ``Endpoint.open_job`` returns."""

    def __init__(self, endpoint: Endpoint, job: OpenJob):
        self.endpoint = endpoint
        self.party = endpoint.party
        self.job_id = job.job_id
        self.parties = job.parties
        self._job = job

    def _check_send(self, receiver: str, address: str) -> None:
        if receiver not in self.parties or receiver == self.party:
            raise UnknownParty(f"{self.party!r} cannot send to {receiver!r}: not a peer in job {self.job_id!r}")
        if job_of(address) != self.job_id:
            raise FederationError(f"address {address!r} is not of job {self.job_id!r}; use a Context "
                                  "made with this job's id")

    def _take(self, sender: str, address: str, timeout: float, describe: str,
              alive: Callable[[str], str | None] | None = None) -> bytes:
        if sender not in self.parties:
            raise UnknownParty(f"{self.party!r} cannot receive from {sender!r}: not in job {self.job_id!r}")
        return self._job.mailbox.take(sender, address, timeout, describe, alive)

    def close(self) -> None:
        self.endpoint.close_job(self.job_id)


def party_names(parties: Mapping[str, str] | Iterable[str]) -> frozenset[str]:
    return frozenset(parties.keys() if isinstance(parties, Mapping) else parties)
