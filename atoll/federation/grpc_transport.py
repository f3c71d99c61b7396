"""gRPC federation with mutual TLS: one endpoint per party serving many jobs, streamed chunks, retries.

A party (an organisation's node, or one party process of ``atoll run``) runs ONE
:class:`GrpcEndpoint`: one gRPC server (service ``atoll.Federation``) listening exactly on
the address it is given, and one channel per peer. ``endpoint.open_job(job_id, parties)``
returns the job's transport (:class:`GrpcJobTransport`); many jobs with the same partners
run side by side, each with its own mailbox, failure marks and liveness.

Methods carry raw bytes (no protobuf schema, no pickle):

* ``Push`` (client stream): a header — the wire-encoded dict ``{id, job, sender,
  receiver, address, size}`` — then the payload in chunks of at most ``CHUNK`` bytes,
  well under gRPC's default 4 MiB message limit, so a 200 MB array passes. The server
  checks that the sender named in the header is the party named by the client's TLS
  certificate, that the address belongs to the header's job (``JOB/TASK/SCOPE.../KEY``),
  that the job is open here and the sender is one of its parties, and the size limit
  before anything is buffered; the payload's buffer grows as its chunks arrive (never from the
  declared size), and what a peer may have buffered untaken in a job is bounded (the mailbox's
  limits, ``mailbox_limits``; past them the push is refused with ``RESOURCE_EXHAUSTED`` and the
  sender retries until ``connect_timeout``). It delivers into the job's mailbox once per message id (a retried
  push is acknowledged but not delivered again). A push for a job this endpoint never
  opened is refused (``NOT_FOUND``; the sender retries until ``connect_timeout``, since
  its peer may not have opened the job yet) and never buffered; one for a job closed
  here is acknowledged and dropped.
* ``Ping`` ``{job}``: liveness and the job's state at the peer (``open`` / ``closed`` /
  ``unknown``), so a receive waiting on a dead peer, or on a peer that closed the job,
  fails within seconds instead of waiting for its timeout.
* ``Abort`` ``{job, sender, reason}``: a peer tells us it failed in that job; the mark
  is recorded in that job only. The reason is a category and a step, never error text.

Without TLS (``tls=None``) the sender's word is trusted; use that only on a private
loopback for development.

:class:`GrpcTransport` is the older single-federation form (one server per transport,
any job id an address names): kept for scripts written against it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent import futures
from typing import Iterable, Iterator, Mapping, Sequence

import grpc

from atoll import wire
from atoll.errors import AuthError, FederationError, PeerFailed, UnknownParty, WireError
from atoll.federation.certs import TlsConfig
from atoll.federation.transport import (Endpoint, JobTable, JobTransport, MailboxFull, OpenJob, Payload,
                                        Transport, clean_reason, job_of, party_names, payload_size)

log = logging.getLogger(__name__)

SERVICE = "atoll.Federation"
CHUNK = (4 << 20) - (64 << 10)  # just under gRPC's default 4 MiB message limit
_HEADER_MAX = 64 << 10
#: seconds a peer that had the job open may refuse connections before a send to it fails
GONE_AFTER = 10.0
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
              grpc.StatusCode.UNKNOWN}
_OPTIONS = [("grpc.max_send_message_length", CHUNK + _HEADER_MAX),
            ("grpc.max_receive_message_length", CHUNK + _HEADER_MAX),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000)]
#: a gRPC server reuses a port another socket holds (SO_REUSEPORT) unless told not to
_SERVER_OPTIONS = _OPTIONS + [("grpc.so_reuseport", 0)]


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


class GrpcEndpoint(Endpoint):
    """One party's gRPC + mutual TLS endpoint, serving many jobs (see the module docstring).

    ``addresses`` maps this party and every partner to ``host:port`` (the partners it may
    open jobs with). The server listens on ``listen``, by default exactly this party's own
    address — ``0.0.0.0:PORT`` or ``[::]:PORT`` only if you pass it.
    """

    #: the single-federation form opens a job on its first message (GrpcTransport)
    _open_on_receipt = False

    def __init__(self, party: str, addresses: Mapping[str, str], tls: TlsConfig | None,
                 listen: str | None = None, max_bytes: int = wire.DEFAULT_MAX_BYTES,
                 connect_timeout: float = 60.0, send_timeout: float = 600.0,
                 startup_grace: float = 30.0, max_workers: int = 16, max_jobs: int = 1000,
                 services: Sequence[grpc.GenericRpcHandler] = (),
                 mailbox_limits: Mapping[str, float] | None = None):
        if party not in addresses:
            raise UnknownParty(f"party {party!r} has no address in {sorted(addresses)}")
        if tls is not None and tls.party != party:
            raise AuthError(f"TLS material is for {tls.party!r}, not {party!r}")
        if tls is not None:
            tls.check_names(addresses)
        self.party = party
        self.addresses = dict(addresses)
        self.tls = tls
        self.max_bytes = max_bytes
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.startup_grace = startup_grace
        self.jobs = JobTable(party, max_jobs, mailbox_limits)
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._closed = False

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                              thread_name_prefix=f"atoll-{party}"),
                                   options=_SERVER_OPTIONS)
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Push": grpc.stream_unary_rpc_method_handler(self._on_push),
            "Ping": grpc.unary_unary_rpc_method_handler(self._on_ping),
            "Abort": grpc.unary_unary_rpc_method_handler(self._on_abort),
        })
        # other services on the same port and mTLS identity (the node's control channel)
        self._server.add_generic_rpc_handlers((handler, *services))
        self.listen = listen or self.addresses[party]
        try:
            if tls is None:
                port = self._server.add_insecure_port(self.listen)
            else:
                creds = grpc.ssl_server_credentials([(tls.key, tls.cert)], root_certificates=tls.ca_cert,
                                                    require_client_auth=True)
                port = self._server.add_secure_port(self.listen, creds)
        except RuntimeError:
            port = 0
        if port == 0:
            raise FederationError(f"party {party!r} could not listen on {self.listen}: is the port in use, "
                                  "or the address not one of this machine's?")
        self.port = port
        self._server.start()

    def add_peer(self, party: str, address: str) -> None:
        """Add (or move) a partner this endpoint may open jobs with."""
        if self.tls is not None:
            self.tls.check_names([party])
        with self._lock:
            self.addresses[party] = address
            ch = self._channels.pop(party, None)
        if ch is not None:
            ch.close()

    # ------------------------------------------------------------------ jobs
    def open_job(self, job_id: str, parties: Mapping[str, str] | Iterable[str]) -> "GrpcJobTransport":
        names = party_names(parties)
        unknown = sorted(names - set(self.addresses))
        if unknown:
            raise UnknownParty(f"job {job_id!r} names parties {unknown} that {self.party!r} has no "
                               f"address for (known: {sorted(self.addresses)})")
        return GrpcJobTransport(self, self.jobs.open(job_id, names))

    def _job_or_fail(self, job_id: str) -> OpenJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise FederationError(f"job {job_id!r} is not open at {self.party!r}")
        return job

    # ------------------------------------------------------------------ server side
    def _peer_identity(self, context: grpc.ServicerContext) -> str | None:
        if self.tls is None:
            return None
        auth = context.auth_context()
        names = auth.get("x509_common_name") or []
        cn = names[0].decode() if names else ""
        # the rule clients apply to servers (the party name among the DNS names), applied to
        # clients too: a certificate whose DNS names leave out its party, or name another
        # party of this federation, speaks for nobody
        dns = {n.decode() for n in auth.get("peer_dns") or []}
        if dns and (cn not in dns or (dns & set(self.addresses)) - {cn}):
            return ""
        return cn

    def _check_sender(self, claimed: str, context: grpc.ServicerContext) -> None:
        if claimed == self.party:  # nobody speaks to a party in its own name
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"a peer may not send as {claimed!r} to itself")
        who = self._peer_identity(context)
        if who is not None and who != claimed:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"certificate names {who!r}; it may not send as {claimed!r}")
        if claimed not in self.addresses:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{claimed!r} is not a partner of {self.party!r}")

    def _receiving_job(self, job_id: str, sender: str) -> OpenJob | None:
        """The open job a message is for; None if the job was closed here (drop the message)."""
        job = self.jobs.get(job_id)
        if job is None and self._open_on_receipt and self.jobs.state(job_id) == "unknown":
            try:
                job = self.jobs.open(job_id, self.addresses)
            except FederationError:
                job = self.jobs.get(job_id)  # opened by a concurrent push, or too many jobs
        return job

    def _on_push(self, chunks: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        try:
            header = wire.loads(next(chunks), max_bytes=_HEADER_MAX)
            if type(header) is not dict:
                raise WireError("the header is not a dict")
            msg_id, sender, receiver, address, size = (header["id"], header["sender"],
                                                      header["receiver"], header["address"],
                                                      header["size"])
            job_id = header.get("job", job_of(address))
            if not all(isinstance(v, str) for v in (msg_id, sender, receiver, address, job_id)) \
                    or type(size) is not int or size < 0:
                raise WireError("bad header field types")
        except (StopIteration, WireError, KeyError, TypeError, AttributeError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed push header: {e}")
        self._check_sender(sender, context)
        if receiver != self.party:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"message for {receiver!r} reached {self.party!r}")
        if job_of(address) != job_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"address {address!r} is not of the header's job {job_id!r}")
        job = self._receiving_job(job_id, sender)
        if job is None:
            if self.jobs.state(job_id) == "closed":
                return b""  # the job ended here: acknowledged, dropped, never buffered
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"party {self.party!r} has no job {job_id!r} open")
        if sender not in job.parties:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{sender!r} is not a party of job {job_id!r} at {self.party!r}")
        if size > self.max_bytes:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"message of {size} bytes exceeds {self.party!r}'s limit of "
                          f"{self.max_bytes} bytes")
        try:
            job.mailbox.reserve(sender, size)  # counts the declared size; allocates nothing
        except MailboxFull as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        try:
            buf = bytearray()  # grows with what arrives: a header's size claim alone costs nothing
            for chunk in chunks:
                if len(buf) + len(chunk) > size:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "payload longer than its header says")
                buf += chunk
            if len(buf) != size:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"payload truncated: {len(buf)} of {size} bytes arrived")
        except BaseException:
            job.mailbox.release(sender, size)
            raise
        try:
            job.mailbox.deliver(sender, address, buf, msg_id, reserved=size)
        except MailboxFull as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        return b""

    def _on_ping(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        state = "unknown"
        if request:
            try:
                job_id = wire.loads(request, max_bytes=_HEADER_MAX)["job"]
            except (WireError, KeyError, TypeError):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed ping")
            job = self.jobs.get(job_id) if isinstance(job_id, str) else None
            who = self._peer_identity(context)
            # a job's state is told to that job's parties only
            if job is not None and (who is None or who in job.parties):
                state = "open"
            elif job is None and isinstance(job_id, str) and self.jobs.state(job_id) == "closed":
                state = "closed"
        return wire.dumps({"party": self.party, "job": state})

    def _on_abort(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            body = wire.loads(request, max_bytes=_HEADER_MAX)
            job_id, sender, reason = str(body["job"]), str(body["sender"]), clean_reason(body["reason"])
        except (WireError, KeyError, TypeError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed abort: {e}")
        self._check_sender(sender, context)
        job = self.jobs.get(job_id)
        if job is not None and sender in job.parties:
            job.mailbox.mark_failed(sender, reason)
        return b""

    # ------------------------------------------------------------------ client side
    def channel(self, peer: str) -> grpc.Channel:
        """The (shared, mutually authenticated) channel to a partner, for other services."""
        return self._channel(peer)

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

    def push_message(self, job_id: str, receiver: str, address: str, payload: Payload,
                     msg_id: str) -> None:
        """Send one message of a job with an explicit id; safe to call again with the same id."""
        if receiver == self.party:
            raise FederationError(f"party {self.party!r} tried to send {address!r} to itself")
        size = payload_size(payload)
        if size > self.max_bytes:
            raise WireError(f"message of {size} bytes exceeds the limit of {self.max_bytes} bytes")
        header = wire.dumps({"id": msg_id, "job": job_id, "sender": self.party, "receiver": receiver,
                             "address": address, "size": size})
        parts = [payload] if isinstance(payload, bytes) else payload

        def requests() -> Iterator[bytes]:
            yield header
            yield from _chunks(parts)

        call = self._channel(receiver).stream_unary(f"/{SERVICE}/Push")
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.05
        gone_since: float | None = None  # when a peer that had the job open stopped answering
        while True:
            try:
                call(requests(), timeout=self.send_timeout, wait_for_ready=False)
                job = self.jobs.get(job_id)
                if job is not None:
                    job.seen_alive.add(receiver)
                return
            except grpc.RpcError as e:
                code, detail = e.code(), e.details() or ""
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    raise AuthError(f"party {receiver!r} refused {self.party!r}: {detail}") from None
                if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
                    raise WireError(f"party {receiver!r} refused the message: {detail}") from None
                not_open = code == grpc.StatusCode.NOT_FOUND
                job = self.jobs.get(job_id)
                if code == grpc.StatusCode.UNAVAILABLE and job is not None and receiver in job.seen_alive:
                    # it had the job open and no longer answers: fail as a receive waiting on it
                    # would (a few seconds), not after the whole connect_timeout meant for start-up
                    gone_since = gone_since or time.monotonic()
                    if time.monotonic() - gone_since > GONE_AFTER:
                        raise PeerFailed(f"party {receiver!r} stopped answering while {self.party!r} sent "
                                         f"it a message: its process died or the network dropped",
                                         peer=receiver) from None
                else:
                    gone_since = None
                if (code not in _RETRYABLE and not not_open) or time.monotonic() + delay > deadline:
                    if not_open:
                        raise PeerFailed(f"party {receiver!r} did not open job {job_id!r} within "
                                         f"{self.connect_timeout:g} s: has it joined the job?") from None
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

    def _alive(self, job: OpenJob, peer: str) -> str | None:
        """None if ``peer`` answers a ping with ``job`` open there (or may still be starting it),
        else why it is gone."""
        try:
            reply = self._channel(peer).unary_unary(f"/{SERVICE}/Ping")(
                wire.dumps({"job": job.job_id}), timeout=2.0)
            job.ping_failures[peer] = 0
            state = wire.loads(reply, max_bytes=_HEADER_MAX).get("job") if reply else None
            if state == "closed":
                return f"it closed job {job.job_id!r} (its task there ended or was stopped)"
            if state == "open":
                job.seen_alive.add(peer)
            elif peer in job.seen_alive:  # it had the job open (a push landed), and no longer knows it
                return f"it no longer has job {job.job_id!r} open (its node restarted?)"
            return None
        except (grpc.RpcError, WireError, AttributeError) as e:
            if not isinstance(e, grpc.RpcError):
                return None
            n = job.ping_failures.get(peer, 0) + 1
            job.ping_failures[peer] = n
            starting = peer not in job.seen_alive and time.monotonic() - job.opened < self.startup_grace
            if n >= 3 and not starting:
                return (f"its node at {self.addresses[peer]} stopped answering "
                        f"({e.code().name}): the process died or the network dropped")
            return None

    def abort_job(self, job_id: str, reason: str) -> None:
        """Tell every peer of the job that this party failed in it (best effort, 2 s each)."""
        job = self.jobs.get(job_id)
        if job is None:
            return
        body = wire.dumps({"job": job_id, "sender": self.party, "reason": clean_reason(reason)})
        for peer in sorted(job.parties - {self.party}):
            try:
                self._channel(peer).unary_unary(f"/{SERVICE}/Abort")(body, timeout=2.0)
            except grpc.RpcError:
                pass

    def close(self, grace: float = 1.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.stop(grace).wait()
        super().close()
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()


class GrpcJobTransport(JobTransport):
    """One party's transport in one job, over its :class:`GrpcEndpoint`."""

    endpoint: GrpcEndpoint

    def send(self, receiver: str, address: str, payload: Payload) -> None:
        self.push(receiver, address, payload, uuid.uuid4().hex)

    def push(self, receiver: str, address: str, payload: Payload, msg_id: str) -> None:
        """Send with an explicit message id; safe to call again with the same id."""
        self._check_send(receiver, address)
        self.endpoint.push_message(self.job_id, receiver, address, payload, msg_id)

    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        return self._take(sender, address, timeout, describe,
                          alive=lambda peer: self.endpoint._alive(self._job, peer))

    def abort(self, reason: str) -> None:
        self.endpoint.abort_job(self.job_id, reason)


class GrpcTransport(GrpcEndpoint, Transport):
    """The single-federation form: one party's endpoint used directly as a transport.

    ``addresses`` maps every party (this one included) to ``host:port``; any job id an
    address names is served, opened on first use for all of them (at most ``max_jobs``).
    ``abort`` tells the peers of every job this transport has open. New code opens jobs
    explicitly on a :class:`GrpcEndpoint` instead.
    """

    _open_on_receipt = True

    def _job(self, address: str) -> OpenJob:
        job_id = job_of(address)
        job = self.jobs.get(job_id)
        if job is None:
            try:
                job = self.jobs.open(job_id, self.addresses)
            except FederationError:
                job = self._job_or_fail(job_id)
        return job

    def send(self, receiver: str, address: str, payload: Payload) -> None:
        self.push(receiver, address, payload, uuid.uuid4().hex)

    def push(self, receiver: str, address: str, payload: Payload, msg_id: str) -> None:
        """Send with an explicit message id; safe to call again with the same id."""
        self._job(address)
        self.push_message(job_of(address), receiver, address, payload, msg_id)

    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        if sender not in self.addresses:
            raise UnknownParty(f"{self.party!r} cannot receive from unknown party {sender!r}")
        job = self._job(address)
        return job.mailbox.take(sender, address, timeout, describe,
                                alive=lambda peer: self._alive(job, peer))

    def abort(self, reason: str) -> None:
        for job_id in self.jobs.open_ids():
            self.abort_job(job_id, reason)
