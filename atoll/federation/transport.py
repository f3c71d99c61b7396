"""Transports move encoded messages between parties; ``Mailbox`` is their shared inbox.

A transport only moves bytes. Addressing, encoding and scoping live in
:class:`atoll.federation.Context`; waiting, de-duplication and failure
reporting live in :class:`Mailbox`, which both the in-process and the gRPC
transports deliver into.
"""

from __future__ import annotations

import abc
import collections
import threading
import time
from typing import Callable, Sequence, Union

from atoll.errors import FederationTimeout, PeerFailed

#: an encoded message: bytes, or buffers to be concatenated (see ``wire.dumps_parts``)
Payload = Union[bytes, Sequence[Union[bytes, memoryview]]]


def as_bytes(payload: Payload) -> bytes:
    return payload if isinstance(payload, bytes) else b"".join(payload)


def payload_size(payload: Payload) -> int:
    return len(payload) if isinstance(payload, bytes) else sum(memoryview(p).nbytes for p in payload)

#: how often a waiting receive asks the transport whether the sender is alive
LIVENESS_INTERVAL = 1.0


class Transport(abc.ABC):
    """Moves payloads for one party."""

    party: str

    @abc.abstractmethod
    def send(self, receiver: str, address: str, payload: Payload) -> None:
        """Deliver ``payload`` to ``receiver``'s mailbox under ``address`` (exactly once)."""

    @abc.abstractmethod
    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        """Wait for the payload ``sender`` sent under ``address``."""

    def abort(self, reason: str) -> None:
        """Tell every peer that this party has failed (best effort)."""

    def close(self) -> None:
        """Release sockets and threads."""

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Mailbox:
    """Messages received by one party, waiting to be taken, keyed by (sender, address).

    Delivery is idempotent per message id, so a retried send is seen once. A
    peer marked failed wakes every receive waiting on it with ``PeerFailed``.
    """

    def __init__(self, owner: str, dedup_window: int = 100_000):
        self.owner = owner
        self._cond = threading.Condition()
        self._queues: dict[tuple[str, str], collections.deque] = collections.defaultdict(collections.deque)
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._dedup_window = dedup_window
        self._failed: dict[str, str] = {}

    def deliver(self, sender: str, address: str, payload: bytes, msg_id: str | None = None) -> bool:
        """Queue a message; return False if ``msg_id`` was already delivered."""
        with self._cond:
            if msg_id is not None:
                if msg_id in self._seen:
                    return False
                self._seen[msg_id] = None
                if len(self._seen) > self._dedup_window:
                    self._seen.popitem(last=False)
            self._queues[(sender, address)].append(payload)
            self._cond.notify_all()
            return True

    def mark_failed(self, party: str, reason: str) -> None:
        with self._cond:
            self._failed.setdefault(party, reason)
            self._cond.notify_all()

    def failure(self, party: str) -> str | None:
        with self._cond:
            return self._failed.get(party)

    def take(self, sender: str, address: str, timeout: float, describe: str,
             alive: Callable[[str], str | None] | None = None) -> bytes:
        """Wait for a message. ``alive(sender)`` returns a reason if the sender is gone."""
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + LIVENESS_INTERVAL
        key = (sender, address)
        with self._cond:
            while True:
                q = self._queues.get(key)
                if q:
                    payload = q.popleft()
                    if not q:
                        del self._queues[key]
                    return payload
                if sender in self._failed:
                    raise PeerFailed(f"party {sender!r} failed before sending {describe} "
                                     f"to {self.owner!r}: {self._failed[sender]}")
                now = time.monotonic()
                if now >= deadline:
                    raise FederationTimeout(
                        f"party {sender!r} did not send {describe} to {self.owner!r} "
                        f"within {timeout:g} s")
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
