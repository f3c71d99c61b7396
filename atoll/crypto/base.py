"""What Paillier and Okamoto-Uchiyama keys share: encryption front end, randomness pool, decryption range checks.

A scheme subclasses :class:`PublicKeyBase` / :class:`PrivateKeyBase` and supplies
four pure primitives:

* ``_lift(ints)`` -- the deterministic part ``g**m`` of an encryption (no randomness),
* ``_fresh_masks(count)`` -- ``count`` fresh random factors (``h_s**r``),
* ``_raw_decrypt(cs)`` -- ciphertexts to plaintexts in ``[0, plain_modulus)``,
* ``_fields()`` / ``_from_fields(d)`` -- the public wire form.

Homomorphic operations are the same for both schemes (multiplication, inversion
and exponentiation modulo ``cipher_modulus``) and live in :class:`CipherArray`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from typing import Any, ClassVar

import gmpy2
import numpy as np
from gmpy2 import mpz

from atoll.crypto import encoding
from atoll.crypto import engine as _engine
from atoll.crypto.engine import Jobs
from atoll.crypto.cipherarray import CipherArray
from atoll.crypto.multiexp import FixedBaseTable
from atoll.errors import CryptoError

log = logging.getLogger(__name__)

__all__ = ["PublicKeyBase", "PrivateKeyBase", "key_settings", "shared_table"]

DEFAULT_PRECISION_BITS = 40      # fractional bits of encrypted values
DEFAULT_MUL_PRECISION_BITS = 24  # fractional bits of non-integral plaintext multipliers
#: the product of the primes below 2**16: a received modulus sharing one of them is no key
_SMALL_PRIMES = gmpy2.primorial(1 << 16)

_TABLES: dict[tuple, FixedBaseTable] = {}
_TABLES_LOCK = threading.Lock()


def shared_table(base, modulus, exp_bits: int, window: int, prebuild_bits: int | None = None) -> FixedBaseTable:
    """The process-wide fixed-base table for ``base`` modulo ``modulus`` (public data, built once, shared by all
    copies of a public key; randomness pools are never shared: they live on each key object)."""
    ident = (int(base), int(modulus), int(exp_bits), int(window))
    with _TABLES_LOCK:
        table = _TABLES.get(ident)
    if table is not None:
        return table
    table = FixedBaseTable(base, modulus, exp_bits, window, prebuild_bits=prebuild_bits)
    with _TABLES_LOCK:
        if len(_TABLES) > 32:
            _TABLES.clear()
        return _TABLES.setdefault(ident, table)


def _encrypt_worker(pk: "PublicKeyBase", ints: list) -> tuple:
    return _engine.ship(pk._encrypt_ints_local(ints, masks=None))


def _masks_worker(pk: "PublicKeyBase", count: int) -> tuple:
    return _engine.ship(pk._fresh_masks(count))


class PublicKeyBase:
    """Common front end of additively homomorphic public keys."""

    scheme: ClassVar[str] = ""
    key_bits: int
    precision_bits: int
    mul_precision_bits: int

    def __init__(self, n, precision_bits: int = DEFAULT_PRECISION_BITS,
                 mul_precision_bits: int = DEFAULT_MUL_PRECISION_BITS, window: int = 8, r_bits: int = 0) -> None:
        """Set-up shared by the schemes: modulus ``n``, fixed-point precisions, table window, random exponent bits."""
        self.n = mpz(n)
        self.key_bits = int(self.n.bit_length())
        self.precision_bits = int(precision_bits)
        self.mul_precision_bits = int(mul_precision_bits)
        self.window = int(window)
        self.r_bits = int(r_bits)
        self._pool: deque = deque()
        self._pool_lock = threading.Lock()

    @classmethod
    def _check_fields(cls, d: dict, names: tuple[str, ...], min_bits: int) -> dict:
        """Validate received public-key fields: exactly ``names`` plus the precisions, all ints, odd modulus
        ``n`` of ``min_bits`` .. 8192 bits, precisions in 0 .. 1024 (raises ValueError)."""
        label = f"{cls.scheme} public key"
        if set(d) != set(names) | {"precision_bits", "mul_precision_bits"}:
            raise ValueError(f"{label} fields {sorted(d)} are not the expected ones")
        if any(type(v) is not int for v in d.values()):
            raise ValueError(f"{label} fields must be integers")
        n = d["n"]
        if n.bit_length() < min_bits or n.bit_length() > 8192 or n % 2 == 0:
            raise ValueError(f"{label}: the modulus must be odd and between {min_bits} and 8192 bits")
        # a modulus of the expected shape: composite, no small factor, not a perfect square
        if gmpy2.gcd(n, _SMALL_PRIMES) != 1 or gmpy2.is_square(n) or gmpy2.is_prime(n, 32):
            raise ValueError(f"{label}: the modulus is not a product of large primes")
        for k in ("precision_bits", "mul_precision_bits"):
            if not 0 <= d[k] <= min(128, n.bit_length() // 8):
                raise ValueError(f"{label}: {k}={d[k]} out of range (0 .. {min(128, n.bit_length() // 8)})")
        return d

    # ---- to be provided by schemes -------------------------------------------------
    @property
    def cipher_modulus(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def max_int(self) -> int:  # pragma: no cover - abstract
        """Largest absolute plaintext integer that decrypts unambiguously."""
        raise NotImplementedError

    def _lift(self, ints: list) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fresh_masks(self, count: int) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fields(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def _from_fields(cls, d: dict) -> "PublicKeyBase":  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- identity ------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """Short hex digest identifying the key (safe to log)."""
        h = hashlib.sha256(self.scheme.encode())
        for k, v in sorted(self._fields().items()):
            h.update(k.encode() + b"=" + str(v).encode() + b";")
        return h.hexdigest()[:16]

    def _ident(self) -> tuple:
        return (self.scheme,) + tuple(sorted((k, v) for k, v in self._fields().items()
                                             if k not in ("precision_bits", "mul_precision_bits")))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKeyBase) and (self is other or self._ident() == other._ident())

    def __hash__(self) -> int:
        return hash(self._ident())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_bits={self.key_bits}, fingerprint={self.fingerprint})"

    def __reduce__(self):
        # to this party's own worker processes (atoll.crypto.engine): the public fields, rebuilt and checked
        # there; never the randomness pool (each factor is used once, by its owner)
        return (type(self)._from_fields, (self._fields(),))

    @property
    def cipher_bytes(self) -> int:
        """Fixed width in bytes of one ciphertext on the wire."""
        return (int(self.cipher_modulus).bit_length() + 7) // 8

    def warm_up(self, jobs: Jobs = 1) -> None:
        """Build this key's fixed-base tables now, here and in every worker of the engine for ``jobs``."""
        _engine.warm_up(self, jobs)

    # ---- randomness pool (offline/online split) ------------------------------------
    def precompute(self, count: int, jobs: Jobs = 1) -> None:
        """Compute ``count`` random factors now (offline), so that later encryptions cost one multiplication each.

        Every factor is used at most once: encryption pops it from the pool.
        """
        count = int(count)
        if count <= 0:
            return
        eng = _engine.get(jobs)
        if eng.n_workers > 1 and count >= 64:
            chunks = _engine.split(count, eng.n_workers)
            parts = eng.map(_masks_worker, [(self, b - a) for a, b in chunks])
            fresh = [m for part in parts for m in _engine.unship(part)]
        else:
            fresh = self._fresh_masks(count)
        with self._pool_lock:
            self._pool.extend(fresh)

    @property
    def pool_size(self) -> int:
        """Number of precomputed random factors not yet used."""
        return len(self._pool)

    def _take_masks(self, count: int) -> list:
        """Pop up to ``count`` precomputed random factors (never handed out twice)."""
        out = []
        with self._pool_lock:
            pool = self._pool
            k = min(count, len(pool))
            for _ in range(k):
                out.append(pool.popleft())
        return out

    def _masks(self, count: int) -> list:
        got = self._take_masks(count)
        if len(got) < count:
            got.extend(self._fresh_masks(count - len(got)))
        return got

    # ---- encryption ------------------------------------------------------------------
    def _check_range(self, ints: list) -> int:
        bound = max((abs(v) for v in ints), default=0)
        if bound > self.max_int:
            raise CryptoError(
                f"plaintext of {bound.bit_length()} bits exceeds the safe range of this "
                f"{self.key_bits}-bit {self.scheme} key ({self.max_int.bit_length()} bits); "
                "lower the precision, rescale the data, or use a larger key")
        return bound

    def _encrypt_ints_local(self, ints: list, masks: list | None) -> list:
        if masks is None:
            masks = self._masks(len(ints))
        N = self.cipher_modulus
        return [a * b % N for a, b in zip(self._lift(ints), masks)]

    def _encrypt_flat(self, ints: list, jobs: Jobs) -> list:
        eng = _engine.get(jobs)
        n = len(ints)
        pooled = self._take_masks(n)
        head = self._encrypt_ints_local(ints[:len(pooled)], pooled) if pooled else []
        rest = ints[len(pooled):]
        if not rest:
            return head
        if eng.n_workers > 1 and len(rest) >= 64:
            chunks = _engine.split(len(rest), eng.n_workers)
            parts = eng.map(_encrypt_worker, [(self, rest[a:b]) for a, b in chunks])
            return head + [c for part in parts for c in _engine.unship(part)]
        return head + self._encrypt_ints_local(rest, None)

    def encrypt_int(self, values: Any, jobs: Jobs = 1) -> CipherArray:
        """Encrypt integers exactly (exponent 0); any shape, Python ints of any size within the safe range."""
        arr = encoding.to_object_array(values)
        flat = arr.ravel().tolist()
        bound = self._check_range(flat)
        return CipherArray(self, encoding.object_array(self._encrypt_flat(flat, jobs), arr.shape), 0, bound)

    def encrypt(self, x: Any, precision: int | None = None, jobs: Jobs = 1) -> CipherArray:
        """Encrypt a float/int array or scalar in fixed point with ``precision`` fractional bits.

        Integer dtypes are encrypted exactly with exponent 0. The scale travels in
        the returned :class:`CipherArray`.
        """
        a = np.asarray(x)
        if a.dtype.kind in "iub":
            return self.encrypt_int(a, jobs=jobs)
        exp = self.precision_bits if precision is None else int(precision)
        if exp < 0:
            raise CryptoError("precision must be a non-negative number of fractional bits")
        ints = encoding.encode(a, exp)
        flat = ints.ravel().tolist()
        bound = self._check_range(flat)
        return CipherArray(self, encoding.object_array(self._encrypt_flat(flat, jobs), a.shape), exp, bound)

    def encrypt_zeros(self, shape, exp: int = 0, jobs: Jobs = 1) -> CipherArray:
        """Fresh encryptions of zero (useful to re-randomise or to start an accumulator)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        n = int(np.prod(shape)) if shape else 1
        return CipherArray(self, encoding.object_array(self._encrypt_flat([0] * n, jobs), shape), exp, 0)

    def _rerandomize_flat(self, cs: list, jobs: Jobs = 1) -> list:
        N = self.cipher_modulus
        zeros = self._encrypt_flat([0] * len(cs), jobs)
        return [c * z % N for c, z in zip(cs, zeros)]


class PrivateKeyBase:
    """Common decryption front end; never encodable on the wire."""

    __wire_forbidden__ = True
    public_key: PublicKeyBase

    @property
    def plain_modulus(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _raw_decrypt(self, cs: list, jobs: Jobs = 1) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(for {self.public_key!r})"

    def _check_key(self, enc: CipherArray) -> None:
        if not isinstance(enc, CipherArray):
            raise CryptoError(f"decrypt needs a CipherArray, got {type(enc).__name__}")
        if enc.pk != self.public_key:
            raise CryptoError("this ciphertext was made under another public key "
                              f"({enc.pk.fingerprint}, this key is {self.public_key.fingerprint}); "
                              "decrypt it with the matching private key")

    def _decrypt_unsigned(self, enc: CipherArray, jobs: Jobs = 1) -> list:
        self._check_key(enc)
        return self._raw_decrypt(enc.data.ravel().tolist(), jobs=_engine.get(jobs))

    def _to_signed(self, ms: list) -> list:
        M = self.plain_modulus
        lim = self.public_key.max_int
        out = []
        for m in ms:
            if m <= lim:
                out.append(int(m))
            elif m >= M - lim:
                out.append(int(m) - M)
            else:
                raise CryptoError(
                    "a decrypted value lies outside the safe plaintext range: the computation overflowed "
                    "(too many terms or too much precision for this key) or the ciphertext was tampered with; "
                    "lower the precision or use a larger key")
        return out

    def decrypt_int(self, enc: CipherArray, jobs: Jobs = 1) -> np.ndarray:
        """Raw signed fixed-point integers (object array of Python ints, same shape as ``enc``)."""
        signed = self._to_signed(self._decrypt_unsigned(enc, jobs))
        return encoding.object_array(signed, enc.shape)

    def decrypt(self, enc: CipherArray, jobs: Jobs = 1) -> np.ndarray:
        """Decrypt to float64 (same shape as ``enc``), dividing by the tracked scale ``2**enc.exp``."""
        signed = self._to_signed(self._decrypt_unsigned(enc, jobs))
        return encoding.decode(signed, enc.exp).reshape(enc.shape)


def key_settings(scheme: str, key_bits: int, min_bits: int, precision_bits: int | None,
                 mul_precision_bits: int | None) -> tuple[int, int, int]:
    """Checked ``key_bits`` and the precisions (defaults filled in) for a new key pair; warns below 2048 bits."""
    key_bits = int(key_bits)
    if key_bits < min_bits:
        raise CryptoError(f"{scheme} key_bits must be at least {min_bits} (use 2048 or 3072 in production)")
    if key_bits < 2048:
        log.warning("generating a %d-bit %s key: fine for tests, too weak for real data", key_bits, scheme)
    return (key_bits,
            DEFAULT_PRECISION_BITS if precision_bits is None else int(precision_bits),
            DEFAULT_MUL_PRECISION_BITS if mul_precision_bits is None else int(mul_precision_bits))


def random_below(bound: int) -> mpz:
    """Uniform random integer in ``[1, bound)`` from OS entropy."""
    import secrets

    while True:
        r = secrets.randbelow(int(bound))
        if r:
            return mpz(r)


def random_prime(bits: int, mod4_3: bool = True) -> mpz:
    """Random prime of exactly ``bits`` bits with the two top bits set (optionally ``= 3 mod 4``)."""
    import secrets

    while True:
        c = mpz(secrets.randbits(bits)) | (mpz(3) << (bits - 2)) | 1
        if mod4_3:
            c |= 3
        if gmpy2.is_prime(c, 40):
            return c


def lcm(a, b):
    return a // gmpy2.gcd(a, b) * b
