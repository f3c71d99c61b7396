"""``CipherArray``: a numpy-like array of additively homomorphic ciphertexts.

Both schemes (Paillier, Okamoto-Uchiyama) share the algebra, all modulo the
key's ``cipher_modulus`` N:

* ``[[a]] + [[b]]``  = ``c_a * c_b mod N``
* ``-[[a]]``         = ``c_a**-1 mod N``
* ``[[a]] * k``      = ``c_a**k mod N`` (k a plaintext integer; fixed point for floats)
* ``[[a]] + k``      = ``c_a * g**k mod N`` (deterministic lift of k, no randomness)
* ``X.T @ [[v]]``    = ``prod_i c_i**X[i, j]`` per output, by bucket multi-exponentiation

Every array carries ``exp`` (fractional bits of its fixed-point plaintexts) and
``bound`` (an upper bound on the absolute value of its plaintext integers).
Operations align exponents, update the bound, and raise :class:`CryptoError`
*before* a result could wrap around the plaintext modulus.

``enc * enc`` raises ``TypeError``: additively homomorphic schemes cannot
multiply two ciphertexts.

Ciphertexts equal to 1 (for example ``enc * 0``) are deterministic encryptions
of zero; call :meth:`CipherArray.rerandomize` before sending results whose
pattern of zeros must stay hidden.
"""

from __future__ import annotations

from typing import Any, Iterable

import gmpy2
import numpy as np
from gmpy2 import mpz

from atoll import wire
from atoll.crypto import encoding
from atoll.crypto import engine as _engine
from atoll.crypto.engine import Jobs
from atoll.crypto.multiexp import batch_invert, grouped_products, multi_exp_signed
from atoll.errors import CryptoError

__all__ = ["CipherArray", "concatenate", "stack"]

_MAX_EXP = 4096


def _matmul_rows_worker(modulus, bases: list, rows: np.ndarray) -> list:
    """``[prod_i bases[i] ** row[i] mod modulus for row in rows]`` (runs in workers too)."""
    N = mpz(modulus)
    return [multi_exp_signed(bases, row, N) for row in rows]


def _powmod_pairs_worker(modulus, bases: list, exps: list) -> list:
    """``[b ** e mod modulus]`` elementwise (negative e through one batched inversion)."""
    N = mpz(modulus)
    neg = [i for i, e in enumerate(exps) if e < 0]
    if neg:
        inv = batch_invert([bases[i] for i in neg], N)
        bases = list(bases)
        exps = list(exps)
        for i, b in zip(neg, inv):
            bases[i] = b
            exps[i] = -exps[i]
    powmod = gmpy2.powmod
    return [powmod(c, k, N) for c, k in zip(bases, exps)]


def _object_flat(data: np.ndarray) -> list:
    return data.ravel().tolist()




class CipherArray:
    """An n-d array of ciphertexts under one public key, with a tracked fixed-point exponent.

    Attributes: ``pk`` (public key), ``data`` (numpy object array of gmpy2 ints),
    ``exp`` (plaintext = integer / 2**exp), ``bound`` (max |plaintext integer|).
    """

    __slots__ = ("pk", "data", "exp", "bound", "packing")
    __array_ufunc__ = None  # make numpy defer: ndarray @ enc -> enc.__rmatmul__
    __array_priority__ = 1000

    def __init__(self, pk: Any, data: np.ndarray, exp: int = 0, bound: int = 0,
                 packing: tuple[int, int, bool] | None = None):
        if not isinstance(data, np.ndarray) or data.dtype != object:
            data = np.array(data, dtype=object)
        self.pk = pk
        self.data = data
        self.exp = int(exp)
        self.bound = int(bound)
        #: (slot_width_bits, per-slot bound on |value|, signed slots) for packed arrays made by
        #: atoll.crypto.packing.Packer; unsigned slots hold [0, 2**W), signed ones (-2**(W-1), 2**(W-1))
        self.packing = packing
        if packing is not None and packing[1] >> (packing[0] - 1 if packing[2] else packing[0]):
            raise CryptoError(
                f"packed slots could reach {packing[1].bit_length()} bits but each slot has only {packing[0]}"
                f"{' (signed)' if packing[2] else ''}: the sum would spill into the next slot; create the Packer "
                "with a larger max_terms (more headroom) or add fewer ciphertexts")

    # ---- shape and indexing ---------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d CipherArray")
        return self.data.shape[0]

    def __repr__(self) -> str:
        return (f"CipherArray(shape={self.shape}, scheme={self.pk.scheme}, exp={self.exp}, "
                f"bound_bits={self.bound.bit_length()})")

    def _like(self, data: np.ndarray, exp: int | None = None, bound: int | None = None) -> "CipherArray":
        return CipherArray(self.pk, data, self.exp if exp is None else exp,
                           self.bound if bound is None else bound, self.packing)

    def _packing_scaled(self, factor: int | None) -> tuple[int, int, bool] | None:
        """Packing after multiplying every plaintext by an integer of magnitude up to ``factor`` (None: broken)."""
        if self.packing is None or factor is None:
            return None
        return (self.packing[0], self.packing[1] * factor, self.packing[2])

    def _packing_by_ints(self, ints: np.ndarray, f: int, factor: int) -> tuple[int, int, bool] | None:
        """Packing after a product with integer plaintexts ``ints`` (fractional bits ``f``) whose magnitudes
        combine to at most ``factor``: kept for non-negative integers, and for any integers in signed slots."""
        if self.packing is None or f != 0 or not ints.size:
            return None
        if self.packing[2] or min(ints.ravel().tolist()) >= 0:
            return self._packing_scaled(factor)
        return None

    def __getitem__(self, idx: Any) -> "CipherArray":
        if isinstance(idx, CipherArray):
            raise TypeError("cannot index with a CipherArray")
        out = self.data[idx]
        if not isinstance(out, np.ndarray):
            cell = np.empty((), dtype=object)
            cell[()] = out
            out = cell
        return self._like(out)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def reshape(self, *shape) -> "CipherArray":
        return self._like(self.data.reshape(*shape))

    def ravel(self) -> "CipherArray":
        return self._like(self.data.ravel())

    def flatten(self) -> "CipherArray":
        return self._like(self.data.flatten())

    @property
    def T(self) -> "CipherArray":
        return self._like(self.data.T)

    def transpose(self, *axes) -> "CipherArray":
        return self._like(self.data.transpose(*axes))

    def copy(self) -> "CipherArray":
        return self._like(self.data.copy())

    # ---- scale management ------------------------------------------------------------
    def _check_bound(self, bound: int, what: str) -> int:
        if bound > self.pk.max_int:
            raise CryptoError(
                f"{what} could reach {bound.bit_length()} bits, beyond the safe plaintext range of this "
                f"{self.pk.key_bits}-bit {self.pk.scheme} key ({self.pk.max_int.bit_length()} bits): "
                "lower the precision (fewer fractional bits), sum fewer terms, or use a larger key")
        return bound

    def upscale(self, exp: int) -> "CipherArray":
        """Same plaintexts with ``exp`` fractional bits (``exp >= self.exp``): multiplies by ``2**(exp - self.exp)``."""
        exp = int(exp)
        if exp < self.exp:
            raise CryptoError(f"cannot lower a ciphertext's precision from {self.exp} to {exp} bits "
                              "homomorphically; decrypt and re-encrypt, or align the other operand up")
        if exp == self.exp:
            return self
        if exp > _MAX_EXP:
            raise CryptoError(f"{exp} fractional bits is beyond the supported {_MAX_EXP}")
        bound = self._check_bound(self.bound << (exp - self.exp), "rescaling")
        N = self.pk.cipher_modulus
        vals = gmpy2.powmod_base_list(_object_flat(self.data), mpz(1) << (exp - self.exp), N) if self.size else []
        return CipherArray(self.pk, encoding.object_array(list(vals), self.shape), exp, bound,
                           self._packing_scaled(1 << (exp - self.exp)))

    def _same_key(self, other: "CipherArray") -> None:
        if other.pk != self.pk:
            raise CryptoError("cannot combine ciphertexts under different public keys "
                              f"({self.pk.fingerprint} and {other.pk.fingerprint})")

    # ---- addition ---------------------------------------------------------------------
    def __add__(self, other: Any) -> "CipherArray":
        N = self.pk.cipher_modulus
        if isinstance(other, CipherArray):
            self._same_key(other)
            exp = max(self.exp, other.exp)
            a, b = self.upscale(exp), other.upscale(exp)
            da, db = np.broadcast_arrays(a.data, b.data)
            bound = self._check_bound(a.bound + b.bound, "this sum")
            vals = [x * y % N for x, y in zip(da.ravel().tolist(), db.ravel().tolist())]
            packing = None
            if a.packing is not None and b.packing is not None and a.packing[::2] == b.packing[::2]:
                packing = (a.packing[0], a.packing[1] + b.packing[1], a.packing[2])
            return CipherArray(self.pk, encoding.object_array(vals, da.shape), exp, bound, packing)
        plain = np.asarray(other)
        if plain.dtype == object and plain.size and isinstance(plain.ravel()[0], CipherArray):
            return NotImplemented
        if encoding.is_integral(plain):
            a, ints = self, encoding.encode(plain, self.exp)
        else:
            exp = max(self.exp, self.pk.precision_bits)
            a, ints = self.upscale(exp), encoding.encode(plain, exp)
        bound = self._check_bound(a.bound + encoding.max_abs(ints), "this sum")
        da, di = np.broadcast_arrays(a.data, ints)
        lifted = self.pk._lift(di.ravel().tolist())
        vals = [x * y % N for x, y in zip(da.ravel().tolist(), lifted)]
        return CipherArray(self.pk, encoding.object_array(vals, da.shape), a.exp, bound)

    __radd__ = __add__

    def __neg__(self) -> "CipherArray":
        vals = batch_invert(_object_flat(self.data), self.pk.cipher_modulus)
        packing = self.packing if self.packing is not None and self.packing[2] else None  # signed slots negate
        return CipherArray(self.pk, encoding.object_array(vals, self.shape), self.exp, self.bound, packing)

    def __sub__(self, other: Any) -> "CipherArray":
        if isinstance(other, CipherArray):
            return self + (-other)
        plain = np.asarray(other)
        if plain.dtype == object:
            plain = np.array([-v for v in plain.ravel()], dtype=object).reshape(plain.shape)
            return self + plain
        return self + (-plain)

    def __rsub__(self, other: Any) -> "CipherArray":
        return (-self) + other

    # ---- multiplication by plaintext -----------------------------------------------
    def _encode_multiplier(self, other: Any, precision: int | None) -> tuple[np.ndarray, int]:
        plain = np.asarray(other)
        if plain.dtype == object and any(isinstance(v, CipherArray) for v in plain.ravel()):
            raise TypeError("cannot multiply two ciphertexts: the scheme is only additively homomorphic")
        if encoding.is_integral(plain):
            return encoding.encode(plain, 0), 0
        f = self.pk.mul_precision_bits if precision is None else int(precision)
        return encoding.encode(plain, f), f

    def __mul__(self, other: Any) -> "CipherArray":
        if isinstance(other, CipherArray):
            raise TypeError("cannot multiply two ciphertexts: Paillier and Okamoto-Uchiyama are only "
                            "additively homomorphic; multiply by a plaintext, or use atoll.secure's MPC")
        return self.mul(other)

    __rmul__ = __mul__

    def mul(self, other: Any, precision: int | None = None, jobs: Jobs = 1) -> "CipherArray":
        """Elementwise product with a plaintext scalar or array (broadcasting).

        Non-integral plaintexts are encoded with ``precision`` fractional bits
        (default: the key's ``mul_precision_bits``); the result's exponent is the sum.
        """
        ints, f = self._encode_multiplier(other, precision)
        if self.exp + f > _MAX_EXP:
            raise CryptoError(f"{self.exp + f} fractional bits is beyond the supported {_MAX_EXP}")
        maxabs = encoding.max_abs(ints)
        bound = self._check_bound(self.bound * maxabs, "this product")
        packing = self._packing_by_ints(ints, f, maxabs)
        N = self.pk.cipher_modulus
        if ints.ndim == 0:
            k = int(ints[()])
            flat = _object_flat(self.data)
            if k == 0:
                vals = [mpz(1)] * len(flat)
            elif k > 0:
                vals = list(gmpy2.powmod_base_list(flat, k, N)) if flat else []
            else:
                inv = batch_invert(flat, N)
                vals = list(gmpy2.powmod_base_list(inv, -k, N)) if flat else []
            return CipherArray(self.pk, encoding.object_array(vals, self.shape), self.exp + f, bound, packing)
        da, di = np.broadcast_arrays(self.data, ints)
        cs, ks = da.ravel().tolist(), di.ravel().tolist()
        eng = _engine.get(jobs)
        n = eng.n_workers
        if n > 1 and len(cs) >= 64 * n:
            chunks = _engine.split(len(cs), n)
            parts = eng.map(_powmod_pairs_worker, [(N, cs[a:b], ks[a:b]) for a, b in chunks])
            vals = [v for part in parts for v in part]
        else:
            vals = _powmod_pairs_worker(N, cs, ks)
        return CipherArray(self.pk, encoding.object_array(vals, da.shape), self.exp + f, bound, packing)

    def __truediv__(self, other: Any) -> "CipherArray":
        if isinstance(other, CipherArray):
            raise TypeError("cannot divide by a ciphertext")
        return self * (1.0 / np.asarray(other, dtype=np.float64))

    # ---- reductions --------------------------------------------------------------------
    def sum(self, axis: int | None = None) -> "CipherArray":
        """Homomorphic sum (product of ciphertexts) over ``axis`` (None: all elements)."""
        N = self.pk.cipher_modulus
        if axis is None:
            flat = _object_flat(self.data)
            acc = mpz(1)
            for c in flat:
                acc = acc * c % N
            bound = self._check_bound(self.bound * len(flat), "this sum")
            return CipherArray(self.pk, encoding.object_array([acc], ()), self.exp, bound, self._packing_scaled(len(flat)))
        axis = axis % self.ndim
        moved = np.moveaxis(self.data, axis, -1)
        k = moved.shape[-1]
        rows = moved.reshape(-1, k)
        out = []
        for row in rows:
            acc = mpz(1)
            for c in row:
                acc = acc * c % N
            out.append(acc)
        bound = self._check_bound(self.bound * k, "this sum")
        return CipherArray(self.pk, encoding.object_array(out, moved.shape[:-1]), self.exp, bound, self._packing_scaled(k))

    def bincount(self, groups: Any, n_groups: int | None = None) -> "CipherArray":
        """Sum elements (rows, for 2-d arrays) by group index: ``out[g] = sum of self[i] where groups[i] == g``.

        One modular multiplication per element (:func:`~atoll.crypto.multiexp.grouped_products`, the kernel
        of :class:`~atoll.crypto.histogram.RowHistograms`, which builds SecureBoost's histograms).
        Empty groups are deterministic encryptions of zero (see :meth:`rerandomize`).
        """
        g = np.asarray(groups)
        if g.ndim != 1 or g.shape[0] != self.shape[0] or (g.size and g.dtype.kind not in "iu"):
            raise CryptoError(f"groups must be a 1-d integer array of length {self.shape[0]}")
        if g.size and g.min() < 0:
            raise CryptoError("group indices must be non-negative")
        n_groups = int(g.max()) + 1 if n_groups is None and g.size else int(n_groups or 0)
        if g.size and g.max() >= n_groups:
            raise CryptoError(f"group index {int(g.max())} >= n_groups={n_groups}")
        counts = np.bincount(g, minlength=n_groups) if g.size else np.zeros(n_groups, dtype=np.int64)
        biggest = int(counts.max()) if counts.size else 0
        bound = self._check_bound(self.bound * biggest, "this grouped sum")
        N = self.pk.cipher_modulus
        rows = self.data.reshape(self.shape[0], -1)
        k = rows.shape[1]
        cols = [grouped_products(rows[:, j].tolist(), g.reshape(-1, 1), n_groups, N) for j in range(k)]
        vals = [cols[j][i] for i in range(n_groups) for j in range(k)]
        return CipherArray(self.pk, encoding.object_array(vals, (n_groups,) + self.shape[1:]), self.exp, bound,
                           self._packing_scaled(biggest))

    # ---- matrix products -------------------------------------------------------------
    def matvec_t(self, X: Any, jobs: Jobs = 1, precision: int | None = None) -> "CipherArray":
        """``X.T @ self`` for a plaintext matrix ``X`` (n x d) and ``self`` of shape (n,) or (n, k)."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise CryptoError(f"matvec_t needs a 2-d plaintext matrix, got shape {X.shape}")
        return self._plain_matmul(X.T, jobs=jobs, precision=precision)

    def __rmatmul__(self, other: Any) -> "CipherArray":
        if isinstance(other, CipherArray):
            raise TypeError("cannot multiply two ciphertexts")
        return self._plain_matmul(np.asarray(other))

    def __matmul__(self, other: Any) -> "CipherArray":
        if isinstance(other, CipherArray):
            raise TypeError("cannot multiply two ciphertexts: the scheme is only additively homomorphic")
        B = np.asarray(other)
        if self.ndim == 1:
            # v (n,) @ B (n,) or (n, d)  ==  B.T @ v
            return self._plain_matmul(B.T if B.ndim == 2 else B.reshape(1, -1)).reshape(
                () if B.ndim == 1 else (B.shape[1],))
        if self.ndim == 2:
            # E (m, n) @ B (n,) or (n, d)  ==  (B.T @ E.T).T
            res = self.T._plain_matmul(B.T if B.ndim == 2 else B.reshape(1, -1))
            return res.T if B.ndim == 2 else res.reshape(self.shape[0])
        raise CryptoError("CipherArray @ plaintext supports 1-d and 2-d ciphertext arrays")

    def _plain_matmul(self, A: np.ndarray, jobs: Jobs = 1, precision: int | None = None) -> "CipherArray":
        """Plaintext ``A`` (d x n) times ``self`` (n,) or (n, k), one multi-exponentiation per output."""
        if A.ndim == 1:
            A = A.reshape(1, -1)
            squeeze = True
        else:
            squeeze = False
        if A.ndim != 2 or self.ndim not in (1, 2) or A.shape[1] != self.shape[0]:
            raise CryptoError(f"shapes {A.shape} and {self.shape} do not align for plaintext @ ciphertext")
        ints, f = self._encode_multiplier(A, precision)
        if self.exp + f > _MAX_EXP:
            raise CryptoError(f"{self.exp + f} fractional bits is beyond the supported {_MAX_EXP}")
        row_l1 = max((sum(abs(v) for v in row) for row in ints.tolist()), default=0)
        bound = self._check_bound(self.bound * row_l1, "this matrix product")
        packing = self._packing_by_ints(ints, f, row_l1)
        maxabs = encoding.max_abs(ints)
        exps = ints.astype(np.int64) if maxabs < (1 << 62) else ints
        N = self.pk.cipher_modulus
        eng = _engine.get(jobs)
        jobs = eng.n_workers
        cols = [self.data] if self.ndim == 1 else [self.data[:, j] for j in range(self.shape[1])]
        results = []
        for col in cols:
            bases = col.tolist()
            d = exps.shape[0]
            if jobs > 1 and d >= jobs:
                chunks = _engine.split(d, jobs)
                parts = eng.map(_matmul_rows_worker, [(N, bases, exps[a:b]) for a, b in chunks])
                res = [c for part in parts for c in part]
            elif jobs > 1 and len(bases) >= 512 * jobs:
                chunks = _engine.split(len(bases), jobs)
                parts = eng.map(_matmul_rows_worker, [(N, bases[a:b], exps[:, a:b]) for a, b in chunks])
                res = []
                for j in range(d):
                    acc = mpz(1)
                    for part in parts:
                        acc = acc * part[j] % N
                    res.append(acc)
            else:
                res = _matmul_rows_worker(N, bases, exps)
            results.append(res)
        if self.ndim == 1:
            data = encoding.object_array(results[0], (A.shape[0],))
        else:
            data = encoding.object_array([results[j][i] for i in range(A.shape[0]) for j in range(len(cols))],
                             (A.shape[0], len(cols)))
        out = CipherArray(self.pk, data, self.exp + f, bound, packing)
        return out.reshape(data.shape[1:]) if squeeze else out

    # ---- misc ---------------------------------------------------------------------------
    def rerandomize(self, jobs: Jobs = 1) -> "CipherArray":
        """Same plaintexts, fresh randomness (multiply each by a new encryption of zero)."""
        vals = self.pk._rerandomize_flat(_object_flat(self.data), jobs)
        return self._like(encoding.object_array(vals, self.shape))

    def to_wire(self) -> wire.BigIntArray:
        """The ciphertexts as a fixed-width :class:`atoll.wire.BigIntArray`."""
        return wire.BigIntArray([int(c) for c in _object_flat(self.data)], self.shape, self.pk.cipher_bytes)

    def nbytes(self) -> int:
        return self.size * self.pk.cipher_bytes


def _align(arrays: Iterable[CipherArray]) -> list[CipherArray]:
    arrays = list(arrays)
    if not arrays:
        raise CryptoError("nothing to concatenate")
    first = arrays[0]
    for a in arrays[1:]:
        if not isinstance(a, CipherArray):
            raise CryptoError("concatenate needs CipherArrays")
        first._same_key(a)
    exp = max(a.exp for a in arrays)
    return [a.upscale(exp) for a in arrays]


def concatenate(arrays: Iterable[CipherArray], axis: int = 0) -> CipherArray:
    """Join ciphertext arrays (same key) along ``axis``; exponents are aligned up."""
    arrays = _align(arrays)
    data = np.concatenate([a.data for a in arrays], axis=axis)
    return CipherArray(arrays[0].pk, data, arrays[0].exp, max(a.bound for a in arrays), _joint_packing(arrays))


def stack(arrays: Iterable[CipherArray], axis: int = 0) -> CipherArray:
    """Stack ciphertext arrays (same key, same shape) along a new ``axis``."""
    arrays = _align(arrays)
    data = np.stack([a.data for a in arrays], axis=axis)
    return CipherArray(arrays[0].pk, data, arrays[0].exp, max(a.bound for a in arrays), _joint_packing(arrays))


def _joint_packing(arrays: list[CipherArray]) -> tuple[int, int, bool] | None:
    ps = [a.packing for a in arrays]
    if any(p is None for p in ps) or len({p[::2] for p in ps}) != 1:
        return None
    return (ps[0][0], max(p[1] for p in ps), ps[0][2])


# ---- wire form (registered with the codec by atoll.crypto.registry) ------------------------------
def to_fields(ca: CipherArray) -> dict:
    """The wire fields of ``ca`` (its public key travels with it)."""
    return {"scheme": ca.pk.scheme, "key": ca.pk._fields(), "exp": ca.exp, "bound": ca.bound,
            "packing": None if ca.packing is None else [int(ca.packing[0]), int(ca.packing[1]), int(ca.packing[2])],
            "data": ca.to_wire()}


def from_fields(d: dict, key_from_fields) -> CipherArray:
    """Rebuild and validate a received CipherArray; ``key_from_fields(scheme, fields)`` rebuilds its key."""
    if set(d) != {"scheme", "key", "exp", "bound", "packing", "data"}:
        raise ValueError(f"CipherArray fields {sorted(d)} are not the expected ones")
    if not isinstance(d["scheme"], str) or type(d["key"]) is not dict:
        raise ValueError("bad CipherArray key")
    pk = key_from_fields(d["scheme"], d["key"])
    exp, bound, data = d["exp"], d["bound"], d["data"]
    if type(exp) is not int or not 0 <= exp <= _MAX_EXP:
        raise ValueError(f"bad exponent {exp!r}")
    if type(bound) is not int or bound < 0:
        raise ValueError("bad plaintext bound")
    if not isinstance(data, wire.BigIntArray):
        raise ValueError("CipherArray data must be a BigIntArray")
    packing = d["packing"]
    if packing is not None:
        if (type(packing) is not list or len(packing) != 3 or any(type(v) is not int or v < 0 for v in packing)
                or not 0 < packing[0] <= 8192 or packing[2] > 1):
            raise ValueError("bad packing descriptor")
        packing = (packing[0], packing[1], bool(packing[2]))
    N = pk.cipher_modulus
    vals = [mpz(v) for v in data.values]
    if any(v >= N or v <= 0 for v in vals):
        raise ValueError("a ciphertext is out of range for its public key")
    return CipherArray(pk, encoding.object_array(vals, data.shape), exp, bound, packing)
