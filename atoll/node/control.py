"""The node-to-node control channel: signed messages on the federation endpoint's port and mTLS identity.

Service ``atoll.Node``, one unary method ``Call``, served by the node's
:class:`~atoll.federation.grpc_transport.GrpcEndpoint` next to ``atoll.Federation`` (one
port, one certificate per organisation). A request is the wire-encoded
``{body, sig}``; ``body`` is the wire-encoded ``{type, sender, receiver, ts, nonce,
event, payload}`` and ``sig`` the sender's Ed25519 signature over it (domain
``atoll-control-v1``). The receiver accepts a message only if, in this order:

1. the caller's TLS certificate (from the federation CA) names ``sender``, ``sender`` is
   a partner in this node's config, and the certificate is the one pinned there;
2. ``receiver`` is this node and the signature verifies with the partner's key;
3. ``ts`` is within ``WINDOW`` seconds of this node's clock and ``nonce`` was never seen
   (nonces are kept in the store until they are too old to pass step 3 anyway), so a
   captured message cannot be replayed, not even after a restart.

Replies are wire-encoded dicts ``{ok, error?, ...}`` over the same authenticated channel.
What a partner learns through it: proposals, decisions, task states with an error's
category and step (never its text), chain heads — never data.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, Callable

import grpc
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from atoll import wire
from atoll.errors import AtollError, AuthError, FederationError, WireError
from atoll.node.config import NodeConfig, cert_fingerprint
from atoll.node.signing import CONTROL, Signer
from atoll.node.store import Database, Nonce

log = logging.getLogger(__name__)

SERVICE = "atoll.Node"
WINDOW = 300.0
_MAX = 8 << 20


class Unreachable(FederationError):
    """A partner's node did not answer (not started yet, down, or the network dropped)."""


class Refused(AtollError):
    """A partner's node answered with a refusal; the text is its reason."""


Handler = Callable[[str, str, dict[str, Any], str], dict[str, Any]]


class ControlService:
    """The server side: authenticate, de-duplicate, dispatch to ``handler(type, sender, payload, event)``."""

    def __init__(self, cfg: NodeConfig, db: Database, handler: Handler):
        self.cfg, self.db, self.handler = cfg, db, handler
        self._pins: dict[str, str] = {}
        self._last_purge = 0.0

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Call": grpc.unary_unary_rpc_method_handler(self._on_call)})

    def _pin(self, partner: str) -> str:
        if partner not in self._pins:
            self._pins[partner] = cert_fingerprint(self.cfg.partner_certificate(partner))
        return self._pins[partner]

    def _on_call(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            env = wire.loads(request, max_bytes=_MAX)
            body_bytes, sig = env["body"], env["sig"]
            body = wire.loads(body_bytes, max_bytes=_MAX)
            kind, sender, receiver = body["type"], body["sender"], body["receiver"]
            ts, nonce, event, payload = body["ts"], body["nonce"], body["event"], body["payload"]
            if not (isinstance(body_bytes, bytes) and isinstance(sig, bytes) and
                    all(isinstance(v, str) for v in (kind, sender, receiver, nonce, event)) and
                    isinstance(ts, (int, float)) and isinstance(payload, dict)):
                raise WireError("bad field types")
        except (WireError, KeyError, TypeError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed control message: {e}")
        auth = context.auth_context()
        cn = (auth.get("x509_common_name") or [b""])[0].decode()
        if cn != sender:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"certificate names {cn!r}; it may not speak for {sender!r}")
        if self.cfg.partner(sender) is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{sender!r} is not a partner of node {self.cfg.name!r} (not in its config); "
                          f"its operator adds it with `atoll node add-partner`")
        pem = (auth.get("x509_pem_cert") or [b""])[0]
        try:
            presented = cert_fingerprint(pem)
        except ValueError:
            presented = ""
        if presented != self._pin(sender):
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{sender!r} presented a certificate other than the one pinned in "
                          f"{self.cfg.name!r}'s config; update the partner's card")
        if receiver != self.cfg.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"message for {receiver!r} reached {self.cfg.name!r}")
        if not self.cfg.partner_verifier(sender).verify(CONTROL, body_bytes, sig):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"the signature of {sender!r}'s message does not verify")
        now = time.time()
        if abs(now - float(ts)) > WINDOW:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"message from {sender!r} is {now - float(ts):+.0f} s off this node's clock "
                          f"(more than {WINDOW:.0f} s): replayed, or the clocks need syncing (NTP)")
        if not self._remember(nonce, sender, float(ts)):
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"replayed message from {sender!r} (its nonce was seen before); refused")
        try:
            reply = self.handler(kind, sender, payload, event)
            return wire.dumps({"ok": True, **(reply or {})})
        except AtollError as e:
            return wire.dumps({"ok": False, "error": str(e)})
        except Exception as e:  # noqa: BLE001 - a bug here must not leak its text to the partner
            log.exception("control message %s from %s failed", kind, sender)
            return wire.dumps({"ok": False, "error": f"internal error at {self.cfg.name!r} ({type(e).__name__})"})

    def _remember(self, nonce: str, sender: str, ts: float) -> bool:
        now = time.time()
        try:
            with self.db.session.begin() as s:
                if now - self._last_purge > 60:
                    s.execute(delete(Nonce).where(Nonce.expires < now))
                    self._last_purge = now
                s.add(Nonce(nonce=f"{sender}:{nonce}"[:64], sender=sender, expires=ts + 2 * WINDOW))
            return True
        except IntegrityError:
            return False


class ControlClient:
    """The client side: sign and send a message to a partner's node, over the endpoint's channel."""

    def __init__(self, cfg: NodeConfig, signer: Signer, channel: Callable[[str], grpc.Channel]):
        self.cfg, self.signer, self._channel = cfg, signer, channel

    def envelope(self, peer: str, kind: str, payload: dict[str, Any], event: str | None = None) -> bytes:
        body = wire.dumps({"type": kind, "sender": self.cfg.name, "receiver": peer, "ts": time.time(),
                           "nonce": secrets.token_hex(16), "event": event or secrets.token_hex(16),
                           "payload": payload})
        return wire.dumps({"body": body, "sig": self.signer.sign(CONTROL, body)})

    def send_raw(self, peer: str, request: bytes, timeout: float = 15.0) -> dict[str, Any]:
        if self.cfg.partner(peer) is None:
            raise AuthError(f"{peer!r} is not a partner of node {self.cfg.name!r}; add it with "
                            "`atoll node add-partner`")
        try:
            reply = self._channel(peer).unary_unary(f"/{SERVICE}/Call")(request, timeout=timeout)
        except grpc.RpcError as e:
            code = e.code()
            if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT,
                        grpc.StatusCode.UNIMPLEMENTED):
                raise Refused(f"node {peer!r} refused: {e.details()}") from None
            raise Unreachable(f"node {peer!r} at {self.cfg.partner(peer).address} did not answer "
                              f"({code.name})") from None
        out = wire.loads(reply, max_bytes=_MAX)
        if not out.get("ok"):
            raise Refused(f"node {peer!r}: {out.get('error', 'refused')}")
        return out

    def call(self, peer: str, kind: str, payload: dict[str, Any], event: str | None = None,
             timeout: float = 15.0) -> dict[str, Any]:
        return self.send_raw(peer, self.envelope(peer, kind, payload, event), timeout)
