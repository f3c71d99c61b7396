"""Shamir secret sharing over the prime field GF(2^521 - 1).

A secret ``s`` (an integer below the prime, or up to 64 bytes) becomes ``n``
shares ``(x_i, f(x_i))`` of a random polynomial ``f`` of degree ``t - 1`` with
``f(0) = s``; any ``t`` shares give ``s`` back by Lagrange interpolation at 0,
and ``t - 1`` shares reveal nothing about it (Shamir, "How to share a secret",
CACM 1979).

Used by secure aggregation (:mod:`atoll.secure.secagg`) to share each client's
X25519 mask key and self-mask seed among its neighbours. Pure arithmetic: no
I/O, no parties. Coefficients come from ``secrets`` (OS entropy). Arithmetic is
done with ``gmpy2`` integers when available (several times faster than Python
ints for the 521-bit modulus).

The field is the Mersenne prime ``2^521 - 1``, large enough to hold any
512-bit secret, so a 32-byte key needs no splitting.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

from atoll.errors import CryptoError

try:  # gmpy2 is a runtime dependency; fall back to Python ints if it is missing
    from gmpy2 import mpz as _mpz
except ImportError:  # pragma: no cover
    _mpz = int

#: the field modulus, the Mersenne prime 2^521 - 1
PRIME = (1 << 521) - 1
#: the largest secret (in bytes) that :func:`split_bytes` accepts
MAX_SECRET_BYTES = 64


@dataclass(frozen=True)
class Share:
    """One share: the point ``x`` (1..n, never 0) and the value ``f(x)`` mod PRIME."""

    x: int
    y: int


def _check_params(n: int, t: int) -> None:
    if not 1 <= t <= n:
        raise CryptoError(f"Shamir threshold t={t} must be between 1 and the number of shares n={n}")
    if n >= PRIME:
        raise CryptoError("too many shares for the field")


def split(secret: int, n: int, t: int, xs: Sequence[int] | None = None) -> list[Share]:
    """Share ``secret`` into ``n`` shares, any ``t`` of which reconstruct it.

    ``xs`` are the evaluation points (default ``1..n``); they must be distinct,
    non-zero and below the prime.
    """
    _check_params(n, t)
    if not 0 <= secret < PRIME:
        raise CryptoError("Shamir secret must be a non-negative integer below 2^521 - 1; "
                          "use split_bytes for byte strings")
    xs = list(range(1, n + 1)) if xs is None else [int(x) for x in xs]
    if len(xs) != n:
        raise CryptoError(f"got {len(xs)} share points for n={n} shares")
    if len(set(xs)) != n or any(not 0 < x < PRIME for x in xs):
        raise CryptoError("share points must be distinct, non-zero and below the field prime")
    coeffs = [_mpz(secret)] + [_mpz(secrets.randbelow(PRIME)) for _ in range(t - 1)]
    p = _mpz(PRIME)
    out = []
    for x in xs:
        xm = _mpz(x)
        acc = _mpz(0)
        for c in reversed(coeffs):  # Horner
            acc = (acc * xm + c) % p
        out.append(Share(x, int(acc)))
    return out


def combine(shares: Iterable[Share], t: int | None = None) -> int:
    """Reconstruct the secret from at least ``t`` shares (Lagrange at 0).

    With ``t`` given, exactly the first ``t`` shares are used and fewer raise
    :class:`CryptoError`; without it every share given is used.
    """
    shares = list(shares)
    if t is not None:
        if len(shares) < t:
            raise CryptoError(f"need {t} shares to reconstruct the secret, got {len(shares)}")
        shares = shares[:t]
    if not shares:
        raise CryptoError("no shares to reconstruct from")
    xs = tuple(s.x for s in shares)
    if len(set(xs)) != len(xs):
        raise CryptoError("duplicate share points: each share must come from a different holder")
    p = _mpz(PRIME)
    secret = _mpz(0)
    for c, sh in zip(lagrange_at_zero(xs), shares):
        secret = (secret + c * _mpz(sh.y)) % p
    return int(secret)


@lru_cache(maxsize=4096)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple:
    """Lagrange coefficients ``l_i(0)`` for the points ``xs`` (cached: a secure-aggregation
    round reconstructs many secrets from shares held by the same clients)."""
    p = _mpz(PRIME)
    out = []
    for i, xi in enumerate(xs):
        num = _mpz(1)
        den = _mpz(1)
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (-xj) % p
                den = den * (xi - xj) % p
        out.append(num * pow(den, -1, p) % p)
    return tuple(out)


def split_bytes(secret: bytes, n: int, t: int, xs: Sequence[int] | None = None) -> list[Share]:
    """Share a byte string of at most 64 bytes (length is recorded in the encoding)."""
    if len(secret) > MAX_SECRET_BYTES:
        raise CryptoError(f"secret of {len(secret)} bytes is longer than {MAX_SECRET_BYTES}")
    # prefix a 1 byte so leading zero bytes survive the round trip
    return split(int.from_bytes(b"\x01" + secret, "big"), n, t, xs)


def combine_bytes(shares: Iterable[Share], t: int | None = None) -> bytes:
    """Inverse of :func:`split_bytes`."""
    value = combine(shares, t)
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    if not raw or raw[0] != 1 or len(raw) > MAX_SECRET_BYTES + 1:
        raise CryptoError("shares do not reconstruct a valid byte secret (wrong or corrupted shares)")
    return raw[1:]
