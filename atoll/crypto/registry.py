"""The HE backend registry: the one table of additively homomorphic schemes, and where they meet the codec.

A backend module (:mod:`atoll.crypto.paillier`, :mod:`atoll.crypto.ou`) registers itself once, when it is
imported, with :func:`register`: its name, key generation, key classes, the wire name of its public key
and its key sizes. :mod:`atoll.crypto.he` imports the built-in backends (one line each), so adding a
backend touches its own module and that one line. Everything that picks a scheme by name reads from here:
``he.generate_keypair``, ``he.scheme_names()`` (job and estimator parameter types), SecureBoost, and the
decoding of keys and ciphertexts.

The codec (:mod:`atoll.wire`) sits below: this module registers with it each backend's public key and the
scheme-independent :class:`~atoll.crypto.cipherarray.CipherArray`; the codec never imports a scheme.
Decoding a received ``CipherArray`` looks its ``scheme`` field up in this closed table (nothing received
chooses what is imported).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from atoll import wire
from atoll.crypto import cipherarray
from atoll.crypto.base import PrivateKeyBase, PublicKeyBase
from atoll.errors import CryptoError

__all__ = ["HEBackend", "register", "get", "names", "key_from_fields"]


@dataclass(frozen=True)
class HEBackend:
    """One additively homomorphic scheme.

    ``keygen(key_bits, precision_bits, mul_precision_bits) -> (public_key, private_key)``;
    ``public_key`` subclasses :class:`~atoll.crypto.base.PublicKeyBase` with ``scheme == name`` and
    ``_fields`` / ``_from_fields`` (its validated wire form); ``wire_name`` is that form's codec name.
    """

    name: str
    public_key: type
    private_key: type
    keygen: Callable[[int, int | None, int | None], tuple[Any, Any]]
    wire_name: str
    min_key_bits: int
    default_key_bits: int = 2048
    summary: str = ""


_BACKENDS: dict[str, HEBackend] = {}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def register(backend: HEBackend) -> HEBackend:
    """Add ``backend`` to the table and its public key to the codec (registering the same backend twice is a no-op)."""
    if not _NAME.fullmatch(backend.name):
        raise CryptoError(f"HE scheme name {backend.name!r} must be lowercase letters, digits and '_'")
    if not (isinstance(backend.public_key, type) and issubclass(backend.public_key, PublicKeyBase)
            and backend.public_key.scheme == backend.name):
        raise CryptoError(f"{backend.name}: public_key must subclass PublicKeyBase with scheme = {backend.name!r}")
    if not (isinstance(backend.private_key, type) and issubclass(backend.private_key, PrivateKeyBase)):
        raise CryptoError(f"{backend.name}: private_key must subclass PrivateKeyBase")
    if not 0 < backend.min_key_bits <= backend.default_key_bits:
        raise CryptoError(f"{backend.name}: need 0 < min_key_bits <= default_key_bits")
    old = _BACKENDS.get(backend.name)
    if old is not None:
        if old == backend:
            return old
        raise CryptoError(f"HE scheme {backend.name!r} is already registered (by {old.public_key.__module__})")
    cls = backend.public_key

    def from_fields(d: dict) -> PublicKeyBase:
        if type(d) is not dict:
            raise ValueError("public key fields must be a dict")
        return cls._from_fields(d)

    wire.register(cls, backend.wire_name, lambda pk: pk._fields(), from_fields)
    _BACKENDS[backend.name] = backend
    return backend


def get(name: str) -> HEBackend:
    """The backend called ``name``; a clear error listing the known ones otherwise."""
    b = _BACKENDS.get(name) if isinstance(name, str) else None
    if b is None:
        raise CryptoError(f"unknown HE scheme {name!r}; known schemes: {', '.join(names()) or 'none'} "
                          "(the built-in ones are loaded by importing atoll.crypto.he)")
    return b


def names() -> list[str]:
    """Registered scheme names, in registration order."""
    return list(_BACKENDS)


def key_from_fields(scheme: str, fields: dict) -> PublicKeyBase:
    """Rebuild (and validate) a public key of ``scheme`` from its wire fields."""
    return get(scheme).public_key._from_fields(fields)


def _unregister(name: str) -> None:
    """Drop a backend from the table (tests only; its wire names stay registered with the codec)."""
    _BACKENDS.pop(name, None)


wire.register(cipherarray.CipherArray, "atoll.he.CipherArray", cipherarray.to_fields,
              lambda d: cipherarray.from_fields(d, key_from_fields))
