"""SecureBoost's two ciphers: ``plain`` (identity, the plaintext mode) and HE (any scheme of the registry).

The protocol in :mod:`atoll.ml.vertical.secureboost` calls the same operations whatever the scheme;
the HE cipher is a thin adapter over :mod:`atoll.crypto`'s kernels, all run on one worker engine
(:mod:`atoll.crypto.engine`, ``n_jobs`` workers per party):

1. guest ``encrypt_rows(slots)``: per-row integer slots (quantised g_k, h_k of the outputs in one chunk)
   -> the payload for the hosts. HE: :class:`~atoll.crypto.packing.Packer` with signed ``SLOT_BITS``-bit
   slots packs every row into ONE plaintext ``sum_j v_j 2**(j*w)`` and encrypts it;
2. host ``rows(payload, codes, n_bins)`` once per tree, then ``histograms(rows, row_sets, n_slots)`` once
   per level: the sums of the row values per (feature, bin) for each node to build. HE:
   :class:`~atoll.crypto.histogram.RowHistograms` (the round's rows resident on the workers, one
   multiplication per (row, feature)), then ``Packer.pack`` (cipher compression: ``L`` bins of ``slots``
   slots each into one ciphertext, Horner's rule) and re-randomisation, for all the level's nodes at once;
3. guest ``decode(hist_payloads, d, n_bins, n_slots)`` -> one float64 array (d, n_bins, slots) of
   integer-valued sums per node, identical for every scheme.

The plaintext scheme sends the quantised slots in the clear and sums them with ``np.bincount``: the
same protocol and messages, no encryption (for exact comparison and for measuring what the encryption
costs). Levels with fewer than ``PARALLEL_MIN_WORK`` (row, feature) additions, and rounds of fewer than
``PARALLEL_MIN_ROWS`` rows, run in-process; compression, re-randomisation and decryption always use the
engine. This works under ``launch(mode="processes")`` too: party processes are not daemonic and may
start workers, which exit with their party.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from atoll.crypto import engine, he, registry
from atoll.crypto.cipherarray import CipherArray
from atoll.errors import ConfigError, CryptoError
from atoll.ml.vertical.boosting_core import SLOT_BITS

log = logging.getLogger(__name__)

__all__ = ["PlainCipher", "HECipher", "make_guest_cipher", "make_host_cipher", "plain_histogram"]

#: below this many (row, feature) additions in a level, its histograms are built in-process
PARALLEL_MIN_WORK = 20000
#: below this many rows the guest encrypts in-process
PARALLEL_MIN_ROWS = 1000


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

    def rows(self, payload: np.ndarray, codes: np.ndarray, n_bins: int) -> "_PlainRows":
        return _PlainRows(payload, codes, n_bins)

    def histograms(self, rows: "_PlainRows", row_sets: Sequence[np.ndarray], n_slots: int) -> list:
        return [plain_histogram(rows.values[r], rows.codes[r], rows.n_bins) for r in row_sets]

    def decode(self, hists: Sequence[Any], d: int, n_bins: int, n_slots: int) -> list[np.ndarray]:
        return [np.asarray(h, dtype=np.float64).reshape(d, n_bins, n_slots) for h in hists]


class _PlainRows:
    def __init__(self, values: np.ndarray, codes: np.ndarray, n_bins: int):
        self.values, self.codes, self.n_bins = values, codes, n_bins

    def close(self) -> None:
        return None


class _HERows:
    """A tree's encrypted rows and bin codes: in-process, and resident on the workers once a level needs them."""

    def __init__(self, cipher: "HECipher", payload: CipherArray, codes: np.ndarray, n_bins: int):
        self.cipher, self.payload, self.codes, self.n_bins = cipher, payload, codes, n_bins
        self.local = he.RowHistograms(payload, codes, n_bins, jobs=1)
        self.workers: he.RowHistograms | None = None

    def on_workers(self) -> he.RowHistograms:
        if self.workers is None:
            self.workers = he.RowHistograms(self.payload, self.codes, self.n_bins, jobs=self.cipher.engine)
        return self.workers

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None


class HECipher:
    """Packed HE histograms under a key of any registered scheme (the guest holds the private key).

    ``stats`` counts the work done in worker processes (``parallel_encryptions``: rounds whose rows
    were encrypted there; ``parallel_histograms``: node histograms summed there) and in this process
    (``histograms``).
    """

    def __init__(self, pk, sk=None, jobs: int = 1):
        self.pk = pk
        self.sk = sk
        self.scheme = pk.scheme
        self.engine = engine.get(jobs)
        self.packer = he.Packer(pk, value_bits=SLOT_BITS, signed=True)  # slots of SLOT_BITS bits, signed
        self.stats = {"parallel_encryptions": 0, "parallel_histograms": 0, "histograms": 0}

    def warm(self) -> None:
        """Start the workers and build the key's tables in each now (setup), not inside the first tree."""
        self.pk.warm_up(self.engine)

    def public(self):
        return self.pk

    def slots_per_chunk(self, n_slots: int) -> int:
        """How many (g, h) slots fit in one row plaintext (a whole number of outputs)."""
        per = self.packer.n_slots
        per -= per % 2
        if per < 2:
            raise ConfigError(f"a {self.pk.key_bits}-bit {self.scheme} key cannot hold one (g, h) pair "
                              f"of {SLOT_BITS}-bit slots; use a larger key_bits")
        return min(per, n_slots)

    # guest
    def encrypt_rows(self, slots: np.ndarray) -> CipherArray:
        ints = np.asarray(slots).astype(np.int64)
        jobs: Any = 1
        if self.engine.n_workers > 1 and len(ints) >= PARALLEL_MIN_ROWS:
            jobs = self.engine
            self.stats["parallel_encryptions"] += 1
        return self.packer.encrypt_ints(ints, jobs=jobs)

    # host
    def prepare(self, payload) -> CipherArray:
        if not isinstance(payload, CipherArray) or payload.pk != self.pk or payload.ndim != 1:
            raise CryptoError("the encrypted gradients are not a vector under the guest's announced public key")
        return payload

    def rows(self, payload: CipherArray, codes: np.ndarray, n_bins: int) -> _HERows:
        return _HERows(self, payload, codes, n_bins)

    def histograms(self, rows: _HERows, row_sets: Sequence[np.ndarray], n_slots: int) -> list[dict]:
        """The packed, compressed, re-randomised histogram of every node of a level: ``{"ct": CipherArray}`` each."""
        if not row_sets:
            return []
        work = sum(len(r) for r in row_sets) * rows.codes.shape[1]
        if self.engine.n_workers > 1 and work >= PARALLEL_MIN_WORK:
            hists = rows.on_workers().build(row_sets)
            self.stats["parallel_histograms"] += len(row_sets)
        else:
            hists = rows.local.build(row_sets)
            self.stats["histograms"] += len(row_sets)
        flat = he.stack([h.ravel() for h in hists])  # (nodes, d * n_bins), compressed together
        packed = self.packer.pack(flat, slots=n_slots, jobs=self.engine).rerandomize(jobs=self.engine)
        return [{"ct": packed[i]} for i in range(len(row_sets))]

    def close(self) -> None:
        return None  # the engine is shared by the process and stops with it

    # guest
    def decode(self, hists: Sequence[Any], d: int, n_bins: int, n_slots: int) -> list[np.ndarray]:
        if self.sk is None:
            raise CryptoError("only the guest (key owner) can decode histograms")
        per = self.packer.n_slots // n_slots
        need = -(-d * n_bins // per)
        cts = []
        for h in hists:
            ct = h.get("ct") if isinstance(h, dict) and set(h) == {"ct"} else None
            if not isinstance(ct, CipherArray) or ct.pk != self.pk or ct.shape != (need,):
                raise CryptoError(f"histogram layout mismatch: expected {d} features x {n_bins} bins in {need} "
                                  "ciphertexts under the guest's key")
            cts.append(ct)
        if not cts:
            return []
        slots = self.packer.decrypt_ints(self.sk, he.concatenate(cts), k=per * n_slots, jobs=self.engine)
        out = []
        for i in range(len(cts)):
            block = slots[i * need:(i + 1) * need].reshape(need * per, n_slots)[:d * n_bins]
            out.append(block.astype(np.float64).reshape(d, n_bins, n_slots))
        return out


def _backend(scheme: str) -> registry.HEBackend:
    try:
        return registry.get(scheme)
    except CryptoError:
        raise ConfigError(f"unknown scheme {scheme!r}; use one of {', '.join(he.scheme_names())} or 'plain'") from None


def make_guest_cipher(scheme: str, key_bits: int, jobs: int = 1):
    """The guest's cipher: a fresh key pair for HE schemes."""
    if scheme == "plain":
        return PlainCipher()
    pk, sk = he.generate_keypair(_backend(scheme).name, key_bits)
    return HECipher(pk, sk, jobs)


def make_host_cipher(scheme: str, pk, jobs: int = 1):
    if scheme == "plain":
        return PlainCipher()
    if not isinstance(pk, _backend(scheme).public_key):
        raise CryptoError(f"expected a {scheme} public key from the guest, got {type(pk).__name__}")
    return HECipher(pk, None, jobs)
