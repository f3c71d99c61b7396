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

:func:`split_bytes_vec` / :func:`combine_bytes_vec` share short byte strings
over the small field GF(2^31 - 1) instead, as 30-bit chunks each with its own
polynomial, vectorised in numpy: secure aggregation uses them (two 32-byte
secrets per client, shared with every neighbour, each round).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

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


def lagrange_at_zero(xs: tuple[int, ...]) -> tuple:
    """Lagrange coefficients ``l_i(0)`` for the points ``xs``."""
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


# --------------------------------------------------------------------------- vectorised sharing of short keys
#
# Secure aggregation shares two 32-byte secrets per client with each of its neighbours; in the
# big field above that is a Python loop of t * n 521-bit multiplications per secret. Here a
# secret is cut into 30-bit chunks and each chunk is shared with its own random polynomial over
# GF(2^31 - 1), all chunks and points at once in numpy (values < 2^31, products < 2^62 fit in
# uint64). Sharing each chunk independently keeps Shamir's guarantee: any t - 1 shares are
# uniformly random and say nothing about any chunk.

#: the prime of the vectorised sharing, the Mersenne prime 2^31 - 1
VEC_PRIME = (1 << 31) - 1
_CHUNK_BITS = 30


def vec_chunks(nbytes: int) -> int:
    """Field elements that hold a secret of ``nbytes`` bytes."""
    return -(-8 * nbytes // _CHUNK_BITS)


def bytes_to_field(secret: bytes) -> np.ndarray:
    """A byte string -> its 30-bit chunks (least significant first) as uint64."""
    value = int.from_bytes(secret, "big")
    mask = (1 << _CHUNK_BITS) - 1
    return np.array([(value >> (_CHUNK_BITS * i)) & mask for i in range(vec_chunks(len(secret)))],
                    dtype=np.uint64)


def field_to_bytes(chunks: np.ndarray, nbytes: int) -> bytes:
    """Inverse of :func:`bytes_to_field`; raises if the chunks are not a valid ``nbytes``-byte secret."""
    chunks = np.asarray(chunks, dtype=np.uint64)
    if chunks.shape != (vec_chunks(nbytes),) or (chunks >> np.uint64(_CHUNK_BITS)).any():
        raise CryptoError("shares do not reconstruct a valid byte secret (wrong or corrupted shares)")
    value = 0
    for i, c in enumerate(chunks.tolist()):
        value |= int(c) << (_CHUNK_BITS * i)
    if value >> (8 * nbytes):
        raise CryptoError("shares do not reconstruct a valid byte secret (wrong or corrupted shares)")
    return value.to_bytes(nbytes, "big")


def random_field(shape: tuple[int, ...]) -> np.ndarray:
    """Uniform elements of GF(2^31 - 1) from OS entropy (31-bit draws, the value 2^31 - 1 redrawn)."""
    size = int(np.prod(shape))
    out = np.frombuffer(secrets.token_bytes(4 * size), dtype=np.uint32) & np.uint32(VEC_PRIME)
    out = out.astype(np.uint64)
    bad = out == VEC_PRIME
    while bad.any():
        fresh = np.frombuffer(secrets.token_bytes(4 * int(bad.sum())), dtype=np.uint32) & np.uint32(VEC_PRIME)
        out[bad] = fresh.astype(np.uint64)
        bad = out == VEC_PRIME
    return out.reshape(shape)


def _check_points(xs: Sequence[int], n: int | None = None) -> np.ndarray:
    xs = [int(x) for x in xs]
    if n is not None and len(xs) != n:
        raise CryptoError(f"got {len(xs)} share points for n={n} shares")
    if len(set(xs)) != len(xs) or any(not 0 < x < VEC_PRIME for x in xs):
        raise CryptoError("share points must be distinct, non-zero and below 2^31 - 1")
    return np.asarray(xs, dtype=np.uint64)


def split_field_vec(values: np.ndarray, xs: Sequence[int], t: int) -> np.ndarray:
    """Share each element of ``values`` (in GF(2^31 - 1)) with its own degree ``t - 1`` polynomial.

    Returns an array of shape ``(len(xs),) + values.shape``: row ``i`` holds the shares at ``xs[i]``.
    """
    values = np.asarray(values, dtype=np.uint64)
    _check_params(len(xs), t)
    pts = _check_points(xs)
    if (values >= VEC_PRIME).any():
        raise CryptoError("vectorised Shamir values must be below 2^31 - 1")
    coeffs = random_field((t - 1, values.size))
    return share_field_polys(values.reshape(-1), coeffs, pts).reshape((len(pts),) + values.shape)


def share_field_polys(values: np.ndarray, coeffs: np.ndarray, xs: Sequence[int]) -> np.ndarray:
    """Shares at ``xs`` of the polynomials ``values[j] + sum_d coeffs[d - 1, j] x^d``: shape ``(len(xs), m)``.

    A dealer that keeps ``coeffs`` can hand a share of the same secrets to a holder that
    joins later; ``coeffs`` must be uniform (:func:`random_field`), ``t - 1`` rows.
    """
    pts = _check_points(xs)
    return (eval_field_polys(coeffs, pts) + np.asarray(values, dtype=np.uint64).reshape(1, -1)) % np.uint64(VEC_PRIME)


_P64 = np.uint64(VEC_PRIME)
_LO16 = np.uint64(0xFFFF)
_S16 = np.uint64(16)
_BLOCK = 128  # columns per matrix product: small products stay on one BLAS thread (faster on a busy box)


@lru_cache(maxsize=256)
def _powers(xs: tuple[int, ...], degree: int) -> tuple[np.ndarray, np.ndarray]:
    """``x_i^d mod p`` for ``d = 1..degree`` as two float64 limbs (high 15 bits, low 16 bits)."""
    x = np.asarray(xs, dtype=np.uint64)
    out = np.empty((len(x), degree), dtype=np.uint64)
    acc = np.ones(len(x), dtype=np.uint64)
    for d in range(degree):
        acc = acc * x % _P64
        out[:, d] = acc
    hi, lo = (out >> _S16).astype(np.float64), (out & _LO16).astype(np.float64)
    hi.setflags(write=False)
    lo.setflags(write=False)
    return hi, lo


def eval_field_polys(coeffs: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``sum_d coeffs[d - 1, j] * x_i^d mod p`` for every point ``i`` and column ``j`` (no constant term).

    Exact: each operand is split into a 15-bit and a 16-bit limb, so every float64 product
    is below 2^32 and every sum of up to 2^20 of them is an exact integer; ``2^32 = 2 mod p``
    recombines the limbs. About 5x faster than Horner's rule in numpy for a secure-aggregation
    round's shapes (measured here).
    """
    degree = coeffs.shape[0]
    if degree == 0:
        return np.zeros((len(xs), coeffs.shape[1]), dtype=np.uint64)
    vh, vl = _powers(tuple(int(x) for x in xs), degree)
    out = np.empty((len(xs), coeffs.shape[1]), dtype=np.uint64)
    for j in range(0, coeffs.shape[1], _BLOCK):
        c = coeffs[:, j:j + _BLOCK]
        ch, cl = (c >> _S16).astype(np.float64), (c & _LO16).astype(np.float64)
        hh = (vh @ ch).astype(np.uint64)
        mid = (vh @ cl + vl @ ch).astype(np.uint64)
        ll = (vl @ cl).astype(np.uint64)
        # value = hh 2^32 + mid 2^16 + ll, and 2^32 = 2 (mod 2^31 - 1); each term < 2^58 here
        out[:, j:j + _BLOCK] = (hh * np.uint64(2) % _P64 + (mid % _P64 << _S16) + ll) % _P64
    return out


@lru_cache(maxsize=4096)
def lagrange_at_zero_vec(xs: tuple[int, ...]) -> np.ndarray:
    """Lagrange coefficients ``l_i(0)`` over GF(2^31 - 1), read-only (cached: a secure-aggregation
    round reconstructs many secrets from shares held by the same clients)."""
    p = np.uint64(VEC_PRIME)
    x = np.asarray(xs, dtype=np.uint64)
    # l_i(0) = prod_{j != i} x_j / (x_j - x_i): the denominators for every i at once, one column per step
    diff = (x[None, :] + p - x[:, None]) % p
    np.fill_diagonal(diff, 1)
    den = x.copy()  # x_i * prod_{j != i} (x_j - x_i), so that l_i(0) = prod_j x_j / den_i
    for j in range(len(x)):
        den = den * diff[:, j] % p
    total = 1
    for xj in xs:
        total = total * xj % VEC_PRIME
    out = np.array([total * pow(int(d), -1, VEC_PRIME) % VEC_PRIME for d in den.tolist()], dtype=np.uint64)
    out.setflags(write=False)  # shared by every caller through the cache
    return out


def combine_field_vec(xs: Sequence[int], ys: np.ndarray) -> np.ndarray:
    """Reconstruct from the shares ``ys[i]`` at the points ``xs[i]`` (all of them are used)."""
    ys = np.asarray(ys, dtype=np.uint64)
    if len(xs) != len(ys) or not len(xs):
        raise CryptoError(f"got {len(xs)} share points for {len(ys)} shares")
    pts = tuple(int(v) for v in _check_points(xs))
    if (ys >= VEC_PRIME).any():
        raise CryptoError("share values must be below 2^31 - 1")
    lag = lagrange_at_zero_vec(pts).reshape((-1,) + (1,) * (ys.ndim - 1))
    return ((lag * ys) % np.uint64(VEC_PRIME)).sum(axis=0) % np.uint64(VEC_PRIME)


def _pow_field(a: np.ndarray, e: int) -> np.ndarray:
    """``a^e mod 2^31 - 1`` element-wise (square and multiply; every product < 2^62)."""
    out = np.ones_like(a)
    base = a % _P64
    while e:
        if e & 1:
            out = out * base % _P64
        base = base * base % _P64
        e >>= 1
    return out


def combine_field_many(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Reconstruct many secrets at once, each from its own set of points.

    ``xs``: shape ``(S, t)``, the share points of each secret (distinct within a row, non-zero);
    ``ys``: shape ``(S, t, m)``, the shares. Returns shape ``(S, m)``. The Lagrange coefficients
    of all rows are computed together (one batched Fermat inversion), so reconstructing the
    self-mask seeds of a whole secure-aggregation round costs a few numpy passes, not one
    Python loop per client.
    """
    x = np.asarray(xs, dtype=np.uint64)
    ys = np.asarray(ys, dtype=np.uint64)
    if x.ndim != 2 or ys.ndim != 3 or ys.shape[:2] != x.shape:
        raise CryptoError(f"shares of shape {ys.shape} do not match points of shape {x.shape}")
    if x.size and (x.min() == 0 or x.max() >= VEC_PRIME):
        raise CryptoError("share points must be non-zero and below 2^31 - 1")
    if (ys >= VEC_PRIME).any():
        raise CryptoError("share values must be below 2^31 - 1")
    s_, t = x.shape
    srt = np.sort(x, axis=1)
    if t > 1 and (srt[:, 1:] == srt[:, :-1]).any():
        raise CryptoError("duplicate share points: each share must come from a different holder")
    # l_i(0) = prod_{j != i} x_j / (x_j - x_i) = prod_j x_j / (x_i prod_{j != i} (x_j - x_i))
    den = x.copy()
    total = np.ones(s_, dtype=np.uint64)
    for j in range(t):
        diff = (x[:, j:j + 1] + _P64 - x) % _P64  # x_j - x_i for every i of every row
        diff[:, j] = 1
        den = den * diff % _P64
        total = total * x[:, j] % _P64
    lag = total[:, None] * _pow_field(den, VEC_PRIME - 2) % _P64
    return (lag[:, :, None] * ys % _P64).sum(axis=1) % _P64


def split_bytes_vec(secrets_: Sequence[bytes], xs: Sequence[int], t: int) -> np.ndarray:
    """Share several equal-length byte strings at once.

    Returns uint64 shares of shape ``(len(xs), len(secrets_), vec_chunks(nbytes))``.
    """
    if not secrets_ or len({len(s) for s in secrets_}) != 1:
        raise CryptoError("split_bytes_vec needs one or more secrets of equal length")
    return split_field_vec(np.stack([bytes_to_field(s) for s in secrets_]), xs, t)


def combine_bytes_vec(xs: Sequence[int], ys: np.ndarray, nbytes: int, t: int | None = None) -> bytes:
    """One ``nbytes``-byte secret from its shares ``ys`` (shape ``(k, vec_chunks(nbytes))``) at ``xs``.

    With ``t`` given, exactly the first ``t`` shares are used and fewer raise :class:`CryptoError`.
    """
    xs, ys = list(xs), np.asarray(ys, dtype=np.uint64)
    if t is not None:
        if len(xs) < t:
            raise CryptoError(f"need {t} shares to reconstruct the secret, got {len(xs)}")
        xs, ys = xs[:t], ys[:t]
    return field_to_bytes(combine_field_vec(xs, ys), nbytes)
