"""Dial-in federation: clients reach a server over one outgoing, long-lived gRPC stream.

Peer-to-peer federation (:mod:`atoll.federation.grpc_transport`) has every party run a gRPC
server. A phone behind NAT, or a hospital whose firewall lets nothing in, cannot: here only
the server listens, and each client opens ONE outgoing TLS connection and one bidirectional
stream (service ``atoll.DialIn``, method ``Connect``) that carries everything both ways.
Messages for a client are pushed down its stream. The roles see the usual
:class:`~atoll.federation.Context`; the server side is an :class:`~atoll.federation.Endpoint`
(:class:`DialInServer`, with ``start``/``stop``, serving many jobs, so a node can host it),
the client side another (:class:`DialInClient`).

Protocol (one client session; frames are raw bytes: a 4-byte header length, a header encoded
with :mod:`atoll.wire`, then body bytes; a message longer than a frame continues in raw frames):

1. **Connect.** The client dials the server with TLS and checks that the server's certificate
   (from the federation CA) names the server party. Either on the server's ``listen`` port
   with mutual TLS — its own certificate from the same CA names the client — or on the
   ``token_listen`` port with an enrolment token (:mod:`atoll.federation.tokens`).
2. **Hello.** The client's first frame, within ``hello_timeout``: ``{t: hello, v, job, token?}``.
3. **Admission.** The server takes the client's name from its certificate, or from the token
   (looked up by hash; unknown or revoked tokens are refused), and accepts it only for a job
   it has open whose roster names that client. A refusal ends the stream with a status
   (``UNAUTHENTICATED``, ``PERMISSION_DENIED``, ``NOT_FOUND`` — the job is not open yet —
   or ``FAILED_PRECONDITION`` — the job has ended) and a line that says what to do.
   Otherwise it answers ``{t: welcome, job, party, server, session, info}``: the client's
   name, a new session number, and the job's ``info`` (e.g. the model to train).
4. **Messages.** ``{t: msg, address, size}`` + payload, either way. The server queues at
   most ``client_buffer_bytes`` for each client (a client that reads too slowly is dropped
   with ``RESOURCE_EXHAUSTED`` after ``slow_client_timeout``) and accepts at most as much
   from it that the job has not taken yet.
5. **Failure and goodbye.** ``{t: abort, reason}`` either way (a category and a step, never
   error text); ``{t: bye}`` from a client that leaves; ``{t: close}`` from the server when
   the job ends. A session also ends when the stream breaks (the process died, the network
   dropped: TCP reset or missed keepalives).
6. **Dropout and rejoin.** When a session ends, receives waiting on that client raise
   :class:`~atoll.errors.PeerFailed` — the round logic counts a dropout, the job goes on.
   The client may connect again: a new session. A client's first session in a job can be
   sent to at once; a later one only after the server's round logic calls
   ``begin_session`` (it then restarts its exchange with that client; see
   :meth:`atoll.ml.horizontal.roles.ContextChannel.available`), so nothing of the old
   session is read as part of the new one.

What each party sees:
- **Server**: each client's name (from its certificate or token), its network address,
  when it connects and leaves, and the messages clients send it.
- **Client**: the server's name, the job id and ``info``, its session number, and the
  messages addressed to it. Never who else is in the job, nor any other client's message:
  clients reach only the server. A client listens on no port.

:class:`DialInServerTransport` adds to :class:`~atoll.federation.Transport` what dynamic
membership needs: ``sessions()`` (who is connected now), ``wait_sessions(n, timeout)`` and
``begin_session(client, session)``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import struct
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import grpc

from atoll import wire
from atoll.errors import AuthError, FederationError, PeerFailed, UnknownParty, WireError
from atoll.federation.certs import TlsConfig
from atoll.federation.tokens import CLIENT_NAME, TokenStore, parse_token
from atoll.federation.transport import (Endpoint, JobTable, JobTransport, MailboxFull, OpenJob, Payload,
                                        as_bytes, check_job_id, clean_reason, job_of, party_names)

log = logging.getLogger(__name__)

SERVICE = "atoll.DialIn"
METHOD = f"/{SERVICE}/Connect"
VERSION = 1
#: one gRPC message: just under gRPC's default 4 MiB limit
CHUNK = (4 << 20) - (64 << 10)
_HEADER_MAX = 64 << 10
_LEN = struct.Struct(">I")
_KEEPALIVE = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000),
              ("grpc.http2.max_pings_without_data", 0)]
_CLIENT_OPTIONS = [("grpc.max_send_message_length", CHUNK + _HEADER_MAX),
                   ("grpc.max_receive_message_length", CHUNK + _HEADER_MAX), *_KEEPALIVE]
_SERVER_OPTIONS = [*_CLIENT_OPTIONS, ("grpc.so_reuseport", 0),
                   ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                   ("grpc.http2.max_ping_strikes", 0)]


class JobEnded(FederationError):
    """The server ended the job (it finished, or was stopped): there is nothing to rejoin."""


# --------------------------------------------------------------------------- frames (pure helpers)

def encode_frame(header: Mapping[str, Any], body: bytes = b"") -> bytes:
    h = wire.dumps(dict(header))
    return _LEN.pack(len(h)) + h + body


def decode_frame(frame: bytes) -> tuple[dict, memoryview]:
    """``(header, body)`` of a frame; :class:`WireError` if it is not one."""
    if len(frame) < _LEN.size:
        raise WireError("frame shorter than its length prefix")
    n = _LEN.unpack_from(frame)[0]
    if n > _HEADER_MAX or _LEN.size + n > len(frame):
        raise WireError("frame header length out of range")
    header = wire.loads(memoryview(frame)[_LEN.size:_LEN.size + n], max_bytes=_HEADER_MAX)
    if not isinstance(header, dict) or not isinstance(header.get("t"), str):
        raise WireError("frame header is not a typed dict")
    return header, memoryview(frame)[_LEN.size + n:]


def message_frames(address: str, payload: Payload) -> tuple[list[bytes], int]:
    """The frames of one message (header + first bytes, then raw continuation frames), and its size.

    The payload is copied: the caller may reuse its buffers as soon as ``send`` returns."""
    data = as_bytes(payload)
    size = len(data)
    h = wire.dumps({"t": "msg", "address": address, "size": size})
    first = max(CHUNK - _LEN.size - len(h), 0)
    frames = [_LEN.pack(len(h)) + h + data[:first]]
    frames += [data[i:i + CHUNK] for i in range(first, size, CHUNK)]
    return frames, size


def read_frames(frames: Iterator[bytes], max_bytes: int,
                admit: Any = None) -> Iterator[tuple[dict, bytearray | None]]:
    """Reassemble a stream of frames into ``(header, payload)`` (payload None for control frames).

    ``admit(size)`` is called before a message's buffer is allocated (it may raise)."""
    for frame in frames:
        header, body = decode_frame(frame)
        if header["t"] != "msg":
            yield header, None
            continue
        address, size = header.get("address"), header.get("size")
        if not isinstance(address, str) or type(size) is not int or size < 0:
            raise WireError("message header needs a string address and a size")
        if size > max_bytes:
            raise WireError(f"message of {size} bytes exceeds the limit of {max_bytes} bytes")
        if admit is not None:
            admit(size)
        if len(body) > size:
            raise WireError("message longer than its header says")
        buf = bytearray(body)  # grows with what arrives, never from the size the header claims
        while len(buf) < size:
            try:
                chunk = next(frames)
            except StopIteration:
                raise WireError(f"message truncated: {len(buf)} of {size} bytes arrived") from None
            if len(buf) + len(chunk) > size:
                raise WireError("message longer than its header says")
            buf += chunk
        yield header, buf


class _Outbox:
    """Frames waiting to go down one stream, at most ``limit`` bytes of them."""

    def __init__(self, limit: int):
        self.limit = limit
        self.cond = threading.Condition()
        self.frames: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.peak = 0
        self.closed = False
        self.end: tuple[grpc.StatusCode, str] | None = None  # how the stream ends, None = OK

    def put(self, frames: list[bytes], size: int, timeout: float) -> str:
        """"ok", "closed", or "full" (no room within ``timeout``)."""
        if size > self.limit:
            raise WireError(f"message of {size} bytes exceeds the per-client buffer of {self.limit} bytes; "
                            "raise client_buffer_bytes (on both sides) or send smaller messages")
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.closed and self.queued + size > self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return "full"
                self.cond.wait(left)
            if self.closed:
                return "closed"
            self.frames.extend(frames)
            self.queued += sum(len(f) for f in frames)
            self.peak = max(self.peak, self.queued)
            self.cond.notify_all()
            return "ok"

    def put_control(self, frame: bytes) -> None:
        """A control frame (abort, close): never waits, never refused for room."""
        with self.cond:
            if not self.closed:
                self.frames.append(frame)
                self.queued += len(frame)
                self.cond.notify_all()

    def close(self, end: tuple[grpc.StatusCode, str] | None = None, last: bytes | None = None) -> None:
        with self.cond:
            if self.closed:
                return
            if last is not None:
                self.frames.append(last)
            self.closed, self.end = True, end
            if end is not None:  # an error end: what was queued is not sent
                self.frames.clear()
                self.queued = 0
            self.cond.notify_all()

    def drain(self) -> Iterator[bytes]:
        """Yield frames until closed and empty."""
        while True:
            with self.cond:
                while not self.frames and not self.closed:
                    self.cond.wait()
                if not self.frames:
                    return
                frame = self.frames.popleft()
                self.queued -= len(frame)
                self.cond.notify_all()
            yield frame


# --------------------------------------------------------------------------- server

@dataclass(eq=False)
class _Session:
    client: str
    job_id: str
    number: int
    via: str                      # "certificate" or "token"
    token_id: str | None
    outbox: _Outbox
    admitted: bool = False
    ended: bool = False
    reason: str = "it disconnected"


@dataclass
class _JobState:
    info: dict
    sessions: dict[str, _Session] = field(default_factory=dict)
    ever: set[str] = field(default_factory=set)
    cond: threading.Condition = field(default_factory=threading.Condition)


class DialInServer(Endpoint):
    """The server side of a dial-in federation (see the module docstring).

    ``tls``: the server's own certificate and key and the federation CA (client certificates
    must come from that CA). ``listen``: ``host:port`` for clients with certificates (mutual
    TLS); ``token_listen``: ``host:port`` for clients with enrolment tokens from ``tokens``.
    Port 0 picks a free port (``server.port`` / ``server.token_port`` after ``start()``).
    Each client gets at most ``client_buffer_bytes`` queued towards it (and from it; a single
    message may not exceed it); ``max_clients`` streams at once.
    """

    def __init__(self, tls: TlsConfig, listen: str | None = None, token_listen: str | None = None,
                 tokens: TokenStore | None = None, *, client_buffer_bytes: int = 64 << 20,
                 slow_client_timeout: float = 30.0, hello_timeout: float = 10.0, max_clients: int = 512,
                 max_jobs: int = 1000, token_check_interval: float = 2.0):
        if listen is None and token_listen is None:
            raise FederationError("give the server an address: listen (client certificates) and/or "
                                  "token_listen (enrolment tokens)")
        if token_listen is not None and tokens is None:
            raise FederationError("token_listen needs a token store (tokens=TokenStore(path))")
        tls.check()
        self.tls = tls
        self.party = tls.party
        self.listen, self.token_listen, self.tokens = listen, token_listen, tokens
        self.client_buffer_bytes = int(client_buffer_bytes)
        self.slow_client_timeout = slow_client_timeout
        self.hello_timeout = hello_timeout
        self.max_clients = max_clients
        self.token_check_interval = token_check_interval
        self.jobs = JobTable(self.party, max_jobs)
        self.port: int | None = None
        self.token_port: int | None = None
        self._state: dict[str, _JobState] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._server: grpc.Server | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "DialInServer":
        if self._server is not None:
            return self
        server = grpc.server(futures.ThreadPoolExecutor(self.max_clients + 4, thread_name_prefix="atoll-dialin"),
                             options=_SERVER_OPTIONS, maximum_concurrent_rpcs=self.max_clients)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Connect": grpc.stream_stream_rpc_method_handler(self._connect)}),))
        pair = [(self.tls.key, self.tls.cert)]
        for attr, address, mutual in (("port", self.listen, True), ("token_port", self.token_listen, False)):
            if address is None:
                continue
            creds = grpc.ssl_server_credentials(pair, root_certificates=self.tls.ca_cert if mutual else None,
                                                require_client_auth=mutual)
            try:
                port = server.add_secure_port(address, creds)
            except RuntimeError:
                port = 0
            if port == 0:
                server.stop(0)
                raise FederationError(f"the dial-in server could not listen on {address}: is the port in use, "
                                      "or the address not one of this machine's?")
            setattr(self, attr, port)
        server.start()
        self._server = server
        if self.tokens is not None:
            self._watcher = threading.Thread(target=self._watch_tokens, name="atoll-dialin-tokens", daemon=True)
            self._watcher.start()
        log.info("dial-in server %r listening on %s", self.party,
                 ", ".join(f"{a} ({w})" for a, w in ((self.listen, "certificates"), (self.token_listen, "tokens"))
                           if a))
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Close every job (its clients are told) and stop listening."""
        self._stopping.set()
        for job_id in self.jobs.open_ids():
            self.close_job(job_id)
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def close(self) -> None:
        self.stop()

    # ------------------------------------------------------------------ jobs
    def open_job(self, job_id: str, parties: Mapping[str, str] | Iterable[str],
                 info: Mapping[str, Any] | None = None) -> "DialInServerTransport":
        """Open a job for the clients ``parties`` names (its roster; this server among them).
        ``info`` (small, wire-encodable) is told to each client when it joins."""
        check_job_id(job_id)
        names = party_names(parties)
        bad = sorted(p for p in names if p != self.party and not CLIENT_NAME.match(p))
        if bad:
            raise UnknownParty(f"client names {bad} are not valid (1-64 letters, digits or '_.-')")
        info = dict(info or {})
        if len(wire.dumps(info)) > _HEADER_MAX // 2:
            raise FederationError("job info is too large to tell clients (keep it under 32 KiB)")
        job = self.jobs.open(job_id, names)
        with self._lock:
            self._state[job_id] = _JobState(info)
        return DialInServerTransport(self, job)

    def close_job(self, job_id: str) -> None:
        """End the job: every connected client is told (``close``), its mailbox is freed."""
        with self._lock:
            state = self._state.pop(job_id, None)
        if state is not None:
            with state.cond:
                sessions = list(state.sessions.values())
                state.sessions.clear()
                state.cond.notify_all()
            for s in sessions:
                s.ended = True
                s.outbox.close(last=encode_frame({"t": "close"}))
        super().close_job(job_id)

    def stats(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for job_id, mailbox_stats in super().stats().items():
            state = self._state.get(job_id)
            sessions = dict(state.sessions) if state else {}
            out[job_id] = {**mailbox_stats, "connected": len(sessions),
                           "queued_to_clients": {c: s.outbox.queued for c, s in sessions.items()},
                           "peak_queued_to_clients": {c: s.outbox.peak for c, s in sessions.items()}}
        return out

    def _job_state(self, job_id: str) -> _JobState:
        with self._lock:
            state = self._state.get(job_id)
        if state is None:
            raise FederationError(f"job {job_id!r} is not open at the dial-in server {self.party!r}")
        return state

    # ------------------------------------------------------------------ sessions
    def sessions(self, job_id: str) -> dict[str, int]:
        state = self._job_state(job_id)
        with state.cond:
            return {c: s.number for c, s in state.sessions.items()}

    def wait_sessions(self, job_id: str, minimum: int, timeout: float) -> dict[str, int]:
        state = self._job_state(job_id)
        deadline = time.monotonic() + timeout
        with state.cond:
            while len(state.sessions) < minimum and not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or self._state.get(job_id) is not state:
                    break
                state.cond.wait(min(left, 1.0))
            return {c: s.number for c, s in state.sessions.items()}

    def begin_session(self, job_id: str, client: str, number: int) -> bool:
        """Start talking to session ``number`` of ``client``: what it queued before and its
        failure mark are dropped. False if that session is no longer connected."""
        state = self._job_state(job_id)
        job = self.jobs.get(job_id)
        with state.cond:
            s = state.sessions.get(client)
            if s is None or s.number != number:
                return False
            if not s.admitted and job is not None:
                job.mailbox.forget(client)
            s.admitted = True
            return True

    def _session_for_send(self, job_id: str, client: str) -> _Session:
        state = self._job_state(job_id)
        with state.cond:
            s = state.sessions.get(client)
        if s is None or s.ended:
            raise PeerFailed(f"client {client!r} is not connected to job {job_id!r}")
        if not s.admitted:
            raise PeerFailed(f"client {client!r} reconnected to job {job_id!r}; it rejoins when the server "
                             "begins its new session (the next round)")
        return s

    def _end_session(self, s: _Session, reason: str, end: tuple[grpc.StatusCode, str] | None = None) -> None:
        """The session is over (stream broke, client left, dropped): mark a dropout in its job."""
        with self._lock:
            state = self._state.get(s.job_id)
        first = not s.ended
        s.ended = True
        s.outbox.close(end)
        if state is None:
            return
        with state.cond:
            current = state.sessions.get(s.client) is s
            if current:
                del state.sessions[s.client]
                state.cond.notify_all()
        job = self.jobs.get(s.job_id)
        if current and s.admitted and job is not None:
            job.mailbox.mark_failed(s.client, reason)
        if first and current:
            log.info("client %s left job %s (session %d): %s", s.client, s.job_id, s.number, reason)

    def _watch_tokens(self) -> None:
        while not self._stopping.wait(self.token_check_interval):
            with self._lock:
                sessions = [s for st in self._state.values() for s in list(st.sessions.values())
                            if s.via == "token"]
            for s in sessions:
                try:
                    live = self.tokens.live(s.token_id)
                except Exception:  # noqa: BLE001 - an unreadable store keeps clients on; the next connect says why
                    log.exception("token store %s unreadable", self.tokens.path)
                    continue
                if not live:
                    self._end_session(s, "its enrolment token was revoked",
                                      (grpc.StatusCode.UNAUTHENTICATED,
                                       "your enrolment token was revoked by the server's operator"))

    # ------------------------------------------------------------------ the stream
    def _connect(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        timer = threading.Timer(self.hello_timeout, context.cancel)
        timer.daemon = True
        timer.start()
        try:
            first = next(requests, None)
        except grpc.RpcError:
            first = None
        finally:
            timer.cancel()
        if first is None:
            return
        session = self._admit(first, context)
        welcome = encode_frame({"t": "welcome", "v": VERSION, "job": session.job_id, "party": session.client,
                                "server": self.party, "session": session.number,
                                "info": self._state[session.job_id].info if session.job_id in self._state else {}})
        context.add_callback(lambda: self._end_session(session, "it disconnected"))
        threading.Thread(target=self._read, args=(session, requests), daemon=True,
                         name=f"atoll-dialin-{session.client}").start()
        yield welcome
        yield from session.outbox.drain()
        if session.outbox.end is not None:
            context.abort(*session.outbox.end)

    def _identity(self, hello: dict, context: grpc.ServicerContext) -> tuple[str, str, str | None]:
        names = context.auth_context().get("x509_common_name") or []
        if names:
            return names[0].decode(errors="replace"), "certificate", None
        token = hello.get("token")
        if self.tokens is None or not isinstance(token, str):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "no client certificate and no enrolment token: connect to the server's certificate "
                          "port with your certificate, or to its token port with a token")
        try:
            found = self.tokens.verify(token)
        except Exception:  # noqa: BLE001 - a broken store refuses, and the operator's log says why
            log.exception("token store %s unreadable", self.tokens.path)
            found = None
        if found is None:
            log.warning("refused a token client from %s: unknown, revoked or altered token", context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "the enrolment token was refused (unknown, revoked or mistyped): ask the server's "
                          "operator for a new one")
        return found[0], "token", found[1]

    def _admit(self, first: bytes, context: grpc.ServicerContext) -> _Session:
        try:
            hello, _ = decode_frame(first)
        except WireError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first frame must be a hello")
        if hello.get("t") != "hello" or hello.get("v") != VERSION or not isinstance(hello.get("job"), str):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"the first frame must be a version-{VERSION} hello naming a job; update Atoll")
        client, via, token_id = self._identity(hello, context)
        job_id = hello["job"]
        job = self.jobs.get(job_id)
        if job is None:
            if self.jobs.state(job_id) == "closed":
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"job {job_id!r} has ended at this server")
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_id!r} is not open at this server (yet?)")
        if client == self.party or client not in job.parties:
            log.warning("refused %s (%s) for job %s: not on its roster", client, via, job_id)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{client!r} is not a client of job {job_id!r}: ask the server's operator to add it")
        with self._lock:
            state = self._state.get(job_id)
        if state is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"job {job_id!r} has ended at this server")
        with state.cond:
            old = state.sessions.get(client)
            s = _Session(client, job_id, next(self._numbers), via, token_id, _Outbox(self.client_buffer_bytes),
                         admitted=client not in state.ever)
            state.ever.add(client)
            state.sessions[client] = s
            state.cond.notify_all()
        if old is not None:  # the same client again (a restarted process, a new network): the old one goes
            old.ended = True
            old.outbox.close((grpc.StatusCode.ABORTED, "a newer connection of this client replaced this one"))
            if old.admitted:
                job.mailbox.mark_failed(client, "it reconnected")
        log.info("client %s joined job %s (session %d, %s, %s)", client, job_id, s.number, via, context.peer())
        return s

    def _read(self, s: _Session, requests: Iterator[bytes]) -> None:
        reason, end = "it disconnected", None
        job = self.jobs.get(s.job_id)

        def admit(size: int) -> None:
            if job is not None and job.mailbox.pending(s.client) + size > self.client_buffer_bytes:
                raise _Overflow(size)

        try:
            for header, payload in read_frames(requests, self.client_buffer_bytes, admit):
                if s.ended:
                    break
                t = header["t"]
                if t == "msg":
                    if job_of(header["address"]) != s.job_id:
                        raise WireError("address of another job")
                    if job is not None:
                        job.mailbox.deliver(s.client, header["address"], payload)
                elif t == "abort":
                    reason = f"it failed: {clean_reason(header.get('reason'))}"
                    if job is not None and s.admitted:
                        job.mailbox.mark_failed(s.client, reason)
                elif t == "bye":
                    reason = "it left the job"
                    break
                else:
                    raise WireError(f"unknown frame type {t!r}")
        except grpc.RpcError:
            pass
        except _Overflow as e:
            reason = "it sent more than the server had taken (buffer full)"
            end = (grpc.StatusCode.RESOURCE_EXHAUSTED,
                   f"message of {e.args[0]} bytes refused: the server holds {self.client_buffer_bytes} bytes at "
                   "most from one client that it has not taken yet")
        except MailboxFull as e:  # the job's mailbox bounds (messages, bytes in all) hold too
            reason, end = "it sent more than the server had taken (buffer full)", (
                grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except WireError as e:
            reason, end = "it broke the protocol", (grpc.StatusCode.INVALID_ARGUMENT, f"protocol error: {e}")
        self._end_session(s, reason, end)


class _Overflow(Exception):
    pass


class DialInServerTransport(JobTransport):
    """The server's transport in one job: messages to a client go down its stream."""

    endpoint: DialInServer

    @property
    def info(self) -> dict:
        return dict(self.endpoint._job_state(self.job_id).info)

    def send(self, receiver: str, address: str, payload: Payload) -> None:
        self._check_send(receiver, address)
        s = self.endpoint._session_for_send(self.job_id, receiver)
        frames, size = message_frames(address, payload)
        status = s.outbox.put(frames, size, self.endpoint.slow_client_timeout)
        if status == "ok":
            return
        if status == "full":
            self.endpoint._end_session(
                s, "it read too slowly", (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                          f"you read too slowly: {s.outbox.queued} bytes waited for you "
                                          f"(the server holds {s.outbox.limit} at most per client)"))
            raise PeerFailed(f"client {receiver!r} reads too slowly: {s.outbox.limit} bytes were queued for it "
                             f"for {self.endpoint.slow_client_timeout:g} s; the server dropped it")
        raise PeerFailed(f"client {receiver!r} disconnected from job {self.job_id!r}")

    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        return self._take(sender, address, timeout, describe)

    def abort(self, reason: str) -> None:
        frame = encode_frame({"t": "abort", "reason": clean_reason(reason)})
        with self.endpoint._job_state(self.job_id).cond:
            sessions = list(self.endpoint._job_state(self.job_id).sessions.values())
        for s in sessions:
            s.outbox.put_control(frame)

    # dynamic membership (see the module docstring, step 6)
    def sessions(self) -> dict[str, int]:
        """Clients connected now -> their session numbers."""
        return self.endpoint.sessions(self.job_id)

    def wait_sessions(self, minimum: int, timeout: float) -> dict[str, int]:
        """Wait until at least ``minimum`` clients are connected (at most ``timeout`` s); who is."""
        return self.endpoint.wait_sessions(self.job_id, minimum, timeout)

    def begin_session(self, client: str, session: int) -> bool:
        return self.endpoint.begin_session(self.job_id, client, session)


# --------------------------------------------------------------------------- client

class DialInClient(Endpoint):
    """The client side: dials ``server`` (``host:port``) and opens one stream per job.

    With ``tls`` (a certificate from the federation CA naming this client) dial the server's
    certificate port; with ``token`` (and ``ca_cert``, the federation CA, to check the server)
    its token port. ``server_name`` is the party the server's certificate must name. Nothing
    here listens.
    """

    def __init__(self, server: str, tls: TlsConfig | None = None, token: str | None = None,
                 ca_cert: bytes | None = None, server_name: str = "server", *,
                 buffer_bytes: int = 64 << 20, connect_timeout: float = 60.0, send_timeout: float = 600.0):
        if (tls is None) == (token is None):
            raise AuthError("a dial-in client needs a certificate (tls=...) or an enrolment token (token=...), "
                            "not both")
        if tls is not None:
            tls.check()
            self.party = tls.party
            creds = grpc.ssl_channel_credentials(tls.ca_cert, tls.key, tls.cert)
        else:
            if not ca_cert:
                raise AuthError("a token client needs the federation's CA certificate (ca.pem) to check "
                                "the server")
            self.party = parse_token(token)[0]
            creds = grpc.ssl_channel_credentials(ca_cert)
        self.server, self.server_name, self.token = server, server_name, token
        self.buffer_bytes = int(buffer_bytes)
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.jobs = JobTable(self.party)
        self._transports: dict[str, DialInClientTransport] = {}
        self._channel = grpc.secure_channel(server, creds, options=[
            *_CLIENT_OPTIONS, ("grpc.ssl_target_name_override", server_name)])

    def open_job(self, job_id: str, parties: Mapping[str, str] | Iterable[str] | None = None
                 ) -> "DialInClientTransport":
        """Join ``job_id`` at the server (retrying while it is unreachable or has not opened the job,
        up to ``connect_timeout``); ``parties``, if given, must be this client and the server."""
        check_job_id(job_id)
        if parties is not None and party_names(parties) != {self.party, self.server_name}:
            raise UnknownParty(f"a dial-in client's job has two parties, {self.party!r} and the server "
                               f"{self.server_name!r}; got {sorted(party_names(parties))}")
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.05
        while True:
            try:
                return self._connect_once(job_id, deadline)
            except _Retry as e:
                if time.monotonic() + delay > deadline:
                    raise e.error from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _connect_once(self, job_id: str, deadline: float) -> "DialInClientTransport":
        outbox = _Outbox(self.buffer_bytes)
        hello: dict[str, Any] = {"t": "hello", "v": VERSION, "job": job_id}
        if self.token is not None:
            hello["token"] = self.token
        outbox.put_control(encode_frame(hello))
        call = self._channel.stream_stream(METHOD)(outbox.drain())
        first: queue.Queue = queue.Queue()

        def welcome() -> None:
            try:
                first.put(next(call))
            except grpc.RpcError as e:
                first.put(e)
            except StopIteration:
                first.put(None)

        threading.Thread(target=welcome, daemon=True, name="atoll-dialin-hello").start()
        try:
            got = first.get(timeout=max(deadline - time.monotonic(), 0.1))
        except queue.Empty:
            call.cancel()
            outbox.close()
            raise _Retry(FederationError(f"the server at {self.server} did not answer within "
                                         f"{self.connect_timeout:g} s")) from None
        if not isinstance(got, bytes):
            outbox.close()
            raise self._refusal(got, job_id)
        try:
            header, _ = decode_frame(got)
            if header.get("t") != "welcome" or header.get("party") != self.party \
                    or header.get("server") != self.server_name or type(header.get("session")) is not int:
                raise WireError("unexpected welcome")
        except WireError as e:
            call.cancel()
            outbox.close()
            raise FederationError(f"the server at {self.server} answered with something else than a welcome "
                                  f"({e}); is it an Atoll dial-in server of the same version?") from None
        parties = {self.server_name: "server", self.party: "client"}
        job = self.jobs.open(job_id, parties)
        info = header.get("info") if isinstance(header.get("info"), dict) else {}
        return DialInClientTransport(self, job, call, outbox, header["session"], info)

    def _refusal(self, got: Any, job_id: str) -> Exception:
        if got is None:
            return _Retry(FederationError(f"the server at {self.server} closed the stream before welcoming "
                                          f"{self.party!r}"))
        code, detail = got.code(), got.details() or ""
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return AuthError(f"the server at {self.server} refused {self.party!r}: {detail}")
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return JobEnded(f"job {job_id!r} has ended at the server at {self.server}")
        if code == grpc.StatusCode.NOT_FOUND:
            return _Retry(PeerFailed(f"the server at {self.server} did not open job {job_id!r} within "
                                     f"{self.connect_timeout:g} s: is the job id right, and has it started?"))
        low = detail.lower()
        if code == grpc.StatusCode.UNAVAILABLE and any(w in low for w in ("handshake", "ssl", "certificate", "tls")):
            return AuthError(f"TLS with the server at {self.server} failed: certificates from another CA, "
                             "expired, naming another party, or a token client on the certificate port "
                             f"(or the reverse) ({detail})")
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNKNOWN,
                    grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED):
            hint = (" (if the server is up: a token client dials the server's token port, a certificate "
                    "client its certificate port)") if code == grpc.StatusCode.UNAVAILABLE else ""
            return _Retry(FederationError(f"could not reach the server at {self.server}: {code.name}: "
                                          f"{detail}{hint}"))
        return FederationError(f"the server at {self.server} refused the connection: {code.name}: {detail}")

    def close(self) -> None:
        for job_id in self.jobs.open_ids():
            self.close_job(job_id)
        self._channel.close()

    def close_job(self, job_id: str) -> None:
        t = self._transports.pop(job_id, None)
        if t is not None:
            t._leave()
        super().close_job(job_id)


class _Retry(Exception):
    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class DialInClientTransport(JobTransport):
    """A client's transport in one job: one session of one stream. When the stream ends the
    server is marked failed in this job; to rejoin, open the job again (a new session)."""

    endpoint: DialInClient

    def __init__(self, endpoint: DialInClient, job: OpenJob, call: Any, outbox: _Outbox, session: int,
                 info: dict):
        super().__init__(endpoint, job)
        self.session = session
        self.info = info
        self.server = endpoint.server_name
        self._call = call
        self._outbox = outbox
        self._ended: str | None = None
        endpoint._transports[job.job_id] = self
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"atoll-dialin-{self.party}")
        self._reader.start()

    @property
    def parties_map(self) -> dict[str, str]:
        """The job's parties as this client sees them: itself and the server."""
        return {self.server: "server", self.party: "client"}

    def _read(self) -> None:
        mailbox = self._job.mailbox
        reason = "the connection to the server was lost"
        try:
            for header, payload in read_frames(self._call, self.endpoint.buffer_bytes):
                t = header["t"]
                if t == "msg":
                    if job_of(header["address"]) != self.job_id:
                        raise WireError("address of another job")
                    mailbox.deliver(self.server, header["address"], payload)
                elif t == "abort":
                    reason = f"the server failed: {clean_reason(header.get('reason'))}"
                    mailbox.mark_failed(self.server, reason)
                elif t == "close":
                    self._ended = reason = "the server ended the job"
                    break
        except grpc.RpcError as e:
            code, detail = e.code(), e.details() or ""
            if code != grpc.StatusCode.CANCELLED:
                reason = f"the server ended this session ({code.name}: {clean_reason(detail)})"
        except WireError as e:
            reason = f"the server broke the protocol ({e})"
            self._call.cancel()
        except MailboxFull:
            reason = "the server sent more than this client had taken (buffer full)"
            self._call.cancel()
        mailbox.mark_failed(self.server, reason)
        self._outbox.close()

    def send(self, receiver: str, address: str, payload: Payload) -> None:
        self._check_send(receiver, address)
        frames, size = message_frames(address, payload)
        status = self._outbox.put(frames, size, self.endpoint.send_timeout)
        if status == "full":
            raise PeerFailed(f"the server did not take {self.party!r}'s messages for "
                             f"{self.endpoint.send_timeout:g} s")
        if status == "closed":
            raise PeerFailed(f"{self.party!r} is no longer connected to the server "
                             f"({self._job.mailbox.failure(self.server) or 'session closed'})")

    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        try:
            return self._take(sender, address, timeout, describe)
        except PeerFailed:
            if self._ended:
                raise JobEnded(f"job {self.job_id!r} ended at the server while {self.party!r} waited for "
                               f"{describe}") from None
            raise

    @property
    def ended(self) -> bool:
        """True once the server said the job is over (no point rejoining)."""
        return self._ended is not None

    def abort(self, reason: str) -> None:
        self._outbox.put_control(encode_frame({"t": "abort", "reason": clean_reason(reason)}))

    def _leave(self) -> None:
        self._outbox.put_control(encode_frame({"t": "bye"}))
        self._outbox.close()
        self._reader.join(timeout=2.0)
        if self._reader.is_alive():
            self._call.cancel()
            self._reader.join(timeout=2.0)

    def close(self) -> None:
        """Leave the job (tell the server, end the stream)."""
        self.endpoint.close_job(self.job_id)
