"""Encrypted histograms: sums of ciphertext rows per (feature, bin), for many subsets of the same rows.

The kernel of SecureBoost's hosts (and of any protocol that sums encrypted values by group):
``out[f, b] = sum of enc[i] over the chosen rows i with codes[i, f] == b``, one modular multiplication per
(row, feature) (:func:`atoll.crypto.multiexp.grouped_products`). :class:`RowHistograms` places the rows
once on the engine's workers -- row ``i`` on worker ``i % n_workers``, so any subset of rows is spread
evenly -- together with their bin codes; each :meth:`RowHistograms.build` then sends only row indices,
every worker sums its own rows of every subset, and this process multiplies the workers' partial sums
(``d * n_bins`` multiplications per subset and extra worker). The result is the same ciphertext,
bit for bit, whatever the number of workers (products commute). Empty bins are deterministic
encryptions of zero (1): re-randomise before sending.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from atoll.crypto import encoding
from atoll.crypto import engine as _engine
from atoll.crypto.engine import Jobs
from atoll.crypto.cipherarray import CipherArray
from atoll.crypto.multiexp import grouped_products
from atoll.errors import CryptoError

__all__ = ["RowHistograms"]


def _rows_state(state: dict) -> list:
    if "cs" not in state:  # first use on this worker: unpack the placed block once
        state["cs"] = _engine.unship(state.pop("blob"))
    return state["cs"]


def _histograms_worker(state: dict, subsets: list, n_bins: int, modulus) -> list:
    """This worker's partial histograms of each subset (indices into its own block of rows)."""
    cs = _rows_state(state)
    codes = state["codes"]
    out = []
    for idx in subsets:
        sums = grouped_products([cs[i] for i in idx.tolist()], codes[idx], n_bins, modulus)
        out.append(_engine.ship(sums) if state["ship"] else sums)
    return out


class RowHistograms:
    """Histograms of subsets of the rows of a 1-d ``enc`` (m,) by their ``codes`` (m, d) in ``[0, n_bins)``.

    The rows and codes stay resident on the engine for ``jobs`` until :meth:`close` (also a context manager).
    """

    def __init__(self, enc: CipherArray, codes: np.ndarray, n_bins: int, jobs: Jobs = 1):
        codes = np.asarray(codes)
        if not isinstance(enc, CipherArray) or enc.ndim != 1:
            raise CryptoError("RowHistograms needs a 1-d CipherArray of rows")
        if codes.ndim != 2 or codes.shape[0] != enc.shape[0] or (codes.size and codes.dtype.kind not in "iu"):
            raise CryptoError(f"codes must be an integer array of shape ({enc.shape[0]}, d)")
        self.n_bins = int(n_bins)
        if self.n_bins < 1 or (codes.size and (int(codes.min()) < 0 or int(codes.max()) >= self.n_bins)):
            raise CryptoError(f"bin codes must lie in [0, n_bins={self.n_bins})")
        self.enc = enc
        self.codes = codes
        self.n_rows, self.n_features = codes.shape
        self.engine = _engine.get(jobs)
        w = self.engine.n_workers
        cs = enc.data.tolist()
        if w == 1:
            blocks = [{"cs": cs, "codes": codes, "ship": False}]
        else:
            blocks = [{"blob": _engine.ship(cs[i::w]), "codes": np.ascontiguousarray(codes[i::w]), "ship": True}
                      for i in range(w)]
        self._resident = self.engine.place(blocks)

    def build(self, subsets: Sequence[np.ndarray]) -> list[CipherArray]:
        """One (d, n_bins) histogram per subset of row indices (each a 1-d integer array in ``[0, m)``)."""
        w = self.engine.n_workers
        checked = []
        for s in subsets:
            s = np.asarray(s)
            if s.ndim != 1 or (s.size and (s.dtype.kind not in "iu" or int(s.min()) < 0
                                           or int(s.max()) >= self.n_rows)):
                raise CryptoError(f"row subsets must be 1-d integer arrays of indices in [0, {self.n_rows})")
            checked.append(s.astype(np.int64, copy=False))
        if not checked:
            return []
        tasks = [([s[s % w == i] // w for s in checked] if w > 1 else checked, self.n_bins, self.enc.pk.cipher_modulus)
                 for i in range(w)]
        parts = self.engine.run(_histograms_worker, self._resident, tasks)
        N = self.enc.pk.cipher_modulus
        out = []
        for j, s in enumerate(checked):
            if w == 1:
                acc = parts[0][j]
            else:
                acc = _engine.unship(parts[0][j])
                for p in parts[1:]:
                    acc = [a * b % N for a, b in zip(acc, _engine.unship(p[j]))]
            sub = self.codes[s]
            biggest = max((int(np.bincount(sub[:, f], minlength=1).max()) for f in range(self.n_features)), default=0)
            bound = self.enc.bound * biggest
            data = encoding.object_array(acc, (self.n_features, self.n_bins))
            out.append(CipherArray(self.enc.pk, data, self.enc.exp, self.enc._check_bound(bound, "this histogram"),
                                   self.enc._packing_scaled(biggest)))
        return out

    def close(self) -> None:
        """Release the resident rows."""
        self.engine.release(self._resident)

    def __enter__(self) -> "RowHistograms":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
