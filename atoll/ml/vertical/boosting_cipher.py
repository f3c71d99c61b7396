"""Pluggable ciphers for SecureBoost histograms: ``plain`` (identity) and HE (``ou``, ``paillier``).

The protocol in :mod:`atoll.ml.vertical.secureboost` calls the same operations
whatever the scheme (plus ``prepare``: the host's check and decoding of a round's payload):

1. guest ``encrypt_rows(slots)``: per-row integer slots (quantised g_k, h_k of
   the outputs in one chunk) -> a payload for the hosts. HE packs every row's
   slots into ONE plaintext ``sum_j v_j 2**(j*w)`` (``w`` = ``SLOT_BITS``; the top
   slot is a hessian >= 1, so the packed row is positive) and encrypts it;
2. host ``histogram(payload, rows, codes, n_bins)``: sums of the row values per
   (feature, bin) over the node's rows. HE multiplies ciphertexts (homomorphic
   addition) bin by bin, then packs ``L`` bin sums into one ciphertext by Horner's
   rule ``C = (...(c_{L-1}^{2^W} c_{L-2})^{2^W} ...) c_0`` (cipher compression,
   ``W = slots * w``), and re-randomises the result;
3. guest ``decode(hist_payload, d, n_bins)`` -> float64 array (d, n_bins, slots)
   of integer-valued sums, identical for every scheme.

The plaintext scheme sends the quantised slots in the clear and sums them with
``np.bincount``: the same protocol and messages, no encryption (for exact
comparison and for measuring what the encryption costs).

With ``jobs > 1`` the guest encrypts, and each host builds, packs and
re-randomises its histograms (one block of features per worker), in that many
spawned worker processes started once per fit (:mod:`.boosting_worker`); the
guest decrypts with the HE engine's own worker pool (``decrypt_int(jobs=...)``).
This works under ``launch(mode="processes")`` too: party processes are not
daemonic and may start workers, which exit with their party.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from atoll.crypto import he
from atoll.crypto.cipherarray import CipherArray
from atoll.errors import ConfigError, CryptoError
from atoll.ml.vertical.boosting_core import SLOT_BITS
from atoll.ml.vertical.boosting_worker import WorkerPool, cipher_histogram, compress

log = logging.getLogger(__name__)

__all__ = ["PlainCipher", "HECipher", "make_guest_cipher", "make_host_cipher", "cipher_histogram", "plain_histogram"]


def plain_histogram(values: np.ndarray, codes: np.ndarray, n_bins: int) -> np.ndarray:
    """(d, n_bins, S) sums of ``values`` (m, S) per feature and bin code ``codes`` (m, d)."""
    m, d = codes.shape
    s = values.shape[1]
    flat = (codes.astype(np.int64) + (np.arange(d, dtype=np.int64) * n_bins)[None, :]).ravel()
    out = np.empty((d * n_bins, s))
    for j in range(s):
        out[:, j] = np.bincount(flat, weights=np.repeat(values[:, j], d), minlength=d * n_bins)
    return out.reshape(d, n_bins, s)


class PlainCipher:
    """Identity cipher: the plaintext mode (no security; reference and timing only)."""

    scheme = "plain"

    def __init__(self) -> None:
        self.stats: dict[str, int] = {}  # no HE work to count

    def public(self) -> None:
        return None

    def close(self) -> None:
        return None

    def warm(self) -> None:
        return None

    def slots_per_chunk(self, n_slots: int) -> int:
        return n_slots

    def encrypt_rows(self, slots: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(slots, dtype=np.float64)

    def prepare(self, payload: np.ndarray) -> np.ndarray:
        return np.asarray(payload, dtype=np.float64)

    def histogram(self, payload: np.ndarray, rows: np.ndarray, codes: np.ndarray, n_bins: int,
                  n_slots: int) -> np.ndarray:
        return plain_histogram(payload[rows], codes, n_bins)

    def decode(self, hist: Any, d: int, n_bins: int, n_slots: int) -> np.ndarray:
        return np.asarray(hist, dtype=np.float64).reshape(d, n_bins, n_slots)


# ----------------------------------------------------------------------------- HE

def pack_rows(slots: np.ndarray, w: int = SLOT_BITS) -> list[int]:
    """Pack integer-valued rows (m, S) into Python ints ``sum_j v_j << (j*w)`` (signed slots)."""
    ints = slots.astype(np.int64)
    cols = [c.tolist() for c in ints.T]
    out = cols[-1]
    for c in reversed(cols[:-1]):
        out = [(a << w) + b for a, b in zip(out, c)]
    return out


def unpack_values(values: list[int], n_slots: int, w: int = SLOT_BITS) -> np.ndarray:
    """Inverse of the packing for sums (centred slots): (len(values), n_slots) float64."""
    mask = (1 << w) - 1
    half = 1 << (w - 1)
    full = 1 << w
    out = np.empty((len(values), n_slots))
    for i, v in enumerate(values):
        v = int(v)
        for j in range(n_slots):
            s = v & mask
            if s >= half:
                s -= full
            out[i, j] = s
            v = (v - s) >> w
        if v != 0:
            raise CryptoError("a packed histogram value has bits above its slots: the sums overflowed")
    return out


class _Rows:
    """The round's row ciphertexts as a flat list of gmpy2 integers (host side)."""

    __slots__ = ("flat",)

    def __init__(self, flat: list):
        self.flat = flat


#: below this many (row, feature) additions a node's histogram is built in-process
PARALLEL_MIN_WORK = 20000
#: below this many rows the guest encrypts in-process
PARALLEL_MIN_ROWS = 1000


def _cipher_array(pk, values: list, bound: int) -> CipherArray:
    data = np.empty(len(values), dtype=object)
    data[:] = values
    return CipherArray(pk, data, 0, bound)


class HECipher:
    """Packed HE histograms under an :mod:`atoll.crypto.he` key (the guest holds the private key).

    ``stats`` counts the work done in worker processes (``parallel_encryptions``:
    rounds whose rows were encrypted there; ``parallel_histograms``: node
    histograms built there) and in this process (``histograms``).
    """

    def __init__(self, pk, sk=None, jobs: int = 1):
        self.pk = pk
        self.sk = sk
        self.scheme = pk.scheme
        self.jobs = max(int(jobs), 1)
        self.cap_bits = int(pk.max_int).bit_length() - 1  # packed values stay < 2**cap_bits
        self._pool: WorkerPool | None = None
        self.stats = {"parallel_encryptions": 0, "parallel_histograms": 0, "histograms": 0}

    def pool(self) -> WorkerPool:
        if self._pool is None:
            self._pool = WorkerPool(self.jobs, self.pk)
        return self._pool

    def warm(self) -> None:
        """Start the worker processes now (setup), not inside the first tree."""
        if self.jobs > 1:
            self.pool().warm()

    def public(self):
        return self.pk

    def slots_per_chunk(self, n_slots: int) -> int:
        """How many (g, h) slots fit in one row plaintext (a whole number of outputs)."""
        per = self.cap_bits // SLOT_BITS
        per -= per % 2
        if per < 2:
            raise ConfigError(f"a {self.pk.key_bits}-bit {self.scheme} key cannot hold one (g, h) pair "
                              f"of {SLOT_BITS}-bit slots; use a larger key_bits")
        return min(per, n_slots)

    # guest
    def encrypt_rows(self, slots: np.ndarray):
        ints = pack_rows(slots)
        if self.jobs == 1 or len(ints) < PARALLEL_MIN_ROWS:
            return self.pk.encrypt_int(ints)
        self.stats["parallel_encryptions"] += 1
        return _cipher_array(self.pk, self.pool().encrypt(ints), max(ints))

    # host
    def prepare(self, payload) -> "_Rows":
        if getattr(payload, "pk", None) != self.pk:
            raise CryptoError("the encrypted gradients are not under the guest's announced public key")
        return _Rows(payload.data.ravel().tolist())

    def histogram(self, payload, rows: np.ndarray, codes: np.ndarray, n_bins: int, n_slots: int) -> dict:
        """Packed encrypted histogram: features in blocks (one per worker), each block's bins compressed."""
        d = codes.shape[1]
        W = n_slots * SLOT_BITS
        per = max(self.cap_bits // W, 1)
        bound = min((1 << min(per * W, self.cap_bits)) - 1, int(self.pk.max_int))
        if self.jobs > 1 and d > 1 and len(rows) * d >= PARALLEL_MIN_WORK:
            pool = self.pool()
            pool.load(payload, payload.flat)
            blocks, packed = pool.histograms(rows, codes, n_bins, W, per)  # re-randomised by the workers
            ct = _cipher_array(self.pk, packed, bound)
            self.stats["parallel_histograms"] += 1
        else:
            N = self.pk.cipher_modulus
            cs = payload.flat
            flat = cipher_histogram([cs[i] for i in rows.tolist()], codes, n_bins, N)
            blocks = [d]
            ct = _cipher_array(self.pk, compress(flat, W, per, N), bound).rerandomize()
            self.stats["histograms"] += 1
        return {"blocks": [int(b) for b in blocks], "ct": ct}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # guest
    def decode(self, hist: dict, d: int, n_bins: int, n_slots: int) -> np.ndarray:
        if self.sk is None:
            raise CryptoError("only the guest (key owner) can decode histograms")
        W = n_slots * SLOT_BITS
        per = max(self.cap_bits // W, 1)
        blocks = [int(b) for b in hist["blocks"]]
        need = sum(-(-b * n_bins // per) for b in blocks)
        if sum(blocks) != d or len(hist["ct"]) != need:
            raise CryptoError(f"histogram layout mismatch: {blocks} features in {len(hist['ct'])} ciphertexts, "
                              f"expected {d} features in {need}")
        ints = self.sk.decrypt_int(hist["ct"], jobs=self.jobs).ravel().tolist()
        mask = (1 << W) - 1
        bins: list[int] = []
        pos = 0
        for b in blocks:
            k = -(-b * n_bins // per)
            block_bins: list[int] = []
            for v in ints[pos:pos + k]:
                if v < 0:
                    raise CryptoError("a packed histogram decrypted to a negative value: the sums overflowed")
                for _ in range(per):
                    block_bins.append(v & mask)
                    v >>= W
            bins += block_bins[:b * n_bins]
            pos += k
        return unpack_values(bins, n_slots).reshape(d, n_bins, n_slots)


def make_guest_cipher(scheme: str, key_bits: int, jobs: int = 1):
    """The guest's cipher: a fresh key pair for HE schemes."""
    if scheme == "plain":
        return PlainCipher()
    if scheme not in ("ou", "paillier"):
        raise ConfigError(f"unknown scheme {scheme!r}; use 'ou' (default), 'paillier' or 'plain'")
    pk, sk = he.generate_keypair(scheme, key_bits)
    return HECipher(pk, sk, jobs)


def make_host_cipher(scheme: str, pk, jobs: int = 1):
    if scheme == "plain":
        return PlainCipher()
    if pk is None or getattr(pk, "scheme", None) != scheme:
        raise CryptoError(f"expected a {scheme} public key from the guest, got {type(pk).__name__}")
    return HECipher(pk, None, jobs)
