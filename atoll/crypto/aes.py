"""AES as the symmetric workhorse of OT extension and garbling, vectorised over numpy arrays.

Three things, all on 128-bit blocks held as ``(..., 2)`` little-endian ``uint64`` arrays
(word 0 = the low 64 bits):

* :func:`prg_rows`: AES-CTR keyed by a 16-byte seed, one pseudo-random row per seed,
  starting at any block offset, so a seed can be stretched again and again without ever
  reusing a counter (the PRG ``G`` of IKNP03).
* :func:`permute`: the fixed-key permutation ``pi = AES_K`` with a public key ``K``
  (:data:`FIXED_KEY`), batched: one ``cryptography`` call per array.
* :func:`tccr`: the tweakable circular correlation-robust hash of Guo, Katz, Wang, Yu
  ("Efficient and secure multiparty computation from fixed-key block ciphers", S&P 2020,
  section 7.3, ``MMO^sigma``)::

      H(x, i) = pi(sigma(x) XOR i) XOR sigma(x),   sigma(x_lo, x_hi) = (x_lo XOR x_hi, x_lo)

  ``sigma`` is a linear orthomorphism (``sigma(x) XOR x`` is also a permutation), which is
  what makes ``H(x XOR Delta, i)`` look random even to someone who knows many ``x`` and
  ``x XOR Delta`` pairs of a secret ``Delta`` — exactly the situation of free-XOR garbled
  circuits (half-gates, ZRE15) and of IKNP's ``q_j`` / ``q_j XOR s``. The tweak ``i`` is
  a full 128-bit block: its low word is a per-use counter, its high word a domain tag, so
  OT extension and garbling never hash under the same tweak.

Throughput is set by OpenSSL (AES-NI / VAES): ``update_into`` into a preallocated buffer
runs at several GB/s for any array size, where ``update`` (which allocates) drops to under
1 GB/s past a few hundred kilobytes. Encryptor objects are per thread (two parties of an
in-process test run in two threads of one process).

Pure functions: no I/O, no parties. Keys and seeds come from the caller (OS entropy).
"""

from __future__ import annotations

import hashlib
import os
import threading

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from atoll.errors import CryptoError

__all__ = ["BLOCK", "FIXED_KEY", "permute", "prg_rows", "random_bits", "random_blocks", "random_words", "sigma", "tccr"]

BLOCK = 16
#: the public key of the fixed-key permutation (any fixed value works; this one is
#: derived from a label so that it is reproducible and evidently not chosen to be special)
FIXED_KEY = hashlib.sha256(b"atoll fixed-key AES, version 1").digest()[:16]


class _Ecb(threading.local):
    """One ECB encryptor per key and per thread (cipher contexts are not shared)."""

    def __init__(self) -> None:
        self.by_key: dict[bytes, object] = {}

    def get(self, key: bytes):
        enc = self.by_key.get(key)
        if enc is None:
            enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
            if len(self.by_key) > 64:
                self.by_key.clear()
            self.by_key[key] = enc
        return enc


_ECB = _Ecb()


def _blocks_view(x: np.ndarray) -> memoryview:
    return memoryview(x).cast("B")


def permute(x: np.ndarray, key: bytes = FIXED_KEY) -> np.ndarray:
    """``AES_key`` on every 128-bit block of ``x`` (``(..., 2) uint64``); a new array."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    if x.shape[-1:] != (2,):
        raise CryptoError(f"AES works on (..., 2) uint64 blocks, got shape {x.shape}")
    n = x.size // 2
    out = np.empty(n * 2 + 2, dtype=np.uint64)  # update_into wants one spare block
    if n:
        _ECB.get(key).update_into(_blocks_view(x), _blocks_view(out))
    return out[: n * 2].reshape(x.shape)


def sigma(x: np.ndarray) -> np.ndarray:
    """The orthomorphism ``(x_lo, x_hi) -> (x_lo XOR x_hi, x_lo)`` of GKWY20."""
    out = np.empty_like(x)
    np.bitwise_xor(x[..., 0], x[..., 1], out=out[..., 0])
    out[..., 1] = x[..., 0]
    return out


def tccr(x: np.ndarray, tweak_lo, tweak_hi: int, *, sx: np.ndarray | None = None) -> np.ndarray:
    """``H(x, i) = pi(sigma(x) ^ i) ^ sigma(x)`` with tweak ``i = (tweak_lo, tweak_hi)``.

    ``x``: ``(..., 2) uint64``; ``tweak_lo``: an int or a ``uint64`` array broadcastable to
    ``x[..., 0]`` (the per-use counter); ``tweak_hi``: the domain tag. ``sx`` may pass a
    precomputed ``sigma(x)`` (``sigma`` is linear, so callers hashing ``x`` and
    ``x ^ Delta`` compute it once).
    """
    s = sigma(x) if sx is None else sx
    y = s.copy()
    y[..., 0] ^= np.asarray(tweak_lo, dtype=np.uint64)
    y[..., 1] ^= np.uint64(tweak_hi)
    h = permute(y)
    h ^= s
    return h


def prg_rows(seeds: np.ndarray, nbytes: int, offset_blocks: int = 0) -> np.ndarray:
    """Stretch each 16-byte seed into ``nbytes`` pseudo-random bytes: ``(k, nbytes) uint8``.

    Row ``i`` is AES-CTR under key ``seeds[i]`` with the 128-bit big-endian counter starting
    at ``offset_blocks``; asking again with a larger offset continues the same stream, so a
    caller that advances the offset by what it used never sees a block twice.
    """
    seeds = np.ascontiguousarray(seeds, dtype=np.uint8)
    if seeds.ndim != 2 or seeds.shape[1] != BLOCK:
        raise CryptoError(f"PRG seeds must be a (k, 16) uint8 array, got {seeds.shape}")
    if nbytes % BLOCK:
        raise CryptoError(f"PRG output length {nbytes} must be a multiple of 16 bytes")
    k = seeds.shape[0]
    # one flat buffer: row i is written at i * nbytes; the spare block update_into asks for
    # overlaps the start of row i + 1, which is written afterwards
    flat = np.empty(k * nbytes + BLOCK, dtype=np.uint8)
    zeros = bytes(nbytes)
    counter = int(offset_blocks).to_bytes(BLOCK, "big")
    for i in range(k):
        enc = Cipher(algorithms.AES(seeds[i].tobytes()), modes.CTR(counter)).encryptor()
        enc.update_into(zeros, memoryview(flat[i * nbytes: (i + 1) * nbytes + BLOCK]))
    return flat[: k * nbytes].reshape(k, nbytes)


def random_words(n: int) -> np.ndarray:
    """``n`` uniform ``uint64`` words: AES-CTR keyed by 16 fresh bytes of OS entropy.

    (``os.urandom`` runs at a few hundred MB/s; a labels-and-masks workload needs gigabytes,
    so bulk randomness is a CSPRNG seeded from the OS, a fresh key per call.)
    """
    n = int(n)
    if n <= 64:
        return np.frombuffer(os.urandom(8 * n), dtype=np.uint64).copy()
    nbytes = -(-8 * n // BLOCK) * BLOCK
    seed = np.frombuffer(os.urandom(BLOCK), dtype=np.uint8).reshape(1, BLOCK)
    return prg_rows(seed, nbytes).view(np.uint64).reshape(-1)[:n].copy()


def random_bits(n: int) -> np.ndarray:
    """``n`` uniform bits as a ``uint8`` array of 0/1 (see :func:`random_words`)."""
    return np.unpackbits(random_words(-(-int(n) // 64)).view(np.uint8), bitorder="little")[: int(n)]


def random_blocks(shape: tuple[int, ...] | int) -> np.ndarray:
    """Uniform 128-bit blocks (see :func:`random_words`): ``(*shape, 2) uint64``."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = int(np.prod(shape, dtype=np.int64))
    return random_words(2 * n).reshape(*shape, 2)
