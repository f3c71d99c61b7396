"""Oblivious-transfer primitives: base OT on Curve25519, the IKNP / KKRT matrix algebra, hashes.

Pure functions (no I/O, no parties); the protocols that move these values between two
parties are in :mod:`atoll.secure.mpc.ot`.

**Base OT: Chou-Orlandi "simplest OT" (CO15, LATINCRYPT 2015) on edwards25519**, batched
with one sender key for all transfers, semi-honest::

    sender:   a <- Z_L,  A = a*G                                   -> A
    receiver: b_i <- Z_L, B_i = b_i*G + c_i*A,  k_i = H(i, A, B_i, b_i*A)   -> B_i
    sender:   k0_i = H(i, A, B_i, a*B_i),  k1_i = H(i, A, B_i, a*(B_i - A))

``B_i`` is a uniform group element whatever ``c_i`` is (perfect receiver privacy);
``k_{1-c_i}`` needs ``a*b_i*G`` shifted by ``a*A``, i.e. computational Diffie-Hellman
(sender privacy in the random-oracle model). Why edwards25519 and not X25519 from
``cryptography``: X25519's API is the Montgomery ladder on u-coordinates only (scalar times
point, no point addition), and every base OT (Naor-Pinkas, CO15, Masny-Rindal) needs a group
addition such as ``b*G + A``. libsodium (through PyNaCl, already a dependency) exposes the
same curve in Edwards form with addition, subtraction, scalar multiplication and a
prime-order-subgroup check, so the protocol runs in the prime-order group and small-subgroup
points from a cheating peer are refused (:func:`check_point`). 512 base OTs take about 0.1 s
a side here; OT extension makes them the only public-key work of a session.

**IKNP OT extension (Ishai, Kilian, Nissim, Petrank, CRYPTO 2003)**, width ``k`` (128 for
1-out-of-2; 512 for KKRT): after ``k`` base OTs with the roles swapped (the extension
receiver holds seed pairs ``(k0_i, k1_i)``, the extension sender holds ``k_{s_i}`` for its
secret ``s``), each batch of ``n`` OTs is

    receiver: T = G(k0) (k x n bits), u^i = G(k0_i) ^ G(k1_i) ^ R^i          -> u
    sender:   Q^i = G(k_{s_i}) ^ s_i * u^i   so that row j:  q_j = t_j ^ (r_j & s)

where ``R`` is the receiver's choice matrix: its choice bit repeated in every row for
1-out-of-2 (``q_j = t_j ^ r_j * s``, a correlated OT with global ``Delta = s``), a
pseudo-random codeword ``C(x_j)`` for KKRT. :func:`iknp_receiver` and
:func:`iknp_sender` are those two lines plus the transpose.

**KKRT16 (Kolesnikov, Kumaresan, Rosulek, Trieu, CCS 2016)**: with ``R`` the codewords of a
pseudo-random code ``C(x) = AES_k1(x) || ... || AES_k4(x)`` (512 bits, :func:`prc`), the
sender can evaluate ``F_j(x) = H(j, q_j ^ (C(x) & s))`` on *any* 128-bit ``x`` while the
receiver learns ``F_j(x_j)`` only: a batched oblivious PRF. ``H`` must be a random oracle on
512-bit rows (:func:`row_hash`, BLAKE2b); the sum of per-block fixed-key AES hashes that
some implementations use leaves a meet-in-the-middle shortcut, so it is not used here.

The OT outputs of 1-out-of-2 are hashed with the tweakable correlation-robust hash of
:mod:`atoll.crypto.aes` (:func:`ot_hash`), tweak = (global OT index, domain | block).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from nacl import bindings as sodium
from nacl.exceptions import RuntimeError as SodiumError

from atoll.crypto import aes
from atoll.crypto.bitmatrix import transpose
from atoll.errors import CryptoError

__all__ = ["KAPPA", "KKRT_WIDTH", "POINT_BYTES", "check_point", "co15_receiver", "co15_sender_keys",
           "co15_sender_start", "iknp_receiver", "iknp_sender", "ot_hash", "prc", "prc_keys",
           "row_hash"]

#: computational security parameter: base OTs and IKNP columns of 1-out-of-2 OT
KAPPA = 128
#: KKRT code length in bits (four AES blocks; distance >= 128 between any two codewords
#: except with negligible probability)
KKRT_WIDTH = 512
POINT_BYTES = 32
#: high word of the hash tweak for OT outputs (garbling uses another, see atoll.crypto.garble)
DOMAIN_OT = 0x4F54 << 48


# ------------------------------------------------------------------------------ base OT (CO15)
def _scalar() -> bytes:
    return sodium.crypto_core_ed25519_scalar_reduce(os.urandom(64))


def check_point(p: bytes, what: str) -> bytes:
    """Refuse anything but a canonical point of the prime-order subgroup (not the identity)."""
    if not isinstance(p, bytes) or len(p) != POINT_BYTES or not sodium.crypto_core_ed25519_is_valid_point(p):
        raise CryptoError(f"base OT: the peer's {what} is not a valid edwards25519 point of the "
                          f"prime-order group; the peer is not running this protocol correctly")
    return p


def _mul(scalar: bytes, point: bytes) -> bytes:
    try:
        return sodium.crypto_scalarmult_ed25519_noclamp(scalar, point)
    except SodiumError as e:  # identity result: only for a small-order or invalid input
        raise CryptoError("base OT: scalar multiplication gave the identity; the peer sent a "
                          "degenerate point") from e


def _key(tag: bytes, i: int, a_pt: bytes, b_pt: bytes, shared: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=aes.BLOCK, key=tag[:64], person=b"atoll-co15-ot")
    h.update(i.to_bytes(8, "little"))
    h.update(a_pt)
    h.update(b_pt)
    h.update(shared)
    return h.digest()


def co15_sender_start() -> tuple[bytes, bytes]:
    """The sender's secret scalar ``a`` and public ``A = a*G``."""
    a = _scalar()
    return a, sodium.crypto_scalarmult_ed25519_base_noclamp(a)


def co15_receiver(a_pt: bytes, choices: np.ndarray, tag: bytes) -> tuple[list[bytes], np.ndarray]:
    """Receiver's points ``B_i`` (to send) and keys ``k_{c_i}`` as a ``(n, 16) uint8`` array."""
    check_point(a_pt, "base-OT key A")
    points, keys = [], []
    for i, c in enumerate(np.asarray(choices, dtype=np.uint8).tolist()):
        b = _scalar()
        bg = sodium.crypto_scalarmult_ed25519_base_noclamp(b)
        both = (bg, sodium.crypto_core_ed25519_add(bg, a_pt))  # compute both: no branch on c
        points.append(both[c])
        keys.append(_key(tag, i, a_pt, both[c], _mul(b, a_pt)))
    return points, np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, aes.BLOCK).copy()


def co15_sender_keys(a: bytes, a_pt: bytes, points: list[bytes], tag: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Both keys of every transfer: ``(k0, k1)``, each ``(n, 16) uint8``."""
    k0, k1 = [], []
    for i, b_pt in enumerate(points):
        check_point(b_pt, f"base-OT point B[{i}]")
        k0.append(_key(tag, i, a_pt, b_pt, _mul(a, b_pt)))
        k1.append(_key(tag, i, a_pt, b_pt, _mul(a, sodium.crypto_core_ed25519_sub(b_pt, a_pt))))
    as_arr = lambda ks: np.frombuffer(b"".join(ks), dtype=np.uint8).reshape(-1, aes.BLOCK).copy()
    return as_arr(k0), as_arr(k1)


# ------------------------------------------------------------------------------ IKNP algebra
def iknp_receiver(g0: np.ndarray, g1: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``u = G(k0) ^ G(k1) ^ R`` (to send) and the receiver's rows ``t_j`` (``(n, k/64) uint64``).

    ``g0``, ``g1``: ``(k, W) uint64`` PRG rows; ``r``: the choice words ``(W,)`` (1-out-of-2:
    one choice bit per column, the same in every row) or a ``(k, W)`` matrix (KKRT codewords).
    """
    u = g0 ^ g1
    u ^= r
    return u, transpose(g0)


def iknp_sender(gs: np.ndarray, s_bits: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The sender's rows ``q_j = t_j ^ (r_j & s)``: transpose of ``G(k_{s_i}) ^ s_i * u^i``."""
    mask = np.uint64(0) - np.asarray(s_bits, dtype=np.uint64)
    return transpose(gs, xor=u, row_mask=mask)


def ot_hash(rows: np.ndarray, index: np.ndarray, words: int, domain: int = DOMAIN_OT) -> np.ndarray:
    """``words`` uint64 per OT from 128-bit rows: TCCR blocks with tweak ``(index, domain | b)``."""
    nb = (words + 1) // 2
    sx = aes.sigma(rows)
    out = np.empty((rows.shape[0], nb, 2), dtype=np.uint64)
    for b in range(nb):
        out[:, b] = aes.tccr(rows, index, domain | b, sx=sx)
    return out.reshape(rows.shape[0], 2 * nb)[:, :words]


# ------------------------------------------------------------------------------ KKRT16
def prc_keys(seed: bytes) -> list[bytes]:
    """The four AES keys of the pseudo-random code, derived from a seed both parties agreed."""
    d = hashlib.blake2b(seed, digest_size=64, person=b"atoll-kkrt-prc").digest()
    return [d[16 * i: 16 * (i + 1)] for i in range(KKRT_WIDTH // 128)]


def prc(x: np.ndarray, keys: list[bytes]) -> np.ndarray:
    """Codewords ``C(x) = AES_k1(x) || ... || AES_k4(x)``: ``(n, 2)`` -> ``(n, 8) uint64``."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise CryptoError(f"KKRT inputs are 128-bit blocks, an (n, 2) uint64 array; got {x.shape}")
    return np.concatenate([aes.permute(x, k) for k in keys], axis=1)


def row_hash(rows: np.ndarray, index: np.ndarray, key: bytes, out_words: int = 2) -> np.ndarray:
    """Random oracle on KKRT rows: ``BLAKE2b(key || row_j || j)`` truncated to ``out_words`` uint64.

    ``rows``: ``(n, 8) uint64``; ``index``: ``(n,)`` tweaks (the OT index); ``key``: a 32-byte
    session salt (public to both parties: it separates sessions, it is not a secret); ``out_words``
    at most 8. The salt goes into the input rather than BLAKE2's key parameter: 104 bytes fit one
    compression, where a keyed hash spends a second one on the key block.
    """
    if not 1 <= out_words <= 8:
        raise CryptoError(f"row_hash gives 1 to 8 words (64 bytes), asked for {out_words}")
    if len(key) != 32:
        raise CryptoError("row_hash takes a 32-byte session salt")
    n, width = rows.shape
    buf = np.empty((n, 4 + width + 1), dtype=np.uint64)
    buf[:, :4] = np.frombuffer(key, dtype=np.uint64)
    buf[:, 4:4 + width] = rows
    buf[:, -1] = index
    raw = memoryview(buf.tobytes())
    step = buf.shape[1] * 8
    size = 8 * out_words
    b2 = hashlib.blake2b
    out = b"".join([b2(raw[i:i + step], digest_size=size, person=b"atoll-kkrt-row").digest()
                    for i in range(0, n * step, step)])
    return np.frombuffer(out, dtype=np.uint64).reshape(n, out_words).copy()
