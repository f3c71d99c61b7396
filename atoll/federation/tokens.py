"""Enrolment tokens: how a server's operator lets a client in without giving it a certificate.

The operator issues one token per client (``atoll hfl token issue --client phone_17``) and hands
it over out of band; the client presents it when it dials in (see :mod:`atoll.federation.dialin`).
A token reads ``atoll-hfl:CLIENT:ID:SECRET``: the client's name, a public token id (to list and
revoke it by) and 32 random bytes from the OS. The store keeps only ``SHA-256(ID:SECRET)``, so a
copy of the store lets nobody in; the secret is shown once, when it is issued.

:class:`TokenStore` is a JSON file (mode 0600) that the server re-reads when it changes, so a
token revoked from another shell is refused from the next connection on (and the server drops
a client already connected with it at its next check). A node with a database can give the
server anything with the same ``verify`` / ``clients`` methods.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Any

from atoll.errors import AuthError, ConfigError

PREFIX = "atoll-hfl"
#: client names a token (or a certificate) may carry
CLIENT_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_TOKEN = re.compile(rf"^{PREFIX}:([A-Za-z0-9_.\-]{{1,64}}):([0-9a-f]{{16}}):([A-Za-z0-9_\-]{{43}})$")


def check_client_name(name: str) -> str:
    if not isinstance(name, str) or not CLIENT_NAME.match(name):
        raise ConfigError(f"client name {name!r} must be 1-64 letters, digits or '_.-'")
    return name


def parse_token(token: str) -> tuple[str, str, str]:
    """``(client, token_id, secret)`` of a token string; :class:`AuthError` if it is not one."""
    m = _TOKEN.match(token.strip()) if isinstance(token, str) else None
    if m is None:
        raise AuthError(f"that is not an enrolment token (they read '{PREFIX}:CLIENT:ID:SECRET'); "
                        "copy the whole token the server's operator issued")
    return m.group(1), m.group(2), m.group(3)


def _digest(token_id: str, secret: str) -> str:
    return hashlib.sha256(f"{token_id}:{secret}".encode()).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class TokenStore:
    """The enrolment tokens of one server, kept hashed in a JSON file (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._tokens: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ file
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._mtime, self._tokens = None, {}
            return self._tokens
        if mtime != self._mtime:
            try:
                body = json.loads(self.path.read_text())
                tokens = body["tokens"]
                if not isinstance(tokens, dict):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"token store {self.path} is not a token file written by Atoll; "
                                  "restore it, or issue the tokens again into a new file") from None
            self._mtime, self._tokens = mtime, tokens
        return self._tokens

    def _save(self, tokens: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"format": "atoll-hfl-tokens/1", "tokens": tokens}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
        self._mtime, self._tokens = self.path.stat().st_mtime_ns, tokens

    # ------------------------------------------------------------------ operator
    def issue(self, client: str, note: str = "") -> str:
        """A new token for ``client``; returned once, stored only as a hash."""
        check_client_name(client)
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        with self._lock:
            tokens = dict(self._load())
            tokens[token_id] = {"client": client, "sha256": _digest(token_id, secret), "issued": _now(),
                                "revoked": None, "note": str(note)[:200]}
            self._save(tokens)
        return f"{PREFIX}:{client}:{token_id}:{secret}"

    def revoke(self, token_id: str | None = None, client: str | None = None) -> list[str]:
        """Revoke one token (by id) or every token of a client; returns the ids revoked."""
        if (token_id is None) == (client is None):
            raise ConfigError("revoke a token by its id, or every token of a client by the client's name")
        with self._lock:
            tokens = {k: dict(v) for k, v in self._load().items()}
            hit = [k for k, v in tokens.items() if v["revoked"] is None
                   and (k == token_id if token_id is not None else v["client"] == client)]
            if not hit:
                what = f"token {token_id!r}" if token_id is not None else f"a token of client {client!r}"
                raise ConfigError(f"{self.path} has no live {what}; `atoll hfl token list` shows them")
            for k in hit:
                tokens[k]["revoked"] = _now()
            self._save(tokens)
        return hit

    def list(self) -> list[dict[str, Any]]:
        """Every token's id, client, dates and note (never its hash)."""
        with self._lock:
            return [{"id": k, **{f: v[f] for f in ("client", "issued", "revoked", "note")}}
                    for k, v in sorted(self._load().items(), key=lambda kv: (kv[1]["client"], kv[1]["issued"]))]

    # ------------------------------------------------------------------ server
    def verify(self, token: str) -> tuple[str, str] | None:
        """``(client, token_id)`` if ``token`` is live, else None (unknown, revoked or altered)."""
        try:
            client, token_id, secret = parse_token(token)
        except AuthError:
            return None
        with self._lock:
            rec = self._load().get(token_id)
        if rec is None or rec["revoked"] is not None or rec["client"] != client:
            return None
        if not hmac.compare_digest(rec["sha256"], _digest(token_id, secret)):
            return None
        return client, token_id

    def live(self, token_id: str) -> bool:
        """Whether a token is still live (the server asks this of connected clients)."""
        with self._lock:
            rec = self._load().get(token_id)
        return rec is not None and rec["revoked"] is None

    def clients(self) -> list[str]:
        """Clients that hold at least one live token."""
        with self._lock:
            return sorted({v["client"] for v in self._load().values() if v["revoked"] is None})
