"""Yao garbling with free-XOR, half-gates and point-and-permute, batched level by level.

Pure functions on label arrays (no I/O, no parties); the two-party protocol is
:mod:`atoll.secure.mpc.gc`.

* **Labels**: 128-bit, ``(..., 2) uint64``. Every wire ``w`` has a zero label ``W0`` and
  one label ``W1 = W0 ^ Delta`` (free-XOR, Kolesnikov-Schneider 2008); ``Delta`` is global
  with its lowest bit 1, so the lowest bit of a label (its *point* bit) differs between
  ``W0`` and ``W1`` and tells the evaluator which table row to use (point-and-permute) and,
  for output wires, gives the value as ``point(W) ^ point(W0)``.
* **XOR / INV**: no ciphertexts: ``W0_c = W0_a ^ W0_b``; ``W0_not = W0 ^ Delta`` (the
  evaluator copies its label).
* **AND**: two ciphertexts per gate (Zahur, Rosulek, Evans, "Two halves make a whole",
  EUROCRYPT 2015, figure 2). With ``pa, pb`` the point bits of the zero labels and
  ``H`` the tweakable correlation-robust hash of :mod:`atoll.crypto.aes` (GKWY20)::

      T_G = H(A0, j) ^ H(A1, j) ^ pb*Delta        W_G = H(A0, j) ^ pa*T_G
      T_E = H(B0, j') ^ H(B1, j') ^ A0            W_E = H(B0, j') ^ pb*(T_E ^ A0)
      C0  = W_G ^ W_E                              table = (T_G, T_E)

  and the evaluator, holding ``A``, ``B`` with point bits ``sa``, ``sb``::

      C = H(A, j) ^ sa*T_G ^ H(B, j') ^ sb*(T_E ^ A)

  The tweaks ``j, j'`` are ``(k, DOMAIN_GC | 0)`` and ``(k, DOMAIN_GC | 1)`` with ``k`` unique
  per gate and instance: ``tweak0 + gate_index * c + instance``, the caller advancing
  ``tweak0`` by ``n_and * c`` per chunk of ``c`` instances.

Batching: the circuit (:mod:`atoll.crypto.circuit`) is one instance; ``c`` instances run
side by side, and every level's AND gates are hashed in one AES call (4 blocks per gate and
instance for the garbler, 2 for the evaluator).
"""

from __future__ import annotations

import numpy as np

from atoll.crypto import aes
from atoll.crypto.circuit import Circuit
from atoll.errors import CryptoError

__all__ = ["DOMAIN_GC", "evaluate", "garble", "point"]

#: high word of the hash tweaks of garbling (OT extension uses another)
DOMAIN_GC = 0x4743 << 48
_HI0, _HI1 = np.uint64(DOMAIN_GC), np.uint64(DOMAIN_GC | 1)


def point(labels: np.ndarray) -> np.ndarray:
    """Point-and-permute bits: the lowest bit of each label, ``uint8``."""
    return (labels[..., 0] & np.uint64(1)).astype(np.uint8)


def _check(circ: Circuit, labels: np.ndarray, what: str) -> int:
    if labels.dtype != np.uint64 or labels.ndim != 3 or labels.shape[0] != circ.n_inputs \
            or labels.shape[2] != 2:
        raise CryptoError(f"{what} must be ({circ.n_inputs}, c, 2) uint64 labels, got "
                          f"{labels.dtype} {labels.shape}")
    return labels.shape[1]


def _tweaks(lv_ids: np.ndarray, c: int, tweak0: int) -> np.ndarray:
    k = lv_ids.astype(np.uint64)[:, None] * np.uint64(c) + np.arange(c, dtype=np.uint64)[None, :]
    k += np.uint64(tweak0)
    return k


def _mask(bits64: np.ndarray) -> np.ndarray:
    """All-ones words where the lowest bit is set: ``(m, c)`` -> ``(m, c, 1)``."""
    return (np.uint64(0) - (bits64 & np.uint64(1)))[..., None]


def garble(circ: Circuit, zero_inputs: np.ndarray, delta: np.ndarray,
           tweak0: int) -> tuple[np.ndarray, np.ndarray]:
    """Garble ``c`` instances: ``(tables (n_and, c, 2, 2), output zero labels (n_outputs, c, 2))``.

    ``zero_inputs``: the zero labels of the input wires, ``(n_inputs, c, 2) uint64``;
    ``delta``: ``(2,) uint64`` with its lowest bit set.
    """
    c = _check(circ, zero_inputs, "input zero labels")
    delta = np.asarray(delta, dtype=np.uint64).reshape(2)
    if not delta[0] & np.uint64(1):
        raise CryptoError("the free-XOR Delta must have its lowest bit set")
    sd = aes.sigma(delta)
    w = np.empty((circ.n_slots, c, 2), dtype=np.uint64)
    w[: circ.n_inputs] = zero_inputs
    tables = np.empty((circ.n_and, c, 2, 2), dtype=np.uint64)
    for lv in circ.levels:
        x = w[lv.xa] ^ w[lv.xb] if lv.xo.size else None
        i = w[lv.ia] ^ delta if lv.io.size else None
        if lv.ao.size:
            a0, b0 = w[lv.aa], w[lv.ab]
            m = a0.shape[0]
            s = np.empty((4, m, c, 2), dtype=np.uint64)
            s[0] = aes.sigma(a0)
            np.bitwise_xor(s[0], sd, out=s[1])
            s[2] = aes.sigma(b0)
            np.bitwise_xor(s[2], sd, out=s[3])
            y = s.copy()
            k = _tweaks(lv.and_ids, c, tweak0)
            y[..., 0] ^= k
            y[:2, ..., 1] ^= _HI0
            y[2:, ..., 1] ^= _HI1
            h = aes.permute(y)
            h ^= s
            ma, mb = _mask(a0[..., 0]), _mask(b0[..., 0])
            tg = h[0] ^ h[1]
            tg ^= delta & mb
            he = h[2] ^ h[3]
            c0 = h[0] ^ (tg & ma)
            c0 ^= h[2]
            c0 ^= he & mb
            tables[lv.and_ids, :, 0] = tg
            he ^= a0
            tables[lv.and_ids, :, 1] = he
            w[lv.ao] = c0
        if x is not None:
            w[lv.xo] = x
        if i is not None:
            w[lv.io] = i
    return tables, w[circ.out_slots]


def evaluate(circ: Circuit, inputs: np.ndarray, tables: np.ndarray, tweak0: int) -> np.ndarray:
    """Evaluate ``c`` garbled instances: the output labels ``(n_outputs, c, 2)``."""
    c = _check(circ, inputs, "input labels")
    if tables.dtype != np.uint64 or tables.shape != (circ.n_and, c, 2, 2):
        raise CryptoError(f"garbled tables must be {(circ.n_and, c, 2, 2)} uint64, got "
                          f"{tables.dtype} {tables.shape}")
    w = np.empty((circ.n_slots, c, 2), dtype=np.uint64)
    w[: circ.n_inputs] = inputs
    for lv in circ.levels:
        x = w[lv.xa] ^ w[lv.xb] if lv.xo.size else None
        i = w[lv.ia] if lv.io.size else None
        if lv.ao.size:
            a, b = w[lv.aa], w[lv.ab]
            m = a.shape[0]
            s = np.empty((2, m, c, 2), dtype=np.uint64)
            s[0] = aes.sigma(a)
            s[1] = aes.sigma(b)
            y = s.copy()
            k = _tweaks(lv.and_ids, c, tweak0)
            y[..., 0] ^= k
            y[0, ..., 1] ^= _HI0
            y[1, ..., 1] ^= _HI1
            h = aes.permute(y)
            h ^= s
            t = tables[lv.and_ids]
            out = h[0] ^ h[1]
            out ^= t[:, :, 0] & _mask(a[..., 0])
            te = t[:, :, 1] ^ a
            out ^= te & _mask(b[..., 0])
            w[lv.ao] = out
        if x is not None:
            w[lv.xo] = x
        if i is not None:
            w[lv.io] = i
    return w[circ.out_slots]
