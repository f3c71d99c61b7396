"""Client-side load balancing and failover over the replicas of one serving party.

A :class:`ReplicaSet` holds one mutually authenticated gRPC channel per replica address of a
party (every replica presents that party's certificate; the channel checks the name, whatever
address was dialled). A call goes to the next healthy replica (round robin); if the replica is
unreachable, refuses the connection or does not answer within its share of the deadline, the
replica is marked down and the call is retried ONCE on another replica within what is left of
the deadline — scoring is a read-only lookup, so a retry cannot answer a request twice. A
background health check (``Health`` every ``health_interval`` seconds) brings replicas that
recovered back. When no replica answers in time the caller gets :class:`PeerUnavailable` or
:class:`PeerTimeout` naming the party and the bound — never a silent long hang.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import grpc

from atoll.errors import FederationError, FederationTimeout
from atoll.federation.certs import TlsConfig

log = logging.getLogger(__name__)

SERVICE = "atoll.Serving"
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.RESOURCE_EXHAUSTED}
_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1_000)]


class PeerUnavailable(FederationError):
    """No replica of a serving party could be reached."""


class PeerTimeout(FederationTimeout):
    """No replica of a serving party answered within the configured time."""


class PeerRefused(FederationError):
    """A serving party refused the request (gRPC status other than unavailable / timeout)."""


@dataclass
class Replica:
    address: str
    channel: grpc.Channel
    score: object
    health: object
    healthy: bool = True
    failures: int = 0
    served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class ReplicaSet:
    """The replicas of serving party ``party`` at ``addresses`` (see the module docstring)."""

    def __init__(self, party: str, addresses: Sequence[str], tls: TlsConfig | None,
                 health_interval: float = 1.0, health_timeout: float = 0.5):
        if not addresses:
            raise FederationError(f"serving party {party!r} has no replica address", peer=party)
        self.party = party
        self.health_interval, self.health_timeout = health_interval, health_timeout
        self.replicas = [self._replica(a, tls) for a in addresses]
        self._rr = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if health_interval > 0:
            self._thread = threading.Thread(target=self._check_loop, daemon=True,
                                            name=f"atoll-serving-health-{party}")
            self._thread.start()

    def _replica(self, address: str, tls: TlsConfig | None) -> Replica:
        if tls is None:
            ch = grpc.insecure_channel(address, options=_OPTIONS)
        else:
            creds = grpc.ssl_channel_credentials(tls.ca_cert, tls.key, tls.cert)
            ch = grpc.secure_channel(address, creds, options=_OPTIONS + [("grpc.ssl_target_name_override",
                                                                          self.party)])
        return Replica(address, ch, ch.unary_unary(f"/{SERVICE}/Score"), ch.unary_unary(f"/{SERVICE}/Health"))

    # ------------------------------------------------------------------ calls
    def _pick(self, exclude: list[Replica]) -> Replica | None:
        live = [r for r in self.replicas if r.healthy and r not in exclude]
        pool = live or [r for r in self.replicas if r not in exclude]  # all down: try one anyway
        if not pool:
            return None
        return pool[next(self._rr) % len(pool)]

    def call(self, payload: bytes, timeout: float) -> bytes:
        """``Score`` at one replica, failing over once (see the module docstring)."""
        deadline = time.monotonic() + timeout
        tried: list[Replica] = []
        last: grpc.RpcError | None = None
        for attempt in range(2):
            r = self._pick(tried)
            left = deadline - time.monotonic()
            if r is None or left <= 0:
                break
            # the first try leaves time for the retry when another replica is there to take it
            budget = left / 2 if attempt == 0 and len(self.replicas) > 1 else left
            try:
                out = r.score(payload, timeout=budget, wait_for_ready=False)
            except grpc.RpcError as e:
                code = e.code()
                if code not in _RETRYABLE:
                    raise PeerRefused(f"{self.party} refused the request ({code.name})", peer=self.party) from None
                self._down(r, code.name)
                tried.append(r)
                last = e
                continue
            with r.lock:
                r.served += 1
                r.failures = 0
            return out
        if last is not None and last.code() == grpc.StatusCode.DEADLINE_EXCEEDED or time.monotonic() >= deadline:
            raise PeerTimeout(f"no replica of {self.party} answered within {timeout:g} s "
                              f"({len(tried)} tried)", peer=self.party)
        raise PeerUnavailable(f"no replica of {self.party} is reachable ({len(tried)} of "
                              f"{len(self.replicas)} tried)", peer=self.party)

    def health(self, replica: Replica) -> bytes | None:
        try:
            return replica.health(b"", timeout=self.health_timeout)
        except grpc.RpcError:
            return None

    def _down(self, r: Replica, why: str) -> None:
        with r.lock:
            r.failures += 1
            if r.healthy:
                log.warning("serving replica %s of %s is down (%s)", r.address, self.party, why)
            r.healthy = False

    def _check_loop(self) -> None:
        while not self._stop.wait(self.health_interval):
            for r in self.replicas:
                ok = self.health(r) is not None
                with r.lock:
                    if ok and not r.healthy:
                        log.info("serving replica %s of %s is back", r.address, self.party)
                    r.healthy = ok

    def status(self) -> list[dict]:
        return [{"address": r.address, "healthy": r.healthy, "served": r.served} for r in self.replicas]

    def close(self) -> None:
        self._stop.set()
        for r in self.replicas:
            r.channel.close()
