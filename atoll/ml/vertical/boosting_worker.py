"""Worker processes of SecureBoost's HE histograms (one party's own CPU cores; nothing here talks to a peer).

The kernels are pure functions of gmpy2 integers:

* :func:`cipher_histogram`: per (feature, bin) product of the node's row
  ciphertexts (homomorphic sum), one modular multiplication per (row, feature);
* :func:`compress`: Horner packing of ``per`` bin ciphertexts into one,
  ``C = prod_l c_l ** (2 ** (l * width))`` (cipher compression).

A party that asks for ``n_jobs > 1`` starts :class:`WorkerPool`: that many
spawned single-worker processes, one task per worker, each holding the round's
row ciphertexts once (``load``). Work crosses to them as bytes and numpy arrays
over local pipes (this party's own processes, never the federation wire); the
public key travels as its wire encoding.

Start-up cost: a spawned worker imports only this module (``atoll.ml.vertical``
loads its models lazily, so scikit-learn and the other models stay out: several
seconds of CPU per worker on a 2-core machine). Keep this module's imports
light: no ``atoll.ml`` imports here.
"""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz

from atoll import wire
from atoll._process import die_with_parent

__all__ = ["cipher_histogram", "compress", "WorkerPool"]


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


def to_bytes(cs: list, width: int) -> bytes:
    return b"".join(int(c).to_bytes(width, "big") for c in cs)


def from_bytes(raw: bytes, width: int) -> list:
    return [mpz(int.from_bytes(raw[i:i + width], "big")) for i in range(0, len(raw), width)]


# ----------------------------------------------------------------------------- worker side

_W: dict[str, Any] = {}  # worker-process state: the key and the round's row ciphertexts


def _key(pk_bytes: bytes):
    if _W.get("pk_bytes") != pk_bytes:
        _W["pk"] = wire.loads(pk_bytes)
        _W["pk_bytes"] = pk_bytes
    return _W["pk"]


def _warm(pk_bytes: bytes) -> int:
    """Start-up: decode the key and build its fixed-base tables once (one encryption)."""
    return len(_key(pk_bytes).encrypt_int([0]).data.ravel().tolist())


def _encrypt(pk_bytes: bytes, ints: list) -> bytes:
    pk = _key(pk_bytes)
    return to_bytes(pk.encrypt_int(ints).data.ravel().tolist(), pk.cipher_bytes)


def _set_rows(pk_bytes: bytes, raw: bytes) -> int:
    pk = _key(pk_bytes)
    _W["N"] = mpz(pk.cipher_modulus)
    _W["cs"] = from_bytes(raw, pk.cipher_bytes)
    return len(_W["cs"])


def _histogram(rows: np.ndarray, codes: np.ndarray, n_bins: int, width: int, per: int) -> list:
    """One block of features of a node: binned sums, compressed, re-randomised (as gmpy2 binary)."""
    cs, N = _W["cs"], _W["N"]
    flat = cipher_histogram([cs[i] for i in rows.tolist()], codes, n_bins, N)
    packed = compress(flat, width, per, N)
    return [gmpy2.to_binary(c) for c in _W["pk"]._rerandomize_flat(packed)]


# ----------------------------------------------------------------------------- party side

class WorkerPool:
    """``jobs`` single-worker spawned processes (so each task goes to a known worker)."""

    def __init__(self, jobs: int, pk):
        ctx = multiprocessing.get_context("spawn")
        self.workers = [ProcessPoolExecutor(1, mp_context=ctx, initializer=die_with_parent)
                        for _ in range(jobs)]
        self.pk_bytes = wire.dumps(pk)
        self.width = int(pk.cipher_bytes)
        self.version: Any = None

    def __len__(self) -> int:
        return len(self.workers)

    def submit(self, i: int, fn, *args) -> Future:
        return self.workers[i].submit(fn, *args)

    def warm(self) -> None:
        [f.result() for f in [self.submit(i, _warm, self.pk_bytes) for i in range(len(self))]]

    def encrypt(self, ints: list) -> list:
        """Encrypt raw integers, split evenly over the workers; gmpy2 ciphertexts in order."""
        parts = [p for p in np.array_split(np.arange(len(ints)), len(self)) if len(p)]
        futs = [self.submit(i, _encrypt, self.pk_bytes, ints[p[0]:p[-1] + 1]) for i, p in enumerate(parts)]
        return [c for f in futs for c in from_bytes(f.result(), self.width)]

    def load(self, key: Any, cs: list) -> None:
        """Give every worker the round's row ciphertexts (once per ``key``)."""
        if self.version is key:
            return
        raw = to_bytes(cs, self.width)
        [f.result() for f in [self.submit(i, _set_rows, self.pk_bytes, raw) for i in range(len(self))]]
        self.version = key

    def histograms(self, rows: np.ndarray, codes: np.ndarray, n_bins: int, width: int,
                   per: int) -> tuple[list[int], list]:
        """A node's packed histogram, features split in blocks (one per worker): (block sizes, ciphertexts)."""
        parts = [p for p in np.array_split(np.arange(codes.shape[1]), len(self)) if len(p)]
        futs = [self.submit(i, _histogram, rows, np.ascontiguousarray(codes[:, p]), n_bins, width, per)
                for i, p in enumerate(parts)]
        packed: list = []
        for f in futs:
            packed += [gmpy2.from_binary(v) for v in f.result()]
        return [len(p) for p in parts], packed

    def close(self) -> None:
        for w in self.workers:
            w.shutdown(wait=True, cancel_futures=True)
