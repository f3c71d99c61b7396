"""Attested channels (RA-TLS style): TLS 1.3 to an enclave whose certificate key is bound into a quote.

Protocol (after Gramine's RA-TLS, with a verifier nonce for freshness):

1. The enclave makes a fresh P-256 key and a self-signed certificate for it; the
   certificate carries, in a private X.509 extension, evidence whose ``report_data``
   binds the certificate's public key (SubjectPublicKeyInfo).
2. The client opens TLS 1.3. The handshake proves the server holds that certificate's key.
3. The client sends a fresh 32-byte nonce; the enclave answers with new evidence whose
   ``report_data`` binds the same public key *and* the nonce. The client verifies it
   against its policy: genuine quote, allowed measurement and TCB, key = the TLS key,
   nonce = its own. A replayed answer, or a certificate copied to another server, fails.
4. If the enclave's policy requires attested clients (enclave-to-enclave channels), it
   sends a nonce; the client enclave answers with evidence binding that nonce and the
   SHA-256 of the server's certificate (this session), checked against the server's
   allow-list. Both sides then hold the peer's :class:`~atoll.tee.base.Attested`.
5. Messages: 4-byte length + :mod:`atoll.wire` value, at most ``max_frame`` bytes each.

What each party sees: the network sees TLS records only. The client learns the
enclave's measurement, backend and TCB status; the enclave learns the client's
measurement if it is an enclave, nothing about a plain client.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
import ssl
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from atoll import wire
from atoll.errors import WireError
from atoll.tee.base import (SIMULATED_MARK, AttestationError, Attested, EnclavePolicy, EnclaveRuntime,
                            Evidence, TeeError, bind_report_data, verify_evidence)

log = logging.getLogger(__name__)
#: private OID (UUID arc, ITU-T X.667) of the evidence extension
EVIDENCE_OID = "2.25.181560217405716829417367712045309338653"
MAX_FRAME = 256 << 20


def _spki(cert_der: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = x509.load_der_x509_certificate(cert_der)
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def ratls_certificate(runtime: EnclaveRuntime) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a fresh key whose SPKI is bound into the runtime's evidence."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    ev = runtime.evidence(bind_report_data("ra-tls", spki))
    cn = f"atoll enclave {runtime.measurement[:16]}" + (f" {SIMULATED_MARK}" if runtime.simulated else "")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(EVIDENCE_OID),
                                                      wire.dumps(ev.to_wire())), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def certificate_evidence(cert_der: bytes) -> Evidence:
    """The evidence an RA-TLS certificate carries (checked by the caller)."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(cert_der)
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(EVIDENCE_OID))
    except x509.ExtensionNotFound:
        raise AttestationError("the peer's certificate carries no attestation evidence: not an enclave") from None
    return Evidence.from_wire(wire.loads(ext.value.value, max_bytes=1 << 20))


class ChannelClosed(TeeError):
    """The peer closed the attested channel."""


class Framed:
    """Length-prefixed wire messages over a socket."""

    def __init__(self, sock: socket.socket, max_frame: int = MAX_FRAME):
        self.sock, self.max_frame = sock, max_frame

    def send(self, obj: Any) -> None:
        data = wire.dumps(obj)
        if len(data) > self.max_frame:
            raise WireError(f"message of {len(data)} bytes exceeds the channel's limit of {self.max_frame}")
        self.sock.sendall(struct.pack(">I", len(data)) + data)

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            part = self.sock.recv(min(n - len(buf), 1 << 20))
            if not part:
                raise ChannelClosed("the attested channel closed")
            buf += part
        return bytes(buf)

    def recv(self) -> Any:
        (n,) = struct.unpack(">I", self._exact(4))
        if n > self.max_frame:
            raise WireError(f"peer announced a {n}-byte message; the channel's limit is {self.max_frame}")
        return wire.loads(self._exact(n), max_bytes=self.max_frame)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class AttestedConnection(Framed):
    """A client's channel to an attested enclave; ``peer`` is what was verified."""

    def __init__(self, sock: socket.socket, peer: Attested):
        super().__init__(sock)
        self.peer = peer

    def call(self, request: dict[str, Any]) -> Any:
        """Send one request and return the answer; an ``error`` answer raises :class:`TeeError`."""
        self.send(request)
        answer = self.recv()
        if isinstance(answer, dict) and "error" in answer:
            raise TeeError(f"the enclave refused: {answer['error']}")
        return answer

    def __enter__(self) -> "AttestedConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attested_connect(address: tuple[str, int] | str, policy: EnclavePolicy, runtime: EnclaveRuntime | None = None,
                     timeout: float = 600.0, now: float | None = None) -> AttestedConnection:
    """Open an attested channel to the enclave at ``address`` and verify it against ``policy``.

    ``runtime``: the caller's own enclave runtime, to answer a server that requires attested
    clients (step 4). Raises :class:`AttestationError` / :class:`PolicyError` on refusal.
    """
    if isinstance(address, str):
        host, _, port = address.rpartition(":")
        address = (host, int(port))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the peer is authenticated by its quote (steps 2-3), not a CA
    raw = socket.create_connection(address, timeout=timeout)
    sock = ctx.wrap_socket(raw, server_hostname=None)
    try:
        cert = sock.getpeercert(binary_form=True)
        if not cert:
            raise AttestationError("the enclave presented no certificate")
        spki = _spki(cert)
        certificate_evidence(cert)  # an RA-TLS certificate, or not an enclave at all
        chan = Framed(sock)
        nonce = os.urandom(32)
        chan.send({"nonce": nonce})
        answer = chan.recv()
        if not isinstance(answer, dict) or "evidence" not in answer:
            raise AttestationError("the enclave did not answer the attestation challenge")
        peer = verify_evidence(Evidence.from_wire(answer["evidence"]), policy,
                               bind_report_data("ra-tls", spki, nonce), now=now)
        challenge = answer.get("client_challenge")
        if challenge is not None:
            if runtime is None:
                raise AttestationError("the enclave accepts only attested clients (enclaves in its allow-list)")
            ev = runtime.evidence(bind_report_data("ra-tls-client", b"", bytes(challenge),
                                                   hashlib.sha256(cert).digest()))
            chan.send({"evidence": ev.to_wire()})
            ok = chan.recv()
            if not (isinstance(ok, dict) and ok.get("ok")):
                raise AttestationError(f"the enclave refused this client: {ok.get('error') if isinstance(ok, dict) else ok}")
        return AttestedConnection(sock, peer)
    except BaseException:
        sock.close()
        raise


Handler = Callable[[AttestedConnection | Framed, "Attested | None"], None]


class AttestedServer:
    """The enclave side: serves ``handler(conn, client)`` for each connection, in its own thread.

    ``client_policy``: if given, only enclaves it accepts may connect (step 4); ``client`` is
    then their :class:`Attested`, else ``None``.
    """

    def __init__(self, runtime: EnclaveRuntime, handler: Handler, client_policy: EnclavePolicy | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self.runtime, self.handler, self.client_policy = runtime, handler, client_policy
        cert_pem, key_pem = ratls_certificate(runtime)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        with tempfile.TemporaryDirectory(prefix="atoll-ratls-") as d:  # ssl loads keys from files only
            cf, kf = Path(d) / "c.pem", Path(d) / "k.pem"
            cf.write_bytes(cert_pem)
            fd = os.open(kf, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key_pem)
            self.ctx.load_cert_chain(cf, kf)
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        self._cert_der = x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)
        self._spki = _spki(self._cert_der)
        self.sock = socket.create_server((host, port))
        self.address = self.sock.getsockname()[:2]
        self._stop = threading.Event()

    def serve_forever(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                break
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def start(self) -> "AttestedServer":
        threading.Thread(target=self.serve_forever, daemon=True, name="atoll-ratls").start()
        return self

    def close(self) -> None:
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass

    def _serve(self, raw: socket.socket) -> None:
        try:
            sock = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log.info("attested channel: TLS handshake failed (%s)", type(e).__name__)
            raw.close()
            return
        chan = Framed(sock)
        try:
            hello = chan.recv()
            nonce = hello.get("nonce") if isinstance(hello, dict) else None
            if not isinstance(nonce, bytes) or len(nonce) != 32:
                chan.send({"error": "attestation: expected a 32-byte nonce first"})
                return
            answer: dict[str, Any] = {"evidence": self.runtime.evidence(
                bind_report_data("ra-tls", self._spki, nonce)).to_wire()}
            client = None
            if self.client_policy is not None:
                challenge = os.urandom(32)
                answer["client_challenge"] = challenge
                chan.send(answer)
                reply = chan.recv()
                try:
                    ev = Evidence.from_wire(reply.get("evidence") if isinstance(reply, dict) else None)
                    client = verify_evidence(ev, self.client_policy, bind_report_data(
                        "ra-tls-client", b"", challenge, hashlib.sha256(self._cert_der).digest()))
                except TeeError as e:
                    chan.send({"ok": False, "error": f"client attestation: {type(e).__name__}"})
                    log.info("attested channel: client refused (%s: %s)", type(e).__name__, e)
                    return
                chan.send({"ok": True})
            else:
                chan.send(answer)
            self.handler(chan, client)
        except ChannelClosed:
            log.debug("attested channel: the client closed it")
        except (TeeError, WireError, OSError) as e:
            log.info("attested channel closed: %s", type(e).__name__)
        finally:
            chan.close()
