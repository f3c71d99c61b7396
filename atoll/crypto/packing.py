"""Packing several small non-negative integers into one plaintext, with checked headroom.

A packed plaintext is ``sum_k v_k * 2**(W*k)`` with slot width
``W = value_bits + ceil(log2(max_terms))``: up to ``max_terms`` packed
ciphertexts (or one multiplied by non-negative integers summing to at most
``max_terms``) can be added before a slot could spill into its neighbour. The
resulting :class:`CipherArray` carries ``packing = (W, per-slot bound)``; every
homomorphic operation updates the per-slot bound and raises
:class:`~atoll.errors.CryptoError` before a slot could overflow, and operations
that break the layout (adding a plaintext, negation, negative or fractional
multipliers) drop it, so :meth:`Packer.decrypt_ints` refuses the result.

Typical use (SecureBoost histograms): pack the fixed-point gradient and hessian
of each row (shifted to be non-negative) into one ciphertext, let the host sum
rows per bin, decrypt one value per bin instead of two.
"""

from __future__ import annotations

import gmpy2
import numpy as np

from atoll.crypto import encoding
from atoll.crypto.cipherarray import CipherArray
from atoll.errors import CryptoError

__all__ = ["Packer"]


class Packer:
    """Pack rows of up to ``n_slots`` non-negative integers below ``2**value_bits`` into one plaintext each.

    ``value_bits``: bits of each value as encrypted. ``max_terms``: how many packed
    ciphertexts may be summed (headroom). ``n_slots``: slots per plaintext
    (default: as many as fit the key's safe plaintext range).
    """

    def __init__(self, pk, value_bits: int, max_terms: int = 1, n_slots: int | None = None):
        self.pk = pk
        self.value_bits = int(value_bits)
        self.max_terms = int(max_terms)
        if self.value_bits < 1 or self.max_terms < 1:
            raise CryptoError("value_bits and max_terms must be positive")
        self.slot_bits = self.value_bits + (self.max_terms - 1).bit_length()
        capacity = pk.max_int.bit_length() - 1  # bits usable without reaching the signed range limit
        fit = capacity // self.slot_bits
        if fit < 1:
            raise CryptoError(f"a {self.slot_bits}-bit slot does not fit this key's {capacity}-bit plaintexts")
        if n_slots is None:
            n_slots = fit
        n_slots = int(n_slots)
        if not 1 <= n_slots <= fit:
            raise CryptoError(f"{n_slots} slots of {self.slot_bits} bits do not fit; at most {fit} fit "
                              f"this {pk.key_bits}-bit {pk.scheme} key")
        self.n_slots = n_slots

    def __repr__(self) -> str:
        return (f"Packer(value_bits={self.value_bits}, max_terms={self.max_terms}, "
                f"slot_bits={self.slot_bits}, n_slots={self.n_slots})")

    def pack_ints(self, values) -> np.ndarray:
        """Plaintext packing of ``values`` (rows, k) or (k,) with k <= n_slots -> object array of ints (rows,) / ()."""
        a = np.asarray(values)
        if a.dtype.kind not in "iu" and a.dtype != object:
            raise CryptoError(f"Packer packs integers, got dtype {a.dtype}; quantise to ints first")
        squeeze = a.ndim == 1
        if squeeze:
            a = a.reshape(1, -1)
        if a.ndim != 2:
            raise CryptoError(f"pack rows of values: expected shape (rows, k), got {a.shape}")
        if a.shape[1] > self.n_slots:
            raise CryptoError(f"{a.shape[1]} values per row, but only {self.n_slots} slots fit")
        W = self.slot_bits
        limit = 1 << self.value_bits
        out = np.empty(a.shape[0], dtype=object)
        for i, row in enumerate(a.tolist()):
            acc = 0
            for k, v in enumerate(row):
                v = int(v)
                if v < 0 or v >= limit:
                    raise CryptoError(f"packed value {v} is outside [0, 2**{self.value_bits}); "
                                      "shift negative values by an offset and check value_bits")
                acc |= v << (W * k)
            out[i] = acc
        return out.reshape(()) if squeeze else out

    def encrypt_ints(self, values, jobs: int = 1) -> CipherArray:
        """Encrypt rows of small non-negative ints; one ciphertext per row (shape (rows,), or () for one row)."""
        packed = self.pack_ints(values)
        enc = self.pk.encrypt_int(packed, jobs=jobs)
        enc.packing = (self.slot_bits, (1 << self.value_bits) - 1)
        return enc

    def unpack_ints(self, packed, k: int | None = None) -> np.ndarray:
        """Split packed non-negative ints (any shape) into (..., k) slots (int64 when they fit, else object)."""
        k = self.n_slots if k is None else int(k)
        arr = np.asarray(packed, dtype=object)
        W = self.slot_bits
        mask = (1 << W) - 1
        flat = arr.ravel().tolist()
        rows = []
        for v in flat:
            v = int(v)
            if v < 0:
                raise CryptoError("a packed value decrypted negative: it was not made by this Packer")
            rows.append([(v >> (W * j)) & mask for j in range(k)])
        dtype = np.int64 if W <= 62 else object
        return np.array(rows, dtype=dtype).reshape(arr.shape + (k,))

    # ---- homomorphic packing of existing ciphertexts (signed fixed point) --------------
    def pack(self, enc: CipherArray) -> CipherArray:
        """Pack the signed values of a 1-d ``enc`` into ``ceil(len(enc) / n_slots)`` ciphertexts, homomorphically.

        Each value (a signed fixed-point integer, |v| < 2**(value_bits - 1) by its
        tracked bound) is shifted by ``2**(value_bits - 1)`` and placed in a slot:
        ``c_0 * c_1**(2**W) * c_2**(2**2W) ...`` (Horner: ``(k - 1) * W`` squarings per
        packed ciphertext). Decrypt with :meth:`decrypt_packed`: one decryption per
        ``n_slots`` values. Packed results of the same Packer may be added before
        decryption (the number of terms is tracked); the exponent is kept.
        """
        flat = enc.ravel()
        half = 1 << (self.value_bits - 1)
        if flat.bound >= half:
            raise CryptoError(f"values of up to {flat.bound.bit_length()} bits do not fit signed slots of "
                              f"{self.value_bits} bits; build the Packer with value_bits >= {flat.bound.bit_length() + 1}")
        pk = self.pk
        N = pk.cipher_modulus
        lift = pk._lift([half])[0]
        cs = [c * lift % N for c in flat.data.tolist()]
        W = self.slot_bits
        shift = 1 << W
        out = []
        for start in range(0, len(cs), self.n_slots):
            group = cs[start:start + self.n_slots]
            acc = group[-1]
            for c in reversed(group[:-1]):
                acc = gmpy2.powmod(acc, shift, N) * c % N
            out.append(acc)
        data = encoding.object_array(out, (len(out),))
        top = (1 << self.value_bits) - 1
        packed_bound = sum(top << (W * j) for j in range(min(self.n_slots, len(cs)))) if cs else 0
        return CipherArray(pk, data, flat.exp, packed_bound, (W, top))

    def decrypt_packed(self, sk, packed: CipherArray, count: int, jobs: int = 1) -> np.ndarray:
        """Inverse of :meth:`pack` (also after adding packed results): the first ``count`` values as float64."""
        if packed.packing is None or packed.packing[0] != self.slot_bits:
            raise CryptoError("not packed by this Packer's pack(); build the Packer with the sender's parameters")
        top = (1 << self.value_bits) - 1
        terms = -(-packed.packing[1] // top)
        half = 1 << (self.value_bits - 1)
        slots = self.unpack_ints(sk.decrypt_int(packed, jobs=jobs), self.n_slots)
        flat = [int(v) - terms * half for v in slots.reshape(-1).tolist()][:count]
        if len(flat) < count:
            raise CryptoError(f"asked for {count} values but only {len(flat)} slots were decrypted")
        return encoding.decode(flat, packed.exp)

    def decrypt_ints(self, sk, enc: CipherArray, k: int | None = None, jobs: int = 1) -> np.ndarray:
        """Decrypt packed ciphertexts (any shape) to an array of shape ``enc.shape + (k,)`` (default k = n_slots)."""
        if enc.packing is None:
            raise CryptoError("this CipherArray is not packed (or an operation broke its packing: adding "
                              "plaintexts, negation, fractional or negative multipliers); decrypt it with "
                              "sk.decrypt_int instead")
        if enc.packing[0] != self.slot_bits:
            raise CryptoError(f"ciphertexts were packed with {enc.packing[0]}-bit slots, this Packer uses "
                              f"{self.slot_bits}; build the Packer with the sender's value_bits and max_terms")
        if enc.exp != 0:
            raise CryptoError("packed ciphertexts must have exponent 0")
        return self.unpack_ints(sk.decrypt_int(enc, jobs=jobs), k)
