"""Packing several small integers into one plaintext, with checked headroom.

A packed plaintext is ``sum_k v_k * 2**(W*k)`` with slot width
``W = value_bits + ceil(log2(max_terms))``: up to ``max_terms`` packed
ciphertexts (or one multiplied by integers whose magnitudes sum to at most
``max_terms``) can be added before a slot could spill into its neighbour.
Unsigned slots hold ``[0, 2**value_bits)``; signed slots (``signed=True``) hold
``|v| < 2**(value_bits - 1)`` and decode centred, so negative values need no
offset and sums of any sign stay exact. The resulting :class:`CipherArray`
carries ``packing = (W, per-slot bound, signed)``; every homomorphic operation
updates the per-slot bound and raises :class:`~atoll.errors.CryptoError` before a
slot could overflow, and operations that break the layout (adding a plaintext;
for unsigned slots also negation and negative multipliers; fractional
multipliers) drop it, so :meth:`Packer.decrypt_ints` refuses the result.

Two uses:

* rows: :meth:`Packer.encrypt_ints` packs each row's values into one plaintext
  (SecureBoost: the quantised g and h of every output of a row, signed slots);
* compression: :meth:`Packer.pack` packs existing ciphertexts along their last
  axis by Horner's rule, ``c_0 * c_1**(2**S) * c_2**(2**2S) ...`` (SecureBoost: a
  node's bin sums, each already holding the (g, h) slots, before the single
  decryption per ``n_slots`` slots).
"""

from __future__ import annotations

import numpy as np
from gmpy2 import mpz

from atoll.crypto import encoding
from atoll.crypto import engine as _engine
from atoll.crypto.engine import Jobs
from atoll.crypto.cipherarray import CipherArray
from atoll.crypto.multiexp import horner_pack
from atoll.errors import CryptoError

__all__ = ["Packer"]


def _horner_worker(values: tuple, per: int, shift_bits: int, modulus) -> tuple:
    return _engine.ship(horner_pack(_engine.unship(values), per, shift_bits, modulus))


class Packer:
    """Pack rows of up to ``n_slots`` integers of ``value_bits`` bits into one plaintext each.

    ``value_bits``: bits of each value as encrypted (the sign bit included when ``signed``).
    ``max_terms``: how many packed ciphertexts may be summed (headroom). ``n_slots``: slots per
    plaintext (default: as many as fit the key's safe plaintext range). ``signed``: slots hold
    signed values and decode centred.
    """

    def __init__(self, pk, value_bits: int, max_terms: int = 1, n_slots: int | None = None, signed: bool = False):
        self.pk = pk
        self.value_bits = int(value_bits)
        self.max_terms = int(max_terms)
        self.signed = bool(signed)
        if self.value_bits < (2 if self.signed else 1) or self.max_terms < 1:
            raise CryptoError("value_bits and max_terms must be positive (value_bits >= 2 for signed slots)")
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
                f"slot_bits={self.slot_bits}, n_slots={self.n_slots}, signed={self.signed})")

    def _limits(self) -> tuple[int, int]:
        """Allowed values at encryption: ``lo <= v < hi``."""
        if self.signed:
            half = 1 << (self.value_bits - 1)
            return -half + 1, half
        return 0, 1 << self.value_bits

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
        lo, hi = self._limits()
        cols = [[int(v) for v in c] for c in a.T.tolist()]
        for c in cols:
            if c and (min(c) < lo or max(c) >= hi):
                bad = min(c) if min(c) < lo else max(c)
                what = (f"(-2**{self.value_bits - 1}, 2**{self.value_bits - 1})" if self.signed
                        else f"[0, 2**{self.value_bits}); shift negative values by an offset (or use signed "
                        "slots) and check value_bits")
                raise CryptoError(f"packed value {bad} is outside {what}")
        W = self.slot_bits
        out = cols[-1] if cols else [0] * a.shape[0]
        for c in reversed(cols[:-1]):  # Horner from the top slot: exact for signed values too
            out = [(x << W) + y for x, y in zip(out, c)]
        arr = encoding.object_array(out, (a.shape[0],))
        return arr.reshape(()) if squeeze else arr

    def encrypt_ints(self, values, jobs: Jobs = 1) -> CipherArray:
        """Encrypt rows of small ints; one ciphertext per row (shape (rows,), or () for one row)."""
        a = np.asarray(values)
        packed = self.pack_ints(a)
        enc = self.pk.encrypt_int(packed, jobs=jobs)
        enc.packing = (self.slot_bits, int(encoding.max_abs(np.asarray(a, dtype=object))), self.signed)
        return enc

    def unpack_ints(self, packed, k: int | None = None) -> np.ndarray:
        """Split packed ints (any shape) into (..., k) slots (int64 when they fit, else object); signed slots
        decode centred and must account for the whole integer."""
        k = self.n_slots if k is None else int(k)
        arr = np.asarray(packed, dtype=object)
        W = self.slot_bits
        mask = (1 << W) - 1
        rows = []
        if self.signed:
            half, full = 1 << (W - 1), 1 << W
            for v in arr.ravel().tolist():
                v = int(v)
                row = []
                for _ in range(k):
                    s = v & mask
                    if s >= half:
                        s -= full
                    row.append(s)
                    v = (v - s) >> W
                if v:
                    raise CryptoError("a packed value has bits above its slots: the sums overflowed, or it was "
                                      "not made by this Packer")
                rows.append(row)
        else:
            for v in arr.ravel().tolist():
                v = int(v)
                if v < 0:
                    raise CryptoError("a packed value decrypted negative: it was not made by this Packer")
                rows.append([(v >> (W * j)) & mask for j in range(k)])
        dtype = np.int64 if W <= 62 else object
        return np.array(rows, dtype=dtype).reshape(arr.shape + (k,))

    # ---- homomorphic packing of existing ciphertexts --------------------------------------
    def pack(self, enc: CipherArray, slots: int = 1, jobs: Jobs = 1) -> CipherArray:
        """Pack ``enc`` along its last axis, homomorphically: ``n_slots // slots`` ciphertexts into one.

        Inputs are plain signed fixed-point values (``slots=1``; unsigned Packers shift them by
        ``2**(value_bits - 1)``, which :meth:`decrypt_packed` removes) or ciphertexts packed by a Packer of
        the same slot width, each holding ``slots`` slots (e.g. histogram bins of (g, h)). Horner's rule
        costs ``slots * W`` squarings per packed ciphertext; the groups are spread over the engine for
        ``jobs``. Packed results of the same Packer may be added before decryption (the terms are
        tracked); the exponent is kept. Shape ``(..., m)`` -> ``(..., ceil(m / (n_slots // slots)))``.
        """
        slots = int(slots)
        if slots < 1:
            raise CryptoError("slots must be a positive number of slots per input ciphertext")
        per = self.n_slots // slots
        if per < 1:
            raise CryptoError(f"inputs of {slots} slots do not fit this Packer's {self.n_slots} slots")
        if enc.ndim == 0:
            enc = enc.reshape(1)
        pk = self.pk
        N = pk.cipher_modulus
        W = self.slot_bits
        data = enc.data.reshape(-1, enc.shape[-1])
        m = data.shape[1]
        if enc.packing is not None:
            if enc.packing[0] != W or enc.packing[2] != self.signed:
                raise CryptoError(f"these ciphertexts are packed in {'signed' if enc.packing[2] else 'unsigned'} "
                                  f"{enc.packing[0]}-bit slots; build the Packer with the same slot width and sign")
            slot_bound = enc.packing[1]
            rows = [r for r in data.tolist()]
        else:
            if slots != 1:
                raise CryptoError("unpacked ciphertexts hold one value each: use slots=1")
            half = 1 << (self.value_bits - 1)
            if enc.bound >= half:
                raise CryptoError(f"values of up to {enc.bound.bit_length()} bits do not fit signed slots of "
                                  f"{self.value_bits} bits; build the Packer with value_bits >= "
                                  f"{enc.bound.bit_length() + 1}")
            if self.signed:
                slot_bound = enc.bound
                rows = data.tolist()
            else:  # shift into [0, 2**value_bits)
                lift = pk._lift([half])[0]
                slot_bound = (1 << self.value_bits) - 1
                rows = [[c * lift % N for c in r] for r in data.tolist()]
        n_out = -(-m // per) if m else 0
        flat: list = []
        one = mpz(1)
        for r in rows:  # pad each row to whole groups with encryptions of zero (1): same as a shorter group
            flat += r
            flat += [one] * (n_out * per - m)
        eng = _engine.get(jobs)
        shift = slots * W
        groups = len(flat) // per if per else 0
        if eng.n_workers > 1 and groups >= 2 * eng.n_workers:
            bounds = _engine.split(groups, eng.n_workers)
            parts = eng.map(_horner_worker, [(_engine.ship(flat[a * per:b * per]), per, shift, N) for a, b in bounds])
            out = [v for part in parts for v in _engine.unship(part)]
        else:
            out = horner_pack(flat, per, shift, N)
        used = min(per, m) * slots
        bound = sum(slot_bound << (W * j) for j in range(used))
        shape = enc.shape[:-1] + (n_out,)
        return CipherArray(pk, encoding.object_array(out, shape), enc.exp, bound, (W, slot_bound, self.signed))

    def decrypt_packed(self, sk, packed: CipherArray, count: int, jobs: Jobs = 1) -> np.ndarray:
        """Inverse of :meth:`pack` of plain values (also after adding packed results): the first ``count``
        values as float64."""
        if packed.packing is None or packed.packing[0] != self.slot_bits or packed.packing[2] != self.signed:
            raise CryptoError("not packed by this Packer's pack(); build the Packer with the sender's parameters")
        slots = self.unpack_ints(sk.decrypt_int(packed, jobs=jobs), self.n_slots).reshape(-1).tolist()
        if self.signed:
            flat = [int(v) for v in slots][:count]
        else:
            top = (1 << self.value_bits) - 1
            terms = -(-packed.packing[1] // top)
            half = 1 << (self.value_bits - 1)
            flat = [int(v) - terms * half for v in slots][:count]
        if len(flat) < count:
            raise CryptoError(f"asked for {count} values but only {len(flat)} slots were decrypted")
        return encoding.decode(flat, packed.exp)

    def decrypt_ints(self, sk, enc: CipherArray, k: int | None = None,
                     jobs: Jobs = 1) -> np.ndarray:
        """Decrypt packed ciphertexts (any shape) to an array of shape ``enc.shape + (k,)`` (default k = n_slots)."""
        if enc.packing is None:
            raise CryptoError("this CipherArray is not packed (or an operation broke its packing: adding "
                              "plaintexts, negation, fractional or negative multipliers); decrypt it with "
                              "sk.decrypt_int instead")
        if enc.packing[0] != self.slot_bits or enc.packing[2] != self.signed:
            raise CryptoError(f"ciphertexts were packed with {'signed' if enc.packing[2] else 'unsigned'} "
                              f"{enc.packing[0]}-bit slots, this Packer uses {'signed' if self.signed else 'unsigned'} "
                              f"{self.slot_bits}-bit ones; build the Packer with the sender's value_bits, max_terms "
                              "and signed")
        if enc.exp != 0:
            raise CryptoError("packed ciphertexts must have exponent 0")
        return self.unpack_ints(sk.decrypt_int(enc, jobs=jobs), k)
