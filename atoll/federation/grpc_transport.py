"""gRPC transport with mutual TLS: one server per party, streamed chunks, retries.

Each party runs one gRPC server (service ``atoll.Federation``) and dials its
peers. Methods carry raw bytes (no protobuf schema, no pickle):

* ``Push`` (client stream): a header — the wire-encoded dict ``{id, sender,
  receiver, address, size}`` — then the payload in chunks of at most
  ``CHUNK`` bytes, well under gRPC's default 4 MiB message limit, so a 200 MB
  array passes. The server checks the size limit before allocating, checks
  that the sender named in the header is the party named by the client's TLS
  certificate, and delivers into the mailbox once per message id (a retried
  push is acknowledged but not delivered again).
* ``Ping``: liveness, so a receive waiting on a dead peer fails as
  "unreachable" within seconds instead of waiting for its timeout.
* ``Abort``: a peer tells us it failed, with its reason.

Without TLS (``tls=None``) the sender's word is trusted; use that only on a
private loopback for development.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent import futures
from typing import Iterator, Mapping

import grpc

from atoll import wire
from atoll.errors import AuthError, FederationError, UnknownParty, WireError
from atoll.federation.certs import TlsConfig
from atoll.federation.transport import Mailbox, Payload, Transport, payload_size

log = logging.getLogger(__name__)

SERVICE = "atoll.Federation"
CHUNK = (4 << 20) - (64 << 10)  # just under gRPC's default 4 MiB message limit
_HEADER_MAX = 64 << 10
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
              grpc.StatusCode.UNKNOWN}
_OPTIONS = [("grpc.max_send_message_length", CHUNK + _HEADER_MAX),
            ("grpc.max_receive_message_length", CHUNK + _HEADER_MAX),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000)]


def _chunks(parts: Payload) -> Iterator[bytes]:
    """Cut a sequence of buffers into messages of exactly CHUNK bytes (the last may be shorter)."""
    pending = bytearray()
    for part in parts:
        mv = memoryview(part).cast("B")
        i, n = 0, len(mv)
        while i < n:
            if not pending and n - i >= CHUNK:
                yield bytes(mv[i:i + CHUNK])
                i += CHUNK
                continue
            take = min(CHUNK - len(pending), n - i)
            pending += mv[i:i + take]
            i += take
            if len(pending) == CHUNK:
                yield bytes(pending)
                pending = bytearray()
    if pending:
        yield bytes(pending)


class GrpcTransport(Transport):
    """One party's gRPC endpoint.

    ``addresses`` maps every party of the job (this one included) to
    ``host:port``. This party's server listens on ``listen`` (default: its own
    address's port on all interfaces of that host).
    """

    def __init__(self, party: str, addresses: Mapping[str, str], tls: TlsConfig | None,
                 listen: str | None = None, max_bytes: int = wire.DEFAULT_MAX_BYTES,
                 connect_timeout: float = 60.0, send_timeout: float = 600.0,
                 startup_grace: float = 30.0, max_workers: int = 16):
        if party not in addresses:
            raise UnknownParty(f"party {party!r} has no address in {sorted(addresses)}")
        if tls is not None and tls.party != party:
            raise AuthError(f"TLS material is for {tls.party!r}, not {party!r}")
        self.party = party
        self.addresses = dict(addresses)
        self.tls = tls
        self.max_bytes = max_bytes
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.startup_grace = startup_grace
        self.mailbox = Mailbox(party)
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._seen_alive: set[str] = set()
        self._ping_failures: dict[str, int] = {}
        self._started = time.monotonic()
        self._closed = False

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                              thread_name_prefix=f"atoll-{party}"),
                                   options=_OPTIONS)
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Push": grpc.stream_unary_rpc_method_handler(self._on_push),
            "Ping": grpc.unary_unary_rpc_method_handler(self._on_ping),
            "Abort": grpc.unary_unary_rpc_method_handler(self._on_abort),
        })
        self._server.add_generic_rpc_handlers((handler,))
        bind = listen or "[::]:" + self.addresses[party].rsplit(":", 1)[1]
        if tls is None:
            port = self._server.add_insecure_port(bind)
        else:
            creds = grpc.ssl_server_credentials([(tls.key, tls.cert)], root_certificates=tls.ca_cert,
                                                require_client_auth=True)
            port = self._server.add_secure_port(bind, creds)
        if port == 0:
            raise FederationError(f"party {party!r} could not listen on {bind}: is the port in use?")
        self.port = port
        self._server.start()

    # ------------------------------------------------------------------ server side
    def _peer_identity(self, context: grpc.ServicerContext) -> str | None:
        if self.tls is None:
            return None
        auth = context.auth_context()
        names = auth.get("x509_common_name") or []
        return names[0].decode() if names else ""

    def _check_sender(self, claimed: str, context: grpc.ServicerContext) -> None:
        who = self._peer_identity(context)
        if who is not None and who != claimed:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"certificate names {who!r}; it may not send as {claimed!r}")
        if claimed not in self.addresses:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{claimed!r} is not a party of this job")

    def _on_push(self, chunks: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        try:
            header = wire.loads(next(chunks), max_bytes=_HEADER_MAX)
            msg_id, sender, receiver, address, size = (header["id"], header["sender"],
                                                      header["receiver"], header["address"],
                                                      header["size"])
            if not all(isinstance(v, str) for v in (msg_id, sender, receiver, address)) \
                    or not isinstance(size, int) or size < 0:
                raise WireError("bad header field types")
        except (StopIteration, WireError, KeyError, TypeError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed push header: {e}")
        self._check_sender(sender, context)
        if receiver != self.party:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"message for {receiver!r} reached {self.party!r}")
        if size > self.max_bytes:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"message of {size} bytes exceeds {self.party!r}'s limit of "
                          f"{self.max_bytes} bytes")
        buf = bytearray(size)
        pos = 0
        for chunk in chunks:
            n = len(chunk)
            if pos + n > size:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "payload longer than its header says")
            buf[pos:pos + n] = chunk
            pos += n
        if pos != size:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"payload truncated: {pos} of {size} bytes arrived")
        self.mailbox.deliver(sender, address, buf, msg_id)
        return b""

    def _on_ping(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return self.party.encode()

    def _on_abort(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            body = wire.loads(request, max_bytes=_HEADER_MAX)
            sender, reason = str(body["sender"]), str(body["reason"])
        except (WireError, KeyError, TypeError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed abort: {e}")
        self._check_sender(sender, context)
        self.mailbox.mark_failed(sender, reason)
        return b""

    # ------------------------------------------------------------------ client side
    def _channel(self, peer: str) -> grpc.Channel:
        with self._lock:
            ch = self._channels.get(peer)
            if ch is None:
                if peer not in self.addresses:
                    raise UnknownParty(f"{self.party!r} has no address for party {peer!r}")
                target = self.addresses[peer]
                if self.tls is None:
                    ch = grpc.insecure_channel(target, options=_OPTIONS)
                else:
                    creds = grpc.ssl_channel_credentials(self.tls.ca_cert, self.tls.key, self.tls.cert)
                    # the server must prove it is `peer`, whatever host name we dialled
                    ch = grpc.secure_channel(target, creds, options=_OPTIONS + [
                        ("grpc.ssl_target_name_override", peer)])
                self._channels[peer] = ch
            return ch

    def send(self, receiver: str, address: str, payload: Payload) -> None:
        if receiver == self.party:
            raise FederationError(f"party {self.party!r} tried to send {address!r} to itself")
        self.push(receiver, address, payload, uuid.uuid4().hex)

    def push(self, receiver: str, address: str, payload: Payload, msg_id: str) -> None:
        """Send with an explicit message id; safe to call again with the same id."""
        size = payload_size(payload)
        if size > self.max_bytes:
            raise WireError(f"message of {size} bytes exceeds the limit of {self.max_bytes} bytes")
        header = wire.dumps({"id": msg_id, "sender": self.party, "receiver": receiver,
                             "address": address, "size": size})
        parts = [payload] if isinstance(payload, bytes) else payload

        def requests() -> Iterator[bytes]:
            yield header
            yield from _chunks(parts)

        call = self._channel(receiver).stream_unary(f"/{SERVICE}/Push")
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.05
        while True:
            try:
                call(requests(), timeout=self.send_timeout, wait_for_ready=False)
                self._seen_alive.add(receiver)
                return
            except grpc.RpcError as e:
                code, detail = e.code(), e.details() or ""
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    raise AuthError(f"party {receiver!r} refused {self.party!r}: {detail}") from None
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    raise WireError(f"party {receiver!r} refused the message: {detail}") from None
                if code not in _RETRYABLE or time.monotonic() + delay > deadline:
                    raise self._unreachable(receiver, code, detail) from None
                log.debug("push to %s failed (%s), retrying in %.2fs", receiver, code, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _unreachable(self, peer: str, code: grpc.StatusCode, detail: str) -> FederationError:
        hint = ""
        if "handshake" in detail.lower() or "ssl" in detail.lower() or "certificate" in detail.lower():
            hint = " (TLS handshake failed: certificates from another CA, expired, or naming another party)"
        return FederationError(f"party {self.party!r} could not reach party {peer!r} at "
                               f"{self.addresses[peer]}: {code.name}: {detail}{hint}")

    def _alive(self, peer: str) -> str | None:
        """None if ``peer`` answers a ping (or may still be starting), else why it is gone."""
        try:
            self._channel(peer).unary_unary(f"/{SERVICE}/Ping")(b"", timeout=2.0)
            self._seen_alive.add(peer)
            self._ping_failures[peer] = 0
            return None
        except grpc.RpcError as e:
            n = self._ping_failures.get(peer, 0) + 1
            self._ping_failures[peer] = n
            starting = peer not in self._seen_alive and \
                time.monotonic() - self._started < self.startup_grace
            if n >= 3 and not starting:
                return (f"its node at {self.addresses[peer]} stopped answering "
                        f"({e.code().name}): the process died or the network dropped")
            return None

    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        if sender not in self.addresses:
            raise UnknownParty(f"{self.party!r} cannot receive from unknown party {sender!r}")
        return self.mailbox.take(sender, address, timeout, describe, alive=self._alive)

    def abort(self, reason: str) -> None:
        body = wire.dumps({"sender": self.party, "reason": reason})
        for peer in self.addresses:
            if peer == self.party:
                continue
            try:
                self._channel(peer).unary_unary(f"/{SERVICE}/Abort")(body, timeout=2.0)
            except grpc.RpcError:
                pass

    def close(self, grace: float = 1.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.stop(grace).wait()
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
