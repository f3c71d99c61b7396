"""In-process transport: every party is a thread of one process (tests, simulation).

Payloads are the same wire bytes as over gRPC. A ``recorder`` callback on the
hub sees every message ``(sender, receiver, address, payload)`` — the basis of
the wire-audit tests.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from atoll.errors import UnknownParty
from atoll.federation.transport import Mailbox, Payload, Transport, as_bytes

Recorder = Callable[[str, str, str, bytes], None]


class InProcessHub:
    """The shared switchboard of one in-process federation."""

    def __init__(self, parties: Iterable[str], recorder: Recorder | None = None):
        self.mailboxes = {p: Mailbox(p) for p in parties}
        self.recorder = recorder
        self._lock = threading.Lock()

    def transport(self, party: str) -> "InProcessTransport":
        if party not in self.mailboxes:
            raise UnknownParty(f"party {party!r} is not on this hub {sorted(self.mailboxes)}")
        return InProcessTransport(self, party)


class InProcessTransport(Transport):
    def __init__(self, hub: InProcessHub, party: str):
        self.hub = hub
        self.party = party

    def send(self, receiver: str, address: str, payload: Payload) -> None:
        box = self.hub.mailboxes.get(receiver)
        if box is None:
            raise UnknownParty(f"{self.party!r} cannot send to unknown party {receiver!r}")
        payload = as_bytes(payload)
        if self.hub.recorder is not None:
            with self.hub._lock:
                self.hub.recorder(self.party, receiver, address, payload)
        box.deliver(self.party, address, payload)

    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        if sender not in self.hub.mailboxes:
            raise UnknownParty(f"{self.party!r} cannot receive from unknown party {sender!r}")
        return self.hub.mailboxes[self.party].take(sender, address, timeout, describe)

    def abort(self, reason: str) -> None:
        for name, box in self.hub.mailboxes.items():
            if name != self.party:
                box.mark_failed(self.party, reason)
