"""The ring Z_2^64 with fixed point: the arithmetic under Atoll's secret sharing.

Pure functions, no I/O, no parties. A ring element is a ``numpy.uint64`` (arithmetic wraps);
signed values are two's complement (``view(np.int64)``). A real ``x`` is encoded with ``f``
fractional bits as ``round(x * 2**f) mod 2**64``.

    u = encode(x, f)            # float -> uint64 (raises RingOverflow if |x| * 2**f >= 2**62)
    x = decode(u, f)            # uint64 -> float64
    signed(u), unsigned(i)      # int64 <-> uint64 views
    PRG(seed).ring(shape)       # AES-128-CTR expansion of a 16-byte seed (correlated randomness)
    random_ring(shape)          # OS entropy, uniform in Z_2^64
    matmul(a, b)                # exact (a @ b) mod 2**64 (BLAS float64 limbs for big products)
    trunc_local(share, f, party_index)   # SecureML's local truncation of one share (see below)

``matmul`` reads both operands as four 16-bit limbs (a ``uint16`` view, no shifting), so every
limb-product sum over k <= 2**21 terms is an exact float64 integer; the ten limb products whose
shift is below 64 bits take four BLAS float64 calls, recombined mod 2**64. Small or
matrix-vector products use numpy's exact (wrapping) integer matmul instead.

Truncation by ``f`` bits of a two-party sharing ``x = x0 + x1``:

* ``trunc_local`` (SecureML, Mohassel-Zhang 2017, Thm. 1): party 0 shifts ``x0`` arithmetically,
  party 1 computes ``-((-x1) >> f)``. No communication. If ``|x| < 2**l`` the result is
  ``floor(x / 2**f)`` or that plus one (error at most one unit in the last place) except with
  probability at most ``2**(l + 1 - 64)`` per element, in which case it is off by about
  ``2**(64 - f)`` (a wrap). With ``f = 16`` and values of up to ``2**40`` that is ``2**-23`` per
  element: ~1 failure in 8M truncations, which is why the session defaults to the pair-based
  truncation of :mod:`atoll.secure.mpc.tensor` (same one-ulp error, never a wrap while
  ``|x| < 2**62``) and detects the wraps that escape (checked reveal).
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from atoll.errors import CryptoError

RING_BITS = 64
#: the largest |raw value| the protocols accept: probabilistic truncation needs x in (-2^62, 2^62)
SAFE_BITS = 62
DEFAULT_FRAC_BITS = 16


class RingOverflow(CryptoError):
    """A fixed-point value does not fit the ring (or left its range during a computation)."""


# ------------------------------------------------------------------------------ encoding
def encode(x: np.ndarray | float, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    """Reals -> ring elements with ``frac_bits`` fractional bits (round to nearest)."""
    a = np.asarray(x, dtype=np.float64) * float(2 ** frac_bits)
    if a.size and not np.all(np.isfinite(a)):
        raise RingOverflow("cannot encode NaN or infinite values; clean the data first")
    if a.size and np.abs(a).max() >= 2.0 ** SAFE_BITS:
        raise RingOverflow(f"a value of magnitude {np.abs(a).max() / 2 ** frac_bits:.3g} does not fit "
                           f"Z_2^64 with {frac_bits} fractional bits; scale the data or lower frac_bits")
    return np.rint(a).astype(np.int64).view(np.uint64)


def encode_int(x: np.ndarray | int) -> np.ndarray:
    """Integers (signed, |x| < 2**63) -> ring elements, exactly."""
    return np.asarray(x, dtype=np.int64).view(np.uint64) if np.ndim(x) else \
        np.asarray(np.int64(x)).view(np.uint64)


def decode(u: np.ndarray, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    """Ring elements -> float64 (two's complement, divided by 2**frac_bits)."""
    return signed(u).astype(np.float64) / float(2 ** frac_bits)


def signed(u: np.ndarray) -> np.ndarray:
    return np.asarray(u, dtype=np.uint64).view(np.int64)


def unsigned(i: np.ndarray) -> np.ndarray:
    return np.asarray(i, dtype=np.int64).view(np.uint64)


# ------------------------------------------------------------------------------ randomness
def random_ring(shape: tuple[int, ...] | int) -> np.ndarray:
    """Uniform ring elements from OS entropy."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(os.urandom(8 * n), dtype=np.uint64).reshape(shape).copy()


class PRG:
    """AES-128-CTR stream from a 16-byte seed: both ends of a seed draw the same ring elements.

    Used by the dealer provider (the dealer and one party share a seed, so only corrections
    travel). Draws are consumed in order; two PRGs with the same seed stay in step as long
    as they draw the same sizes in the same order.
    """

    def __init__(self, seed: bytes):
        if len(seed) != 16:
            raise CryptoError("a PRG seed is 16 bytes")
        self._enc = Cipher(algorithms.AES(seed), modes.CTR(b"\x00" * 16)).encryptor()

    def bytes(self, n: int) -> bytes:
        return self._enc.update(bytes(n))

    def ring(self, shape: tuple[int, ...] | int) -> np.ndarray:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        n = int(np.prod(shape, dtype=np.int64))
        out = np.empty(n + 2, dtype=np.uint64)   # update_into wants block_size - 1 spare bytes
        self._enc.update_into(bytes(8 * n), memoryview(out).cast("B"))
        return out[:n].reshape(shape)


def new_seed() -> bytes:
    return os.urandom(16)


# ------------------------------------------------------------------------------ matmul
#: below this many multiply-adds numpy's (exact, wrapping) integer matmul is faster than limbs
LIMB_THRESHOLD = 200_000
#: matrix-vector-like products (a side below this) stay with numpy: limb splitting costs more
LIMB_MIN_SIDE = 32


#: float64 holds k products of two 16-bit limbs exactly while 32 + log2(k) <= 53
LIMB_MAX_K = 1 << 21


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact ``(a @ b) mod 2**64`` for uint64 2-D (or 1-D) operands."""
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    vec_a, vec_b = a.ndim == 1, b.ndim == 1
    A = a[None, :] if vec_a else a
    B = b[:, None] if vec_b else b
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise CryptoError(f"matmul shapes {a.shape} and {b.shape} do not align")
    m, k = A.shape
    n = B.shape[1]
    if m * k * n < LIMB_THRESHOLD or min(m, n) < LIMB_MIN_SIDE or k > LIMB_MAX_K:
        out = A @ B
    else:
        out = _limb_matmul(A, B)
    if vec_a:
        out = out[0]
    if vec_b:
        out = out[..., 0]
    return out


def _limb_matmul(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Four 16-bit limbs per operand (a uint16 view: no shifts), the limb products whose shift is
    below 64 bits (i + j <= 3: ten of sixteen) in four BLAS calls, recombined mod 2**64."""
    m, k = A.shape
    n = B.shape[1]
    Av = np.ascontiguousarray(A).view(np.uint16).reshape(m, k, 4)
    Bv = np.ascontiguousarray(B).view(np.uint16).reshape(k, n, 4)
    if np.little_endian is False:  # pragma: no cover - limbs are read little-endian
        Av, Bv = Av[..., ::-1], Bv[..., ::-1]
    right = np.concatenate([Bv[..., j].astype(np.float64) for j in range(4)], axis=1)  # (k, 4n)
    out = np.zeros((m, n), dtype=np.uint64)
    for i in range(4):
        prod = (Av[..., i].astype(np.float64) @ right[:, :(4 - i) * n]).astype(np.uint64)
        for j in range(4 - i):
            out += prod[:, j * n:(j + 1) * n] << np.uint64(16 * (i + j))
    return out


# ------------------------------------------------------------------------------ truncation
def trunc_local(share: np.ndarray, frac_bits: int, party_index: int) -> np.ndarray:
    """SecureML's local truncation of this party's share (see the module docstring)."""
    s = np.int64(frac_bits)
    share = np.asarray(share, dtype=np.uint64)
    if party_index == 0:
        return unsigned(signed(share) >> s)
    neg = np.uint64(0) - share
    return np.uint64(0) - unsigned(signed(neg) >> s)
