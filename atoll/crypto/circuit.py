"""Boolean circuits for garbling: a small builder, word-level blocks, and a layered compiled form.

Build a circuit for *one* instance; the garbler and evaluator run it on many instances at
once (SIMD: every wire holds one label per instance), and the compiled form groups gates
into levels so that each level is a handful of numpy operations over all its gates and all
instances::

    b = Builder()
    x, y = b.inputs(64), b.inputs(64)          # words are lists of wires, least significant first
    lt = b.lt_signed(x, y)                     # one wire
    circ = b.build([[lt]])                     # outputs: a list of words
    circ.evaluate_plain(bits)                  # (N, n_inputs) 0/1 -> (N, n_outputs) 0/1

Gates are XOR (free), INV (free: flips the garbler's zero label) and AND (two ciphertexts
with half-gates). Constants are folded while building (``x ^ 0 = x``, ``x & 1 = x``,
``x & x = x``, ...), so word blocks fed with constant words cost nothing for the constant
parts (the first-round index muxes of :meth:`Builder.max_argmax` are free).

Word blocks and their AND counts for ``n``-bit words: :meth:`~Builder.add` / ``sub``
``n - 1``; ``lt_unsigned`` / ``lt_signed`` ``n``; ``eq`` ``n - 1`` (depth ``log n``);
``mux`` ``n``; ``max_argmax`` over ``k`` words ``(k - 1)(2n + ceil(log2 k))``.

Compilation removes gates that no output depends on, levels gates by depth (a gate's level
is one more than its deepest input), and assigns each wire a storage slot that is reused
once the wire's last reader has run, so the label store of the garbler and evaluator holds
only the wires alive at once.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import numpy as np

from atoll.errors import CryptoError

__all__ = ["AND", "INV", "ONE", "XOR", "ZERO", "Builder", "Circuit", "Level"]

#: constant wires (folded away while building)
ZERO, ONE = -1, -2
XOR, AND, INV = 0, 1, 2


def _const(w: int) -> bool:
    return w < 0


class Builder:
    """Builds one instance of a circuit; declare every input before the first gate."""

    def __init__(self) -> None:
        self.n_inputs = 0
        self._gates: list[tuple[int, int, int]] = []  # (op, a, b); wire id = n_inputs + index

    # ------------------------------------------------------------------ wires and gates
    def inputs(self, n: int) -> list[int]:
        """``n`` fresh input wires (a word, least significant bit first)."""
        if self._gates:
            raise CryptoError("declare every circuit input before the first gate")
        first = self.n_inputs
        self.n_inputs += int(n)
        return list(range(first, self.n_inputs))

    def _gate(self, op: int, a: int, b: int = ZERO) -> int:
        self._gates.append((op, a, b))
        return self.n_inputs + len(self._gates) - 1

    def xor(self, a: int, b: int) -> int:
        if _const(a):
            a, b = b, a
        if _const(b):
            if _const(a):
                return ZERO if a == b else ONE
            return a if b == ZERO else self.inv(a)
        if a == b:
            return ZERO
        return self._gate(XOR, a, b)

    def inv(self, a: int) -> int:
        if _const(a):
            return ONE if a == ZERO else ZERO
        return self._gate(INV, a)

    def and_(self, a: int, b: int) -> int:
        if _const(a):
            a, b = b, a
        if _const(b):
            if _const(a):
                return ONE if a == b == ONE else ZERO
            return a if b == ONE else ZERO
        if a == b:
            return a
        return self._gate(AND, a, b)

    def or_(self, a: int, b: int) -> int:
        return self.xor(self.xor(a, b), self.and_(a, b))

    def mux(self, s: int, a: int, b: int) -> int:
        """``b if s else a``: one AND."""
        return self.xor(a, self.and_(s, self.xor(a, b)))

    # ------------------------------------------------------------------ words
    @staticmethod
    def const_word(value: int, n: int) -> list[int]:
        return [ONE if (value >> i) & 1 else ZERO for i in range(n)]

    def xor_word(self, x: list[int], y: list[int]) -> list[int]:
        return [self.xor(a, b) for a, b in zip(x, y, strict=True)]

    def not_word(self, x: list[int]) -> list[int]:
        return [self.inv(a) for a in x]

    def mux_word(self, s: int, a: list[int], b: list[int]) -> list[int]:
        """``b if s else a``, bit by bit."""
        return [self.mux(s, u, v) for u, v in zip(a, b, strict=True)]

    def and_bit_word(self, s: int, x: list[int]) -> list[int]:
        return [self.and_(s, a) for a in x]

    def _carry(self, c: int, a: int, b: int) -> int:
        """Carry out of ``a + b + c`` with one AND: ``c ^ ((a ^ c) & (b ^ c))``."""
        return self.xor(c, self.and_(self.xor(a, c), self.xor(b, c)))

    def add(self, x: list[int], y: list[int], carry: int = ZERO) -> list[int]:
        """``x + y (+ carry) mod 2^n``: ripple carry, ``n - 1`` ANDs."""
        if len(x) != len(y):
            raise CryptoError(f"adding words of {len(x)} and {len(y)} bits")
        out = []
        for i, (a, b) in enumerate(zip(x, y)):
            out.append(self.xor(self.xor(a, b), carry))
            if i + 1 < len(x):
                carry = self._carry(carry, a, b)
        return out

    def sub(self, x: list[int], y: list[int]) -> list[int]:
        """``x - y mod 2^n`` as ``x + ~y + 1``: ``n - 1`` ANDs."""
        return self.add(x, self.not_word(y), ONE)

    def neg(self, x: list[int]) -> list[int]:
        return self.sub(self.const_word(0, len(x)), x)

    def lt_unsigned(self, x: list[int], y: list[int]) -> int:
        """``x < y`` as unsigned integers: no carry out of ``x + ~y + 1``; ``n`` ANDs."""
        if len(x) != len(y):
            raise CryptoError(f"comparing words of {len(x)} and {len(y)} bits")
        carry = ONE
        for a, b in zip(x, y):
            carry = self._carry(carry, a, self.inv(b))
        return self.inv(carry)

    def lt_signed(self, x: list[int], y: list[int]) -> int:
        """``x < y`` in two's complement: unsigned comparison with the sign bits flipped."""
        return self.lt_unsigned(x[:-1] + [self.inv(x[-1])], y[:-1] + [self.inv(y[-1])])

    def eq(self, x: list[int], y: list[int]) -> int:
        """``x == y``: XNOR of every bit, AND-ed in a balanced tree (``n - 1`` ANDs, depth log n)."""
        if len(x) != len(y):
            raise CryptoError(f"comparing words of {len(x)} and {len(y)} bits")
        level = [self.inv(self.xor(a, b)) for a, b in zip(x, y)]
        while len(level) > 1:
            nxt = [self.and_(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        return level[0] if level else ONE

    def max_argmax(self, words: list[list[int]], signed: bool = True) -> tuple[list[int], list[int]]:
        """The largest word and the index of its first occurrence (a tournament tree).

        The right operand wins a match only if strictly larger, and the left subtree holds
        the lower indices, so ties go to the lowest index, as ``numpy.argmax``.
        """
        if not words:
            raise CryptoError("max of no values")
        k = len(words)
        ib = max(1, (k - 1).bit_length())
        lt = self.lt_signed if signed else self.lt_unsigned
        cur = [(w, self.const_word(i, ib)) for i, w in enumerate(words)]
        while len(cur) > 1:
            nxt = []
            for i in range(0, len(cur) - 1, 2):
                (va, ia), (vb, ix) = cur[i], cur[i + 1]
                s = lt(va, vb)
                nxt.append((self.mux_word(s, va, vb), self.mux_word(s, ia, ix)))
            if len(cur) % 2:
                nxt.append(cur[-1])
            cur = nxt
        return cur[0]

    def one_hot(self, index: list[int], k: int) -> list[int]:
        """Decoder: ``k`` wires, wire ``i`` is 1 iff ``index == i``."""
        out = []
        for i in range(k):
            bits = [a if (i >> j) & 1 else self.inv(a) for j, a in enumerate(index)]
            acc = ONE
            for bit in bits:
                acc = self.and_(acc, bit)
            out.append(acc)
        return out

    # ------------------------------------------------------------------ compile
    def build(self, outputs: list[list[int]]) -> "Circuit":
        """Compile with the given output words (lists of wires)."""
        if self.n_inputs == 0:
            raise CryptoError("a circuit needs at least one input")
        gates = list(self._gates)
        n_in = self.n_inputs
        zero = one = None
        flat: list[int] = []
        for word in outputs:
            for w in word:
                if w == ZERO or w == ONE:  # materialise a constant output from input 0
                    if zero is None:
                        gates.append((XOR, 0, 0))
                        zero = n_in + len(gates) - 1
                    if w == ONE and one is None:
                        gates.append((INV, zero, ZERO))
                        one = n_in + len(gates) - 1
                    w = zero if w == ZERO else one
                if not 0 <= w < n_in + len(gates):
                    raise CryptoError(f"output wire {w} is not a wire of this circuit")
                flat.append(w)
        return Circuit.compile(n_in, gates, flat, [len(w) for w in outputs])


@dataclass(frozen=True)
class Level:
    """Gates of one depth, as storage slots: XOR ``xo = xa ^ xb``, INV ``io = ~ia``, AND ``ao = aa & ab``.

    ``and_ids`` numbers each AND gate within the circuit (the index of its garbled table).
    """

    xa: np.ndarray
    xb: np.ndarray
    xo: np.ndarray
    ia: np.ndarray
    io: np.ndarray
    aa: np.ndarray
    ab: np.ndarray
    ao: np.ndarray
    and_ids: np.ndarray


@dataclass(frozen=True)
class Circuit:
    """A compiled circuit: inputs are slots ``0 .. n_inputs-1``; ``levels`` run in order."""

    n_inputs: int
    n_slots: int
    n_and: int
    levels: tuple[Level, ...]
    out_slots: np.ndarray
    word_sizes: tuple[int, ...]
    n_gates: int = field(default=0)

    @property
    def n_outputs(self) -> int:
        return int(self.out_slots.size)

    @functools.cached_property
    def digest(self) -> bytes:
        """A fingerprint of the compiled circuit: two parties check they run the same one."""
        h = hashlib.blake2b(digest_size=16, person=b"atoll-circuit")
        h.update(np.array([self.n_inputs, self.n_slots, self.n_and, *self.word_sizes], np.int64).tobytes())
        for lv in self.levels:
            for a in (lv.xa, lv.xb, lv.xo, lv.ia, lv.io, lv.aa, lv.ab, lv.ao):
                h.update(np.int64(a.size).tobytes())
                h.update(a.astype(np.int64).tobytes())
        h.update(self.out_slots.astype(np.int64).tobytes())
        return h.digest()

    @staticmethod
    def compile(n_in: int, gates: list[tuple[int, int, int]], outputs: list[int],
                word_sizes: list[int]) -> "Circuit":
        n_w = n_in + len(gates)
        # 1. keep only gates some output depends on
        live = np.zeros(n_w, dtype=bool)
        live[outputs] = True
        for g in range(len(gates) - 1, -1, -1):
            w = n_in + g
            if live[w]:
                op, a, b = gates[g]
                live[a] = True
                if op != INV:
                    live[b] = True
        # 2. levels
        level = np.zeros(n_w, dtype=np.int64)
        by_level: dict[int, list[int]] = {}
        for g, (op, a, b) in enumerate(gates):
            w = n_in + g
            if not live[w]:
                continue
            lv = 1 + (level[a] if op == INV else max(level[a], level[b]))
            level[w] = lv
            by_level.setdefault(int(lv), []).append(g)
        # 3. last level that reads each wire (outputs are read "at the end")
        last = np.full(n_w, -1, dtype=np.int64)
        end = (max(by_level) if by_level else 0) + 1
        for lv, gs in by_level.items():
            for g in gs:
                op, a, b = gates[g]
                last[a] = max(last[a], lv)
                if op != INV:
                    last[b] = max(last[b], lv)
        last[outputs] = end
        # 4. slots: inputs first; a slot is free again after its wire's last reader's level
        slot = np.full(n_w, -1, dtype=np.int64)
        slot[:n_in] = np.arange(n_in)
        n_slots = n_in
        free: list[int] = []
        release: dict[int, list[int]] = {}
        for w in range(n_in):
            if 0 <= last[w] < end:
                release.setdefault(int(last[w]), []).append(w)
        levels = []
        n_and = 0
        for lv in sorted(by_level):
            gs = by_level[lv]
            # wires whose last use is this level may be overwritten by this level's outputs:
            # the engines compute every result of a level before writing any
            for w in release.pop(lv, []):
                free.append(int(slot[w]))
            cols: dict[int, list[list[int]]] = {XOR: [[], [], []], AND: [[], [], []], INV: [[], []]}
            ids = []
            for g in gs:
                op, a, b = gates[g]
                w = n_in + g
                if free:
                    slot[w] = free.pop()
                else:
                    slot[w] = n_slots
                    n_slots += 1
                if last[w] < end:
                    release.setdefault(int(last[w]), []).append(w)
                elif last[w] < 0:  # pragma: no cover - dead gates were removed
                    continue
                if op == INV:
                    cols[INV][0].append(slot[a])
                    cols[INV][1].append(slot[w])
                else:
                    cols[op][0].append(slot[a])
                    cols[op][1].append(slot[b])
                    cols[op][2].append(slot[w])
                    if op == AND:
                        ids.append(n_and)
                        n_and += 1
            arr = lambda v: np.asarray(v, dtype=np.intp)
            levels.append(Level(arr(cols[XOR][0]), arr(cols[XOR][1]), arr(cols[XOR][2]),
                                arr(cols[INV][0]), arr(cols[INV][1]),
                                arr(cols[AND][0]), arr(cols[AND][1]), arr(cols[AND][2]), arr(ids)))
        out_slots = slot[np.asarray(outputs, dtype=np.int64)].astype(np.intp)
        return Circuit(n_in, n_slots, n_and, tuple(levels), out_slots, tuple(word_sizes),
                       int(live[n_in:].sum()))

    def evaluate_plain(self, bits: np.ndarray) -> np.ndarray:
        """The circuit in the clear: ``(N, n_inputs)`` 0/1 -> ``(N, n_outputs)`` uint8 (the oracle)."""
        bits = np.asarray(bits, dtype=np.uint8)
        if bits.ndim != 2 or bits.shape[1] != self.n_inputs:
            raise CryptoError(f"expected (N, {self.n_inputs}) input bits, got {bits.shape}")
        w = np.zeros((self.n_slots, bits.shape[0]), dtype=np.uint8)
        w[: self.n_inputs] = bits.T
        for lv in self.levels:
            x = w[lv.xa] ^ w[lv.xb]
            i = w[lv.ia] ^ 1
            a = w[lv.aa] & w[lv.ab]
            w[lv.xo], w[lv.io], w[lv.ao] = x, i, a
        return w[self.out_slots].T.copy()
