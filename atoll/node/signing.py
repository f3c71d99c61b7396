"""Ed25519 signatures of a node over canonical JSON, with one domain string per kind of document.

A node signs what it commits to — grants, job proposals, control messages, audit chain
heads — with its Ed25519 key (``signing.key``, made by ``atoll node init``); partners
verify with the public key from the node's card in their config. Each kind of document
is signed under its own domain (``atoll-grant-v1``, ``atoll-proposal-v1``, ...), so a
signature on one kind can never be passed off as another.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from atoll.errors import AuthError

GRANT = b"atoll-grant-v1"
PROPOSAL = b"atoll-proposal-v1"
CONTROL = b"atoll-control-v1"
AUDIT_HEAD = b"atoll-audit-head-v1"


def canonical(obj: Any) -> bytes:
    """The one byte string a JSON-able document signs as (sorted keys, no spaces, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, what: str = "value") -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise AuthError(f"{what} is not valid base64") from None


class Signer:
    """A node's signing key."""

    def __init__(self, key: SigningKey):
        self._key = key
        self.public = Verifier(key.verify_key)

    @classmethod
    def generate(cls) -> "Signer":
        return cls(SigningKey.generate())  # OS entropy

    @classmethod
    def load(cls, path: str | Path) -> "Signer":
        p = Path(path)
        try:
            return cls(SigningKey(unb64(p.read_text().strip(), f"signing key {p}")))
        except OSError as e:
            raise AuthError(f"cannot read the node's signing key {p}: {e.strerror}; make one with "
                            "`atoll node init`") from None

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.write_text(b64(bytes(self._key)) + "\n")
        p.chmod(0o600)

    def sign(self, domain: bytes, data: bytes) -> bytes:
        return self._key.sign(domain + b"\0" + data).signature

    def sign_doc(self, domain: bytes, doc: Any) -> str:
        return b64(self.sign(domain, canonical(doc)))


class Verifier:
    """A node's public key: checks its signatures."""

    def __init__(self, key: VerifyKey):
        self._key = key

    @classmethod
    def from_text(cls, text: str, what: str = "signing key") -> "Verifier":
        raw = unb64(text.strip(), what)
        if len(raw) != 32:
            raise AuthError(f"{what} is not an Ed25519 public key (32 bytes)")
        return cls(VerifyKey(raw))

    def text(self) -> str:
        return b64(bytes(self._key))

    def verify(self, domain: bytes, data: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(domain + b"\0" + data, signature)
            return True
        except (BadSignatureError, ValueError, TypeError):
            return False

    def verify_doc(self, domain: bytes, doc: Any, signature: str) -> bool:
        try:
            sig = base64.b64decode(signature, validate=True)
        except (ValueError, TypeError):
            return False
        return self.verify(domain, canonical(doc), sig)
