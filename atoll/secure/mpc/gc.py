"""Garbled-circuit operators on additive shares over Z_2^64: sign, ReLU, comparison, equality,
max / argmax, and the conversions A2Y / Y2A between arithmetic shares and garbled values.

Two parties; party 0 garbles, party 1 evaluates (Yao 1986 with free-XOR, half-gates ZRE15,
point-and-permute and the fixed-key TCCR hash of GKWY20, see :mod:`atoll.crypto.garble`).
The garbler's ``Delta`` is the secret ``s`` of its IKNP sender session towards the evaluator
(:func:`atoll.secure.mpc.ot.ot_session`), so the evaluator's input labels are raw correlated
OTs ``q_j ^ b_j*Delta``: 16 bytes per input bit and no hashing (as emp-sh2pc). Every
operator takes and returns raw ``uint64`` share arrays (two's complement for signed values),
for example::

    s = less_than_zero(ctx, peer, party_index, x_share)   # shares of [x < 0] (0 or 1)

Protocol of one circuit on ``n`` instances (:class:`GCGarbler` / :class:`GCEvaluator`),
with the offline steps independent of the inputs:

Offline

1. Evaluator -> garbler: ``u`` of two batches of IKNP OTs with *random* choice bits
   (:mod:`atoll.secure.mpc.ot` steps 3-4): ``rho`` for its input bits (raw correlated OT:
   the garbler gets ``q``, the evaluator ``q ^ rho*Delta``) and ``rho'`` for the output bits.
2. Garbler: fresh random zero labels for its own and the evaluator's input wires; garbles
   (half-gates) in chunks of instances; garbler -> evaluator: the tables (32 bytes per AND).
3. Y2A preparation (ABY's Y2B + B2A, Demmler-Schneider-Zohner NDSS 2015): the value of
   output bit ``i`` is ``p_i ^ e_i`` with ``p_i`` the point bit of its zero label (known to
   the garbler now) and ``e_i`` the evaluator's point bit. Garbler -> evaluator: the
   corrections of an additive correlated OT with ``delta_i = 2^k (1 - 2 p_i)``
   (``k``: the bit's position in its output word) and the evaluator's random choice
   ``rho'_i``: the garbler keeps ``x_i``, the evaluator ``x_i + rho'_i delta_i``.

Online

4. Evaluator -> garbler: ``d = b ^ rho`` (its input bits, one-time padded by the random
   choices of step 1).
5. Garbler -> evaluator: the active labels of the garbler's inputs ``W0 ^ a*Delta`` and of
   the evaluator's inputs ``W0 ^ q ^ d*Delta`` (= ``W0 ^ b*Delta`` once the evaluator XORs
   its ``q ^ rho*Delta``).
6. Evaluator: evaluates; output point bits ``e``.
7. Evaluator -> garbler: ``f = e ^ rho'``. Both sides finish B2A locally (derandomising the
   precomputed correlated OTs): the garbler's share of ``sum_i 2^k v_i`` is
   ``sum_i p_i 2^k + (x_i + delta_i if f_i else -x_i)``, the evaluator's
   ``sum_i (-z_i if f_i else z_i)``.

Circuits (:mod:`atoll.crypto.circuit`; AND gates per element for 64-bit values):
``less_than_zero`` 63 (the carry chain of ``x0 + x1``); ``relu`` 126; ``compare`` exact 190
(both values rebuilt, then a signed comparison; ``exact=False``: 63, valid for
``|x - y| < 2^63``); ``equal`` 63 (``x0 - y0 == y1 - x1``, exact); ``max`` / ``argmax`` of
``k`` values ``63k + (k-1)(128 + ceil(log2 k))``.

What each party sees (semi-honest):

* The evaluator sees the OT messages of :mod:`atoll.secure.mpc.ot` (the hello, ``B``, and
  the correlated-OT corrections), the garbled tables (pseudorandom under the TCCR
  assumption), one label per wire (it cannot tell which value a label stands for: the
  other label needs ``Delta``), and its output point bits, which are its XOR share of the
  result (uniform: the garbler's ``p`` is random). It learns nothing of the garbler's shares
  nor of the result.
* The garbler sees the evaluator's IKNP messages ``u`` (independent of its choices), ``d``
  and ``f`` (one-time padded by the random choices). It learns nothing of the evaluator's
  shares nor of the result.
* Each party's output is an additive share; a single share is uniform.
"""

from __future__ import annotations

import builtins
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from atoll.crypto import aes
from atoll.crypto import garble as gb
from atoll.crypto.bitmatrix import words_to_bits
from atoll.crypto.circuit import Builder, Circuit
from atoll.errors import CryptoError
from atoll.federation.context import Context
from atoll.secure.mpc.ot import ot_session

__all__ = ["GARBLER", "IMPLEMENTATIONS", "GCEvaluator", "GCGarbler", "PreparedCircuit", "YaoShare", "a2y",
           "argmax", "compare", "equal", "evaluate", "gc_session", "less_than_zero", "max", "max_argmax",
           "relu", "y2a"]

VERSION = 1
#: the party index that garbles (the other evaluates)
GARBLER = 0
BITS = 64
#: bytes of label store per engine chunk, and of garbled tables kept per batch
_CHUNK_BYTES = 32 << 20
_BATCH_TABLE_BYTES = 64 << 20
_ROLES = ("garbler", "evaluator")


# ------------------------------------------------------------------------------ helpers
def _share(x: object, what: str = "share") -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint64:
        got = f"{x.dtype} array" if isinstance(x, np.ndarray) else type(x).__name__
        raise CryptoError(f"a {what} must be a uint64 numpy array (an additive share over Z_2^64), "
                          f"got {got}")
    return x


def _expect(arr: object, shape: tuple[int, ...], dtype, what: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != shape:
        got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise CryptoError(f"garbled circuit: the peer's {what} is {got}, expected {np.dtype(dtype)} "
                          f"{shape}; both parties must run the same operator on the same shapes")
    return arr


def _pack(bits: np.ndarray) -> np.ndarray:
    return np.packbits(bits.astype(np.uint8).ravel(), bitorder="little")


def _unpack(packed: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(packed, bitorder="little", count=n)


def _weights(circ: Circuit) -> np.ndarray:
    """``2^k`` for every output bit (``k``: its position within its output word)."""
    return np.concatenate([np.uint64(1) << np.arange(s, dtype=np.uint64) for s in circ.word_sizes]) \
        if circ.word_sizes else np.zeros(0, np.uint64)


def _word_sums(per_bit: np.ndarray, circ: Circuit) -> list[np.ndarray]:
    """Sum ``(n_out, n)`` per-bit shares into one ``(n,)`` share per output word."""
    out, i = [], 0
    for s in circ.word_sizes:
        out.append(per_bit[i:i + s].sum(axis=0, dtype=np.uint64))
        i += s
    return out


def _chunk(circ: Circuit) -> int:
    return int(np.clip(_CHUNK_BYTES // (16 * builtins.max(circ.n_slots, 1)), 1, 16384))


def _batch(circ: Circuit) -> int:
    per = 32 * circ.n_and + 48 * circ.n_inputs + 16 * circ.n_outputs
    return int(np.clip(_BATCH_TABLE_BYTES // builtins.max(per, 1), 1, 1 << 20))


@dataclass
class YaoShare:
    """Garbled values: ``labels`` ``(bits, n, 2) uint64``, least significant bit first.

    The garbler holds each wire's zero label, the evaluator the label of the actual value.
    ``shape`` is the shape of the ``n`` values. Use only with the session that made it.
    """

    labels: np.ndarray
    shape: tuple[int, ...]
    role: str

    @property
    def bits(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class PreparedCircuit:
    """What one party keeps between the offline (``prepare``) and online (``finish``) phases
    of one circuit run; finish each exactly once, in the same order at both parties."""

    circ: Circuit
    n: int
    n_garbler: int
    n_evaluator: int
    run: int
    outputs: str
    tweak0: int
    data: dict
    finished: bool = False


# ------------------------------------------------------------------------------ roles
class _GCParty:
    role = ""

    def __init__(self, ctx: Context, peer: str):
        self.ctx, self.peer = ctx, peer
        self.session = ot_session(ctx, peer)
        self._runs = 0
        self._tweak = 0
        self._hello_done = False

    def _hello(self) -> None:
        if self._hello_done:
            return
        mine = {"protocol": "atoll.gc", "version": VERSION, "role": self.role}
        self.ctx.send(self.peer, "gc.hello", mine)
        got = self.ctx.recv(self.peer, "gc.hello")
        other = _ROLES[1 - _ROLES.index(self.role)]
        if got != {"protocol": "atoll.gc", "version": VERSION, "role": other}:
            raise CryptoError(f"garbled circuit setup: this party is the {self.role} and expected the "
                              f"peer to be the {other} of protocol atoll.gc v{VERSION}; give the two "
                              f"parties party_index 0 and 1 and the same Atoll version")
        self._hello_done = True

    def _start(self, circ: Circuit, n: int, n_g: int, n_e: int, n_yao: int, outputs: str) -> PreparedCircuit:
        if outputs not in ("arith", "yao", "xor"):
            raise CryptoError(f"unknown output mode {outputs!r}; use 'arith', 'yao' or 'xor'")
        if n_yao + n_g + n_e != circ.n_inputs:
            raise CryptoError(f"the circuit has {circ.n_inputs} inputs, given {n_yao} garbled + {n_g} "
                              f"garbler + {n_e} evaluator bits")
        self._hello()
        run, tweak0 = self._runs, self._tweak
        self._runs += 1
        self._tweak += n * circ.n_and
        return PreparedCircuit(circ, n, n_g, n_e, run, outputs, tweak0, {})

    def _k(self, prep: PreparedCircuit, what: str) -> str:
        return f"gc.{prep.run}.{what}"


class GCGarbler(_GCParty):
    """Party 0: garbles. ``prepare`` (offline) then ``finish`` (online), or ``run`` for both."""

    role = "garbler"

    @property
    def delta(self) -> np.ndarray:
        return self.session.sender.ensure_setup()

    def prepare(self, circ: Circuit, n: int, n_garbler: int, n_evaluator: int,
                yao: np.ndarray | None = None, outputs: str = "arith") -> PreparedCircuit:
        """Offline steps 1-3. ``yao``: zero labels ``(n_yao, n, 2)`` of garbled inputs (first)."""
        n_yao = 0 if yao is None else yao.shape[0]
        p = self._start(circ, n, n_garbler, n_evaluator, n_yao, outputs)
        delta = self.delta
        snd = self.session.sender
        q = snd.cot(n * n_evaluator).reshape(n, n_evaluator, 2).transpose(1, 0, 2) if n_evaluator else None
        w0 = aes.random_blocks((n_garbler + n_evaluator, n))
        zero_in = w0 if yao is None else np.concatenate([yao, w0], axis=0)
        out_zero = np.empty((circ.n_outputs, n, 2), dtype=np.uint64)
        c = _chunk(circ)
        for ci, start in enumerate(range(0, n, c)):
            stop = builtins.min(n, start + c)
            tables, oz = gb.garble(circ, np.ascontiguousarray(zero_in[:, start:stop]), delta,
                                   p.tweak0 + start * circ.n_and)
            msg = tables if ci else {"circuit": circ.digest, "n": n, "tables": tables}
            self.ctx.send(self.peer, self._k(p, f"tables{ci}"), msg)
            out_zero[:, start:stop] = oz
        pbits = gb.point(out_zero)  # (n_out, n)
        p.data.update(w0=w0, q=q, pbits=pbits)
        if outputs == "arith":
            w = _weights(circ)[:, None]
            corr = w * (np.uint64(1) - np.uint64(2) * pbits.astype(np.uint64))
            p.data["corr"] = corr
            p.data["x"] = snd.send_correlated(corr.ravel()).reshape(corr.shape)
        elif outputs == "yao":
            p.data["out_zero"] = out_zero
        return p

    def finish(self, p: PreparedCircuit, bits: np.ndarray | None = None):
        """Online steps 4-7 with the garbler's input bits ``(n, n_garbler)``.

        Returns a list with one ``(n,) uint64`` share per output word (``arith``), the
        output labels as a :class:`YaoShare` per word (``yao``), or the ``(n_out, n)``
        XOR-share bits (``xor``).
        """
        _finish_once(p)
        circ, n, delta = p.circ, p.n, self.delta
        labels = p.data["w0"].copy()
        if p.n_garbler:
            b = np.asarray(bits, dtype=np.uint8)
            if b.shape != (n, p.n_garbler):
                raise CryptoError(f"garbler input bits must be ({n}, {p.n_garbler}), got {b.shape}")
            labels[: p.n_garbler] ^= b.T[..., None].astype(np.uint64) * delta
        if p.n_evaluator:
            m = n * p.n_evaluator
            d = _expect(self.ctx.recv(self.peer, self._k(p, "d")), ((m + 7) // 8,), np.uint8, "input pad d")
            d = _unpack(d, m).reshape(n, p.n_evaluator).T
            labels[p.n_garbler:] ^= p.data["q"]
            labels[p.n_garbler:] ^= d[..., None].astype(np.uint64) * delta
        self.ctx.send(self.peer, self._k(p, "labels"), labels)
        if p.outputs == "xor":
            return p.data["pbits"]
        if p.outputs == "yao":
            return _split_yao(p.data["out_zero"], circ, "garbler")
        m = n * circ.n_outputs
        f = _expect(self.ctx.recv(self.peer, self._k(p, "f")), ((m + 7) // 8,), np.uint8, "output pad f")
        f = _unpack(f, m).reshape(circ.n_outputs, n).astype(bool)
        x, corr = p.data["x"], p.data["corr"]
        per_bit = np.where(f, x + corr, np.uint64(0) - x)
        per_bit += _weights(circ)[:, None] * p.data["pbits"].astype(np.uint64)
        return _word_sums(per_bit, circ)

    def run(self, circ: Circuit, bits: np.ndarray | None, n: int, n_garbler: int, n_evaluator: int,
            yao: np.ndarray | None = None, outputs: str = "arith"):
        return self.finish(self.prepare(circ, n, n_garbler, n_evaluator, yao, outputs), bits)


class GCEvaluator(_GCParty):
    """Party 1: evaluates. ``prepare`` (offline) then ``finish`` (online), or ``run`` for both."""

    role = "evaluator"

    def prepare(self, circ: Circuit, n: int, n_garbler: int, n_evaluator: int,
                yao: np.ndarray | None = None, outputs: str = "arith") -> PreparedCircuit:
        """Offline steps 1-3. ``yao``: this party's labels ``(n_yao, n, 2)`` of garbled inputs."""
        n_yao = 0 if yao is None else yao.shape[0]
        p = self._start(circ, n, n_garbler, n_evaluator, n_yao, outputs)
        rcv = self.session.receiver
        rho = aes.random_bits(n * n_evaluator) if n_evaluator else None
        pend_in = rcv.start(rho) if n_evaluator else None
        rho_out = aes.random_bits(n * circ.n_outputs) if outputs == "arith" else None
        pend_out = rcv.start(rho_out) if outputs == "arith" else None
        tables = []
        c = _chunk(circ)
        for ci, start in enumerate(range(0, n, c)):
            stop = builtins.min(n, start + c)
            msg = self.ctx.recv(self.peer, self._k(p, f"tables{ci}"))
            if ci == 0:
                if not isinstance(msg, dict) or msg.get("circuit") != circ.digest or msg.get("n") != n:
                    raise CryptoError("garbled circuit: the garbler runs another circuit or another number "
                                      "of values; both parties must run the same operator on the same shapes")
                msg = msg.get("tables")
            tables.append(_expect(msg, (circ.n_and, stop - start, 2, 2), np.uint64, f"garbled tables {ci}"))
        p.data.update(tables=tables, yao=yao, rho=rho)
        if n_evaluator:
            p.data["t"] = rcv.cot(pend_in).reshape(n, n_evaluator, 2).transpose(1, 0, 2)
        if outputs == "arith":
            p.data["rho_out"] = rho_out
            p.data["z"] = rcv.recv_correlated(pend_out, 1).reshape(circ.n_outputs, n)
        return p

    def finish(self, p: PreparedCircuit, bits: np.ndarray | None = None):
        """Online steps 4-7 with the evaluator's input bits ``(n, n_evaluator)``; see
        :meth:`GCGarbler.finish` for what it returns."""
        _finish_once(p)
        circ, n = p.circ, p.n
        if p.n_evaluator:
            b = np.asarray(bits, dtype=np.uint8)
            if b.shape != (n, p.n_evaluator):
                raise CryptoError(f"evaluator input bits must be ({n}, {p.n_evaluator}), got {b.shape}")
            self.ctx.send(self.peer, self._k(p, "d"), _pack(b ^ p.data["rho"].reshape(n, p.n_evaluator)))
        n_plain = p.n_garbler + p.n_evaluator
        labels = _expect(self.ctx.recv(self.peer, self._k(p, "labels")), (n_plain, n, 2), np.uint64,
                         "input labels")
        if p.n_evaluator:
            labels[p.n_garbler:] ^= p.data["t"]
        inputs = labels if p.data["yao"] is None else np.concatenate([p.data["yao"], labels], axis=0)
        out = np.empty((circ.n_outputs, n, 2), dtype=np.uint64)
        c = _chunk(circ)
        for ci, start in enumerate(range(0, n, c)):
            stop = builtins.min(n, start + c)
            out[:, start:stop] = gb.evaluate(circ, np.ascontiguousarray(inputs[:, start:stop]),
                                             p.data["tables"][ci], p.tweak0 + start * circ.n_and)
        p.data["tables"] = None
        e = gb.point(out)
        if p.outputs == "xor":
            return e
        if p.outputs == "yao":
            return _split_yao(out, circ, "evaluator")
        f = e ^ p.data["rho_out"].reshape(circ.n_outputs, n)
        self.ctx.send(self.peer, self._k(p, "f"), _pack(f))
        z = p.data["z"]
        per_bit = np.where(f.astype(bool), np.uint64(0) - z, z)
        return _word_sums(per_bit, circ)

    def run(self, circ: Circuit, bits: np.ndarray | None, n: int, n_garbler: int, n_evaluator: int,
            yao: np.ndarray | None = None, outputs: str = "arith"):
        return self.finish(self.prepare(circ, n, n_garbler, n_evaluator, yao, outputs), bits)


def _finish_once(p: PreparedCircuit) -> None:
    if not isinstance(p, PreparedCircuit) or p.finished:
        raise CryptoError("finish() takes a PreparedCircuit from prepare(), once")
    p.finished = True


def _split_yao(labels: np.ndarray, circ: Circuit, role: str) -> list[YaoShare]:
    out, i = [], 0
    for s in circ.word_sizes:
        out.append(YaoShare(labels[i:i + s], (labels.shape[1],), role))
        i += s
    return out


_SESSIONS: "weakref.WeakKeyDictionary[Context, dict[str, _GCParty]]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def gc_session(ctx: Context, peer: str, party_index: int) -> GCGarbler | GCEvaluator:
    """This party's garbled-circuit role towards ``peer`` (cached per ``ctx``): party 0 garbles."""
    if party_index not in (0, 1):
        raise CryptoError(f"party_index must be 0 or 1, got {party_index!r}")
    with _LOCK:
        per = _SESSIONS.setdefault(ctx, {})
        role = per.get(peer)
        want = GCGarbler if party_index == GARBLER else GCEvaluator
        if role is None:
            role = per[peer] = want(ctx, peer)
        elif not isinstance(role, want):
            raise CryptoError(f"this context already acts as the {role.role} towards {peer!r}; a party "
                              f"keeps its party_index for the whole job")
        return role


# ------------------------------------------------------------------------------ running circuits
def _run_batched(ctx: Context, peer: str, party_index: int, circ: Circuit, mine: np.ndarray,
                 n_per_party: int) -> list[np.ndarray]:
    """Run ``circ`` on ``n`` instances, each party giving its ``(n, n_per_party)`` bits; arith out."""
    gc = gc_session(ctx, peer, party_index)
    n = mine.shape[0]
    outs: list[list[np.ndarray]] = [[] for _ in circ.word_sizes]
    step = _batch(circ)
    for start in range(0, builtins.max(n, 1), step):
        stop = builtins.min(n, start + step)
        if stop <= start:
            break
        res = gc.run(circ, mine[start:stop], stop - start, n_per_party, n_per_party)
        for i, r in enumerate(res):
            outs[i].append(r)
    return [np.concatenate(o) if o else np.zeros(0, np.uint64) for o in outs]


def _bits_of(*words: np.ndarray) -> np.ndarray:
    """``(n, 64 * len(words))`` input bits, word after word."""
    return np.concatenate([words_to_bits(np.ascontiguousarray(w).ravel(), BITS) for w in words], axis=1)


_CIRCUITS: dict[tuple, Circuit] = {}


def _cached(key: tuple, make) -> Circuit:
    c = _CIRCUITS.get(key)
    if c is None:
        c = _CIRCUITS[key] = make()
    return c


def _sign_circuit() -> Circuit:
    b = Builder()
    x0, x1 = b.inputs(BITS), b.inputs(BITS)
    return b.build([[b.add(x0, x1)[-1]]])


def _relu_circuit() -> Circuit:
    b = Builder()
    x0, x1 = b.inputs(BITS), b.inputs(BITS)
    x = b.add(x0, x1)
    keep = b.inv(x[-1])
    return b.build([b.and_bit_word(keep, x[:-1])])


def _compare_circuit() -> Circuit:
    b = Builder()
    x0, y0, x1, y1 = b.inputs(BITS), b.inputs(BITS), b.inputs(BITS), b.inputs(BITS)
    return b.build([[b.lt_signed(b.add(x0, x1), b.add(y0, y1))]])


def _equal_circuit() -> Circuit:
    b = Builder()
    d0, d1 = b.inputs(BITS), b.inputs(BITS)
    return b.build([[b.eq(d0, d1)]])


def _max_circuit(k: int, want_max: bool, want_arg: bool, one_hot: bool) -> Circuit:
    b = Builder()
    mine = [b.inputs(BITS) for _ in range(k)]
    theirs = [b.inputs(BITS) for _ in range(k)]
    vals = [b.add(u, v) for u, v in zip(mine, theirs)]
    mx, idx = b.max_argmax(vals)
    outs = []
    if want_max:
        outs.append(mx)
    if want_arg:
        outs.extend([[w] for w in b.one_hot(idx, k)] if one_hot else [idx])
    return b.build(outs)


# ------------------------------------------------------------------------------ operators
def less_than_zero(ctx: Context, peer: str, party_index: int, share: np.ndarray) -> np.ndarray:
    """Shares of ``[x < 0]`` (0 or 1; ``x`` signed two's complement), same shape. 63 ANDs each."""
    x = _share(share)
    circ = _cached(("sign",), _sign_circuit)
    (out,) = _run_batched(ctx, peer, party_index, circ, _bits_of(x), BITS)
    return out.reshape(x.shape)


def relu(ctx: Context, peer: str, party_index: int, share: np.ndarray) -> np.ndarray:
    """Shares of ``max(x, 0)`` (any fixed-point scale: the scale is kept). 126 ANDs each."""
    x = _share(share)
    circ = _cached(("relu",), _relu_circuit)
    (out,) = _run_batched(ctx, peer, party_index, circ, _bits_of(x), BITS)
    return out.reshape(x.shape)


def compare(ctx: Context, peer: str, party_index: int, x_share: np.ndarray, y_share: np.ndarray,
            exact: bool = True) -> np.ndarray:
    """Shares of ``[x < y]`` (signed). ``exact=True``: right for every pair of 64-bit values
    (190 ANDs); ``exact=False``: the sign of ``x - y`` (63 ANDs), right when ``|x - y| < 2^63``."""
    x, y = _share(x_share, "x share"), _share(y_share, "y share")
    if x.shape != y.shape:
        raise CryptoError(f"compare needs shares of one shape, got {x.shape} and {y.shape}")
    if not exact:
        return less_than_zero(ctx, peer, party_index, x - y)
    circ = _cached(("lt",), _compare_circuit)
    (out,) = _run_batched(ctx, peer, party_index, circ, _bits_of(x, y), 2 * BITS)
    return out.reshape(x.shape)


def equal(ctx: Context, peer: str, party_index: int, x_share: np.ndarray, y_share: np.ndarray) -> np.ndarray:
    """Shares of ``[x == y]``: ``x0 - y0 == y1 - x1 (mod 2^64)`` compared in the circuit. 63 ANDs."""
    x, y = _share(x_share, "x share"), _share(y_share, "y share")
    if x.shape != y.shape:
        raise CryptoError(f"equal needs shares of one shape, got {x.shape} and {y.shape}")
    d = x - y if party_index == GARBLER else y - x
    circ = _cached(("eq",), _equal_circuit)
    (out,) = _run_batched(ctx, peer, party_index, circ, _bits_of(d), BITS)
    return out.reshape(x.shape)


def _max_impl(ctx, peer, party_index, share, axis, want_max, want_arg, one_hot):
    x = _share(share)
    if x.ndim == 0:
        raise CryptoError("max / argmax need at least one axis")
    moved = np.moveaxis(x, axis, -1)
    k = moved.shape[-1]
    if k == 0:
        raise CryptoError("max / argmax of an empty axis")
    lead = moved.shape[:-1]
    flat = moved.reshape(-1, k)
    circ = _cached(("max", k, want_max, want_arg, one_hot), lambda: _max_circuit(k, want_max, want_arg, one_hot))
    bits = words_to_bits(np.ascontiguousarray(flat), BITS).reshape(flat.shape[0], k * BITS)
    outs = _run_batched(ctx, peer, party_index, circ, bits, k * BITS)
    res = []
    if want_max:
        res.append(outs.pop(0).reshape(lead))
    if want_arg:
        if one_hot:
            res.append(np.moveaxis(np.stack(outs, axis=-1).reshape(*lead, k), -1, axis))
        else:
            res.append(outs[0].reshape(lead))
    return res


def max(ctx: Context, peer: str, party_index: int, share: np.ndarray, axis: int = -1) -> np.ndarray:  # noqa: A001
    """Shares of the (signed) maximum along ``axis`` (the axis is removed)."""
    return _max_impl(ctx, peer, party_index, share, axis, True, False, False)[0]


def argmax(ctx: Context, peer: str, party_index: int, share: np.ndarray, axis: int = -1,
           one_hot: bool = False) -> np.ndarray:
    """Shares of the index of the first maximum along ``axis`` (as ``numpy.argmax``), or with
    ``one_hot=True`` shares of the one-hot indicator (the axis kept)."""
    return _max_impl(ctx, peer, party_index, share, axis, False, True, one_hot)[0]


def max_argmax(ctx: Context, peer: str, party_index: int, share: np.ndarray,
               axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Both in one circuit: ``(max, argmax)`` shares."""
    m, a = _max_impl(ctx, peer, party_index, share, axis, True, True, False)
    return m, a


# ------------------------------------------------------------------------------ conversions
def a2y(ctx: Context, peer: str, party_index: int, share: np.ndarray, bits: int = BITS) -> YaoShare:
    """Arithmetic shares -> garbled value of ``x mod 2^bits`` (the low ``bits`` bits; ``bits - 1`` ANDs)."""
    x = _share(share)
    if not 1 <= bits <= BITS:
        raise CryptoError(f"a2y converts 1 to {BITS} bits, asked for {bits}")
    circ = _cached(("a2y", bits), lambda: _a2y_circuit(bits))
    gc = gc_session(ctx, peer, party_index)
    mine = words_to_bits(np.ascontiguousarray(x).ravel(), bits)
    (y,) = gc.run(circ, mine, mine.shape[0], bits, bits, outputs="yao")
    return YaoShare(y.labels, x.shape, y.role)


def _a2y_circuit(bits: int) -> Circuit:
    b = Builder()
    x0, x1 = b.inputs(bits), b.inputs(bits)
    return b.build([b.add(x0, x1)])


def y2a(ctx: Context, peer: str, party_index: int, value: YaoShare) -> np.ndarray:
    """Garbled value -> arithmetic shares of ``sum_k 2^k v_k`` (Y2B + B2A with one correlated OT per bit)."""
    gc = gc_session(ctx, peer, party_index)
    if not isinstance(value, YaoShare) or value.role != gc.role:
        raise CryptoError(f"y2a needs a YaoShare held by this party's role ({gc.role})")
    labels = value.labels
    nbits, n = labels.shape[0], labels.shape[1]
    w = (np.uint64(1) << np.arange(nbits, dtype=np.uint64))[:, None]
    pbits = gb.point(labels).astype(np.uint64)  # (bits, n): garbler p, evaluator e
    if party_index == GARBLER:
        corr = w * (np.uint64(1) - np.uint64(2) * pbits)
        x = gc.session.sender.send_correlated(corr.ravel()).reshape(nbits, n)
        out = (w * pbits - x).sum(axis=0, dtype=np.uint64)
    else:
        z = gc.session.receiver.recv_correlated(pbits.ravel().astype(np.uint8), 1).reshape(nbits, n)
        out = z.sum(axis=0, dtype=np.uint64)
    return out.reshape(value.shape)


def evaluate(ctx: Context, peer: str, party_index: int, circuit: Circuit, inputs: list[YaoShare],
             outputs: str = "yao") -> list:
    """Run any circuit on garbled inputs (their bits in order are the circuit's inputs).

    ``outputs="yao"``: a :class:`YaoShare` per output word; ``"arith"``: a ``uint64`` share
    per output word.
    """
    gc = gc_session(ctx, peer, party_index)
    if not inputs:
        raise CryptoError("evaluate needs at least one garbled input")
    shapes = {y.shape for y in inputs}
    if len(shapes) != 1 or any(y.role != gc.role for y in inputs):
        raise CryptoError(f"evaluate needs inputs of one shape, all held by this party's role ({gc.role})")
    labels = np.concatenate([y.labels for y in inputs], axis=0)
    shape = inputs[0].shape
    res = gc.run(circuit, None, labels.shape[1], 0, 0, yao=labels, outputs=outputs)
    if outputs == "yao":
        return [YaoShare(r.labels, shape, r.role) for r in res]
    return [r.reshape(shape) for r in res]


#: GC implementations for the SharedTensor's ``method="gc"`` registry (wired at merge):
#: every entry takes ``(ctx, peer, party_index, share...)`` and returns raw uint64 shares.
IMPLEMENTATIONS = {
    "sign": less_than_zero,        # shares of [x < 0]
    "less_than_zero": less_than_zero,
    "relu": relu,
    "compare": compare,            # shares of [x < y]
    "less_than": compare,
    "equal": equal,
    "max": max,
    "argmax": argmax,
    "max_argmax": max_argmax,
}
