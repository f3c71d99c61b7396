"""Pluggable ciphers for SecureBoost histograms: ``plain`` (identity) and HE (``ou``, ``paillier``).

The protocol in :mod:`atoll.ml.vertical.secureboost` calls the same four
operations whatever the scheme:

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
spawned worker processes started once per fit; the guest decrypts in threads.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz

from atoll import wire
from atoll.crypto import he
from atoll.errors import ConfigError, CryptoError
from atoll.federation.launch import exit_with_parent
from atoll.ml.vertical.boosting_core import SLOT_BITS

log = logging.getLogger(__name__)

__all__ = ["PlainCipher", "HECipher", "make_guest_cipher", "make_host_cipher", "cipher_histogram"]


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

    def public(self) -> None:
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


def cipher_histogram(cs: list, codes: np.ndarray, n_bins: int, modulus) -> list:
    """Per (feature, bin) product of ciphertexts ``cs`` (aligned with ``codes`` rows) mod ``modulus``.

    Returns a flat list (feature-major) with ``None`` for empty bins. Rows are
    grouped by bin with a stable argsort per feature, then each group's
    ciphertexts are multiplied in one tight loop.
    """
    N = mpz(modulus)
    m, d = codes.shape
    out: list = []
    for f in range(d):
        col = codes[:, f]
        order = np.argsort(col, kind="stable").tolist()
        counts = np.bincount(col, minlength=n_bins).tolist()
        seq = [cs[i] for i in order]
        pos = 0
        for b in range(n_bins):
            c = counts[b]
            if c == 0:
                out.append(None)
                continue
            it = itertools.islice(seq, pos, pos + c)
            acc = next(it)
            for x in it:
                acc = acc * x % N
            out.append(acc)
            pos += c
    return out


class _Rows:
    """The round's row ciphertexts as a flat list of gmpy2 integers (host side)."""

    __slots__ = ("flat",)

    def __init__(self, flat: list):
        self.flat = flat


def compress(flat: list, width: int, per: int, modulus) -> list:
    """Pack groups of ``per`` bin ciphertexts into one: ``C = prod_l c_l ** (2 ** (l * width))`` (Horner)."""
    N = mpz(modulus)
    shift = mpz(1) << width
    packed = []
    for start in range(0, len(flat), per):
        acc = None
        for c in reversed(flat[start:start + per]):
            if acc is not None:
                acc = gmpy2.powmod(acc, shift, N)
            if c is not None:
                acc = c if acc is None else acc * c % N
        packed.append(mpz(1) if acc is None else acc)
    return packed


#: below this many (row, feature) additions a node's histogram is built in-process
PARALLEL_MIN_WORK = 20000
#: below this many rows the guest encrypts in-process
PARALLEL_MIN_ROWS = 1000

# worker-process state (one spawned process per core, started once per fit)
_W: dict[str, Any] = {}


def _worker_key(pk_bytes: bytes):
    if _W.get("pk_bytes") != pk_bytes:
        _W["pk"] = wire.loads(pk_bytes)
        _W["pk_bytes"] = pk_bytes
    return _W["pk"]


def _worker_encrypt(pk_bytes: bytes, ints: list) -> bytes:
    pk = _worker_key(pk_bytes)
    width = pk.cipher_bytes
    return b"".join(int(c).to_bytes(width, "big") for c in pk.encrypt_int(ints).data.ravel().tolist())


def _worker_warm(pk_bytes: bytes) -> int:
    """Start-up: decode the key and build its fixed-base tables once (one encryption)."""
    return len(_worker_key(pk_bytes).encrypt_int([0]).data.ravel().tolist())


def _worker_set(pk_bytes: bytes, raw: bytes) -> int:
    pk = _worker_key(pk_bytes)
    width = pk.cipher_bytes
    _W["N"] = mpz(pk.cipher_modulus)
    _W["cs"] = [mpz(int.from_bytes(raw[i:i + width], "big")) for i in range(0, len(raw), width)]
    return len(_W["cs"])


def _worker_hist(rows: np.ndarray, codes: np.ndarray, n_bins: int, width: int, per: int) -> list:
    cs, N = _W["cs"], _W["N"]
    flat = cipher_histogram([cs[i] for i in rows.tolist()], codes, n_bins, N)
    packed = compress(flat, width, per, N)
    zeros = _W["pk"].encrypt_int([0] * len(packed)).data.ravel().tolist()  # re-randomise
    return [gmpy2.to_binary(c * z % N) for c, z in zip(packed, zeros)]


def _to_bytes(cs: list, width: int) -> bytes:
    return b"".join(int(c).to_bytes(width, "big") for c in cs)


def _from_bytes(raw: bytes, width: int) -> list:
    return [mpz(int.from_bytes(raw[i:i + width], "big")) for i in range(0, len(raw), width)]


class _Pool:
    """``jobs`` single-worker spawned processes (so each task goes to a known worker)."""

    def __init__(self, jobs: int, pk):
        ctx = multiprocessing.get_context("spawn")
        self.workers = [ProcessPoolExecutor(1, mp_context=ctx, initializer=exit_with_parent, initargs=(os.getpid(),))
                        for _ in range(jobs)]
        self.pk_bytes = wire.dumps(pk)
        self.version: Any = None

    def submit(self, i: int, fn, *args):
        return self.workers[i].submit(fn, *args)

    def load(self, key: Any, cs: list, width: int) -> None:
        if self.version is key:
            return
        raw = _to_bytes(cs, width)
        futs = [self.submit(i, _worker_set, self.pk_bytes, raw) for i in range(len(self.workers))]
        [f.result() for f in futs]
        self.version = key

    def close(self) -> None:
        for w in self.workers:
            w.shutdown(wait=True, cancel_futures=True)


class HECipher:
    """Packed HE histograms under an :mod:`atoll.crypto.he` key (the guest holds the private key)."""

    def __init__(self, pk, sk=None, jobs: int = 1):
        self.pk = pk
        self.sk = sk
        self.scheme = pk.scheme
        self.jobs = max(int(jobs), 1)
        self.cap_bits = int(pk.max_int).bit_length() - 1  # packed values stay < 2**cap_bits
        self._pool: _Pool | None = None

    def pool(self) -> _Pool:
        if self._pool is None:
            self._pool = _Pool(self.jobs, self.pk)
        return self._pool

    def warm(self) -> None:
        """Start the worker processes now (setup), not inside the first tree."""
        if self.jobs > 1:
            pool = self.pool()
            futs = [pool.submit(i, _worker_warm, pool.pk_bytes) for i in range(self.jobs)]
            [f.result() for f in futs]

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
        pool, width = self.pool(), self.pk.cipher_bytes
        parts = np.array_split(np.arange(len(ints)), self.jobs)
        futs = [pool.submit(i, _worker_encrypt, pool.pk_bytes, ints[p[0]:p[-1] + 1]) for i, p in enumerate(parts)]
        data = np.empty(len(ints), dtype=object)
        data[:] = [c for f in futs for c in _from_bytes(f.result(), width)]
        from atoll.crypto.cipherarray import CipherArray

        return CipherArray(self.pk, data, 0, max(ints))

    # host
    def prepare(self, payload) -> "_Rows":
        if getattr(payload, "pk", None) != self.pk:
            raise CryptoError("the encrypted gradients are not under the guest's announced public key")
        return _Rows(payload.data.ravel().tolist())

    def histogram(self, payload, rows: np.ndarray, codes: np.ndarray, n_bins: int, n_slots: int) -> dict:
        """Packed encrypted histogram: features in blocks (one per worker), each block's bins compressed."""
        from atoll.crypto.cipherarray import CipherArray

        N = self.pk.cipher_modulus
        d = codes.shape[1]
        W = n_slots * SLOT_BITS
        per = max(self.cap_bits // W, 1)
        bound = min((1 << min(per * W, self.cap_bits)) - 1, int(self.pk.max_int))
        if self.jobs > 1 and d > 1 and len(rows) * d >= PARALLEL_MIN_WORK:
            blocks, packed = self._parallel_hist(payload, rows, codes, n_bins, W, per)
            data = np.empty(len(packed), dtype=object)
            data[:] = packed
            ct = CipherArray(self.pk, data, 0, bound)
        else:
            cs = payload.flat
            flat = cipher_histogram([cs[i] for i in rows.tolist()], codes, n_bins, N)
            blocks, packed = [d], compress(flat, W, per, N)
            data = np.empty(len(packed), dtype=object)
            data[:] = packed
            ct = CipherArray(self.pk, data, 0, bound).rerandomize()
        return {"blocks": [int(b) for b in blocks], "ct": ct}

    def _parallel_hist(self, payload, rows, codes, n_bins, width, per):
        pool = self.pool()
        pool.load(payload, payload.flat, self.pk.cipher_bytes)
        parts = [p for p in np.array_split(np.arange(codes.shape[1]), self.jobs) if len(p)]
        futs = [pool.submit(i, _worker_hist, rows, np.ascontiguousarray(codes[:, p]), n_bins, width, per)
                for i, p in enumerate(parts)]
        packed = []
        for f in futs:
            packed += [gmpy2.from_binary(v) for v in f.result()]
        return [len(p) for p in parts], packed

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
