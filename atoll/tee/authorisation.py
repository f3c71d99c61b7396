"""The data owner's signed authorisation for an enclave run, and its revocation list.

An :class:`Authorisation` says, for one encrypted data set (its key id): which workload
measurements may use it (and on which backends), for which job, for which operations
(``train`` / ``predict``) and algorithms, which partners may receive the result (each with
the X25519 key the result is encrypted to), and when it expires. The owner signs it with
Ed25519 (:class:`PartyKeys`); :class:`SignedAuthorisation` carries the exact signed bytes.
Its key-release service checks it — and its own :class:`RevocationList` — before every
release, so revoking stops the next run. The node (its grant store) issues these later;
this is the format it will sign.

What each party sees: an authorisation is public (names, measurements, public keys,
times); it reveals no data.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from atoll.errors import ConfigError
from atoll.tee.base import KeyReleaseRefused


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class PartyPublic(BaseModel):
    """A party's public keys: Ed25519 (signatures) and X25519 (results are encrypted to it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    sign_key: str
    box_key: str


class PartyKeys:
    """A party's private keys (Ed25519 signing, X25519 receiving). Never sent anywhere."""

    __wire_forbidden__ = True

    def __init__(self, name: str, sign_private: bytes, box_private: bytes):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.name = name
        self._sign = Ed25519PrivateKey.from_private_bytes(sign_private)
        self._sign_raw, self.box_private = sign_private, box_private

    @classmethod
    def generate(cls, name: str) -> "PartyKeys":
        return cls(name, os.urandom(32), os.urandom(32))

    def public(self) -> PartyPublic:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        from atoll.tee.envelope import x25519_public

        return PartyPublic(name=self.name,
                           sign_key=self._sign.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex(),
                           box_key=x25519_public(self.box_private).hex())

    def sign(self, body: bytes) -> bytes:
        return self._sign.sign(body)

    def save(self, path: str | Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"name": self.name, "sign_private": self._sign_raw.hex(),
                       "box_private": self.box_private.hex()}, f)

    @classmethod
    def load(cls, path: str | Path) -> "PartyKeys":
        try:
            d = json.loads(Path(path).read_text())
            return cls(d["name"], bytes.fromhex(d["sign_private"]), bytes.fromhex(d["box_private"]))
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"cannot read party keys from {path}: {type(e).__name__}; make them with "
                              "'atoll tee keygen'") from None


def verify_signature(public_hex: str, signature: bytes, body: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(signature, body)
        return True
    except (InvalidSignature, ValueError):
        return False


class Authorisation(BaseModel):
    """What the owner of one encrypted data set allows (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: os.urandom(16).hex())
    owner: str
    owner_key: str                      # Ed25519 public key (hex) that signs this
    key_id: str                         # the encrypted file's key id
    dataset: str
    job: str
    measurements: list[str] = Field(min_length=1)
    backends: list[str] = Field(default_factory=lambda: ["sgx-dcap"])
    operations: list[Literal["train", "predict"]] = Field(default_factory=lambda: ["train"])
    algorithms: list[str] = Field(default_factory=lambda: ["xgboost", "logistic_regression"])
    recipients: dict[str, str] = Field(default_factory=dict)  # party -> X25519 public key (hex)
    not_before: float = Field(default_factory=time.time)
    expires: float

    def sign(self, keys: PartyKeys) -> "SignedAuthorisation":
        if keys.public().sign_key != self.owner_key:
            raise ConfigError("sign the authorisation with the owner's own key (owner_key)")
        body = _canon(self.model_dump())
        return SignedAuthorisation(body=body, signature=keys.sign(body))


class SignedAuthorisation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    body: bytes
    signature: bytes

    def verify(self, owner_key: str | None = None, now: float | None = None) -> Authorisation:
        """The authorisation, if its signature verifies (with ``owner_key`` if given) and it is current."""
        try:
            auth = Authorisation.model_validate(json.loads(self.body))
        except Exception:
            raise KeyReleaseRefused("malformed authorisation") from None
        if owner_key is not None and auth.owner_key != owner_key:
            raise KeyReleaseRefused("authorisation signed by another key than the data owner's")
        if not verify_signature(auth.owner_key, self.signature, self.body):
            raise KeyReleaseRefused("authorisation signature does not verify")
        now = time.time() if now is None else now
        if not auth.not_before - 60 <= now <= auth.expires:
            raise KeyReleaseRefused("authorisation is expired or not yet valid; ask the owner for a new one")
        return auth

    def to_wire(self) -> dict[str, bytes]:
        return {"body": self.body, "signature": self.signature}

    @classmethod
    def from_wire(cls, d: Any) -> "SignedAuthorisation":
        if not isinstance(d, dict) or not isinstance(d.get("body"), bytes) or not isinstance(d.get("signature"), bytes):
            raise KeyReleaseRefused("malformed authorisation")
        return cls(body=d["body"], signature=d["signature"])


class RevocationList:
    """The ids of authorisations an owner withdrew, signed, in a file the key-release service reads."""

    def __init__(self, path: str | Path, keys: PartyKeys):
        self.path, self.keys = Path(path), keys
        self.revoked: set[str] = set()
        self.serial = 0
        if self.path.exists():
            d = json.loads(self.path.read_text())
            body = bytes.fromhex(d["body"])
            if not verify_signature(keys.public().sign_key, bytes.fromhex(d["signature"]), body):
                raise ConfigError(f"{self.path}: revocation list signature does not verify; restore it from backup")
            inner = json.loads(body)
            self.revoked, self.serial = set(inner["revoked"]), int(inner["serial"])

    def revoke(self, authorisation_id: str) -> None:
        self.revoked.add(authorisation_id)
        self.serial += 1
        body = _canon({"owner": self.keys.name, "revoked": sorted(self.revoked), "serial": self.serial,
                       "issued_at": time.time()})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"body": body.hex(), "signature": self.keys.sign(body).hex()}))
        os.replace(tmp, self.path)

    def __contains__(self, authorisation_id: str) -> bool:
        return authorisation_id in self.revoked
