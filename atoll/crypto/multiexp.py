"""Exponentiation kernels: fixed-base tables and bucket (Pippenger) multi-exponentiation.

Pure functions of gmpy2 integers; no keys, no parties.

* :class:`FixedBaseTable` -- ``base**e mod N`` for many ``e < 2**exp_bits`` with one
  precomputed table ``T[i][j] = base**(j * 2**(w*i))``: each power costs
  ``ceil(exp_bits / w)`` modular multiplications and no squaring (Brickell et al.,
  "Fast exponentiation with precomputation", EUROCRYPT 1992; the fixed-base comb).
* :func:`multi_exp` -- ``prod_i b_i**e_i mod N`` for many bases with small
  exponents, by the bucket method (Pippenger 1976; Bernstein et al. 2012 "bucket
  method"): per ``c``-bit window each base is multiplied into the bucket of its
  digit, then buckets are combined with two running products. Cost about
  ``(bits/c) * (n + 2**(c+1))`` multiplications instead of about ``1.2 * bits``
  per base for one powmod each.
* :func:`multi_exp_signed` -- the same with signed exponents (split by sign, one
  modular inversion at the end).
* :func:`grouped_products` -- per (column, group) products of many values: homomorphic
  sums by bin (histograms), one modular multiplication per (value, column).
* :func:`horner_pack` -- ``prod_l c_l ** (2 ** (l * shift_bits))`` for groups of values:
  ``(per - 1) * shift_bits`` squarings per group (packing ciphertexts into one).
"""

from __future__ import annotations

import math
import threading

import gmpy2
import numpy as np
from gmpy2 import mpz

__all__ = ["FixedBaseTable", "batch_invert", "multi_exp", "multi_exp_signed", "best_window", "grouped_products",
           "horner_pack"]


class FixedBaseTable:
    """Precomputed powers of one base for fast ``base**e mod modulus`` with ``0 <= e < 2**exp_bits``.

    Rows ``T[i][j] = base**(j * 2**(w*i))`` are built up to ``prebuild_bits`` at
    construction and lazily beyond (so a table for a huge exponent range costs
    memory only for the exponent sizes actually used).
    """

    def __init__(self, base, modulus, exp_bits: int, window: int = 8, prebuild_bits: int | None = None):
        if window < 1 or window > 16:
            raise ValueError("window must be between 1 and 16 bits")
        self.modulus = mpz(modulus)
        self.base = mpz(base) % self.modulus
        self.window = int(window)
        self.exp_bits = int(exp_bits)
        self.n_windows = max(1, -(-self.exp_bits // self.window))
        self.rows: list = []
        self._next_base = self.base
        self._lock = threading.Lock()
        self._ensure(self.exp_bits if prebuild_bits is None else max(1, min(prebuild_bits, self.exp_bits)))

    def _ensure(self, bits: int) -> None:
        """Build rows until exponents of ``bits`` bits are covered."""
        need = min(self.n_windows, -(-bits // self.window))
        N = self.modulus
        size = 1 << self.window
        with self._lock:
            self._build(need, N, size)

    def _build(self, need: int, N, size: int) -> None:
        while len(self.rows) < need:
            g = self._next_base
            row = [mpz(1)] * size
            acc = mpz(1)
            for j in range(1, size):
                acc = acc * g % N
                row[j] = acc
            self.rows.append(row)
            self._next_base = acc * g % N  # g ** (2**w)

    def pow(self, e: int):
        """``base ** e mod modulus`` for ``0 <= e < 2**exp_bits`` (no squarings)."""
        return self.pow_list([e])[0]

    def pow_list(self, exps: list) -> list:
        """``[base**e mod modulus for e in exps]``."""
        w, mask, N = self.window, (1 << self.window) - 1, self.modulus
        one = mpz(1)
        out = []
        append = out.append
        rows = self.rows
        covered = w * len(rows)
        for e in exps:
            if e >> covered:
                if e < 0 or e >> self.exp_bits:
                    raise ValueError(f"exponent out of the table's range of {self.exp_bits} bits")
                self._ensure(int(e).bit_length())
                rows = self.rows
                covered = w * len(rows)
            elif e < 0:
                raise ValueError("negative exponent for a fixed-base table")
            acc = None
            for row in rows:
                d = e & mask
                if d:
                    acc = row[d] if acc is None else acc * row[d] % N
                e >>= w
                if not e:
                    break
            append(one if acc is None else acc)
        return out

    @property
    def nbytes(self) -> int:
        return len(self.rows) * (1 << self.window) * ((int(self.modulus).bit_length() + 7) // 8)


def best_window(count: int, bits: int) -> int:
    """Window size minimising the bucket method's cost for ``count`` bases of ``bits``-bit exponents."""
    if count <= 0 or bits <= 0:
        return 1
    best, best_cost = 1, math.inf
    for c in range(1, 17):
        windows = -(-bits // c)
        cost = windows * (count + 2 * (1 << c)) + bits
        if cost < best_cost:
            best, best_cost = c, cost
    return best


def multi_exp(bases: list, exps, modulus, window: int | None = None):
    """``prod_i bases[i] ** exps[i] mod modulus`` for non-negative integer exponents.

    ``exps`` is a sequence of Python ints or a numpy integer array. Bases with a
    zero exponent cost nothing.
    """
    N = mpz(modulus)
    one = mpz(1)
    if isinstance(exps, np.ndarray) and exps.dtype.kind in "iu":
        keep = np.flatnonzero(exps)
        if keep.size == 0:
            return one
        ev = exps[keep]
        bases = [bases[i] for i in keep.tolist()]
        bits = int(ev.max()).bit_length()
        small = bits <= 62
        evs = ev.astype(np.int64) if small else None
        exps_l = None if small else [int(v) for v in ev.tolist()]
    else:
        pairs = [(b, int(e)) for b, e in zip(bases, exps) if e]
        if not pairs:
            return one
        bases = [p[0] for p in pairs]
        exps_l = [p[1] for p in pairs]
        bits = max(exps_l).bit_length()
        small = bits <= 62
        evs = np.array(exps_l, dtype=np.int64) if small else None
    n = len(bases)
    if n == 1:
        e = int(evs[0]) if small else exps_l[0]
        return gmpy2.powmod(bases[0], e, N)
    c = window or best_window(n, bits)
    if bits <= c:
        c = bits
    n_windows = -(-bits // c)
    mask = (1 << c) - 1
    result = None
    for k in range(n_windows - 1, -1, -1):
        if small:
            digits = ((evs >> (c * k)) & mask).tolist()
        else:
            digits = [(e >> (c * k)) & mask for e in exps_l]
        buckets: list = [None] * (mask + 1)
        for d, b in zip(digits, bases):
            if d:
                cur = buckets[d]
                buckets[d] = b if cur is None else cur * b % N
        # combine: prod_d buckets[d] ** d with two running products
        running = None
        total = None
        for d in range(mask, 0, -1):
            bd = buckets[d]
            if bd is not None:
                running = bd if running is None else running * bd % N
            if running is not None:
                total = running if total is None else total * running % N
        if result is not None:
            result = gmpy2.powmod(result, 1 << c, N)
            if total is not None:
                result = result * total % N
        else:
            result = total
    return one if result is None else result


def batch_invert(values: list, modulus) -> list:
    """Inverses of many units modulo ``modulus`` with one modular inversion (Montgomery's trick).

    About 3 multiplications per value instead of one inversion each (an inversion measured
    4.7x a multiplication mod a 4096-bit n^2 with gmpy2: the trick saves about 1.6x).
    """
    N = mpz(modulus)
    n = len(values)
    if n == 0:
        return []
    prefix = [None] * n
    acc = mpz(1)
    for i, v in enumerate(values):
        acc = acc * v % N
        prefix[i] = acc
    inv = gmpy2.invert(acc, N)
    out = [None] * n
    for i in range(n - 1, 0, -1):
        out[i] = inv * prefix[i - 1] % N
        inv = inv * values[i] % N
    out[0] = inv
    return out


def multi_exp_signed(bases: list, exps, modulus, window: int | None = None):
    """``prod_i bases[i] ** exps[i] mod modulus`` for signed exponents (bases must be invertible)."""
    N = mpz(modulus)
    if isinstance(exps, np.ndarray) and exps.dtype.kind in "iu":
        pos_idx = np.flatnonzero(exps > 0)
        neg_idx = np.flatnonzero(exps < 0)
        pos = multi_exp([bases[i] for i in pos_idx.tolist()], exps[pos_idx], N, window) if pos_idx.size else mpz(1)
        if not neg_idx.size:
            return pos
        neg = multi_exp([bases[i] for i in neg_idx.tolist()], -exps[neg_idx], N, window)
    else:
        exps = [int(e) for e in exps]
        pb = [(b, e) for b, e in zip(bases, exps) if e > 0]
        nb = [(b, -e) for b, e in zip(bases, exps) if e < 0]
        pos = multi_exp([p[0] for p in pb], [p[1] for p in pb], N, window) if pb else mpz(1)
        if not nb:
            return pos
        neg = multi_exp([p[0] for p in nb], [p[1] for p in nb], N, window)
    return pos * gmpy2.invert(neg, N) % N


def grouped_products(values: list, codes: np.ndarray, n_groups: int, modulus) -> list:
    """``out[f * n_groups + g] = prod of values[i] with codes[i, f] == g`` mod ``modulus`` (1 for empty groups).

    ``codes`` is an (m, d) array of group indices in ``[0, n_groups)`` aligned with ``values`` (m,): d
    groupings of the same values (e.g. the bins of d features), flat and column-major in the result.
    One pass over the values per column, in order, into ``n_groups`` accumulators (measured faster than
    sorting the values by group first: the values are read sequentially and the accumulators stay in cache).
    """
    N = mpz(modulus)
    one = mpz(1)
    out: list = []
    for f in range(codes.shape[1]):
        acc: list = [None] * n_groups
        for c, g in zip(values, codes[:, f].tolist()):
            a = acc[g]
            acc[g] = c if a is None else a * c % N
        out += [one if a is None else a for a in acc]
    return out


def horner_pack(values: list, per: int, shift_bits: int, modulus) -> list:
    """Pack consecutive groups of ``per`` values into one each: ``C = prod_l c_l ** (2 ** (l * shift_bits))``.

    Horner's rule from the top (``acc = acc ** (2 ** shift_bits) * c_l``); every group's step is one
    ``powmod_base_list`` call, so the squarings run in gmpy2's C loop. Values equal to 1 (deterministic
    encryptions of zero, e.g. empty histogram bins) cost nothing: ``1 ** k = 1`` and ``acc * 1 = acc``.
    The last group may be shorter.
    """
    N = mpz(modulus)
    n = len(values)
    if n == 0:
        return []
    shift = mpz(1) << shift_bits
    starts = list(range(0, n, per))
    sizes = [min(per, n - s) for s in starts]
    acc = [values[s + k - 1] for s, k in zip(starts, sizes)]
    for level in range(per - 2, -1, -1):
        below = [j for j, k in enumerate(sizes) if k > level + 1]  # groups that have a value below the top
        idx = [j for j in below if acc[j] != 1]
        if idx:
            for j, r in zip(idx, gmpy2.powmod_base_list([acc[j] for j in idx], shift, N)):
                acc[j] = r
        for j in below:
            v = values[starts[j] + level]
            if v != 1:
                acc[j] = v if acc[j] == 1 else acc[j] * v % N
    return acc
