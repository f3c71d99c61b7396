"""Oblivious transfer between two parties: IKNP OT extension (random, chosen-message and
correlated 1-out-of-2) and KKRT 1-out-of-N OT / batched OPRF, on CO15 base OTs.

Per ordered pair (sender S, receiver R), semi-honest. S and R each keep a session object
(:class:`OTSender` / :class:`OTReceiver`; :class:`OPRFSender` / :class:`OPRFReceiver` for
KKRT) that does the base OTs once, on first use, and then extends as often as asked.

Setup (once per session; CO15 base OTs with the roles swapped, see :mod:`atoll.crypto.ot`):

1. R -> S ``setup``: ``{hello, A}``: the protocol name, version and width ``k`` (128, or
   512 for KKRT), and R's CO15 key ``A = a*G``. S checks the hello against its own.
2. S picks its secret ``s`` (``k`` bits; for 1-out-of-2 the lowest bit is 1 so that ``s``
   doubles as a free-XOR ``Delta``, see :mod:`atoll.secure.mpc.gc`) and sends
   S -> R ``setup``: ``{hello, B}``: ``B_i = b_i*G + s_i*A``. R gets seed pairs
   ``(k0_i, k1_i)``, S the seeds ``k_{s_i}`` (IKNP03 section 3). KKRT: both also send a
   16-byte nonce; their hash keys the pseudo-random code and the row hash.

Each batch of ``n`` transfers (``n`` rounded up to 128; batches of at most 2^20 OTs, or 2^18
for KKRT, per message):

3. R -> S ``u``: ``u^i = G(k0_i) ^ G(k1_i) ^ R^i`` over the next ``n`` bits of each AES-CTR
   stream (``R``: the choice bits in every row; for KKRT the codewords ``C(x_j)``, KKRT16
   figure 2). R keeps ``t_j`` = row ``j`` of ``G(k0)``; S computes ``q_j = t_j ^ (r_j & s)``.
4. By flavour (``H`` = the TCCR hash with tweak = global OT index; ``F`` = BLAKE2b):

   * ``cot``: nothing more; S has ``q_j``, R has ``q_j ^ r_j*s`` (correlated OT, Delta = s).
   * ``rot``: nothing more; S has ``H(q_j)``, ``H(q_j ^ s)``, R has ``H(t_j)``.
   * ``send``/``recv``: S -> R ``y``: ``y0 = m0 ^ H(q_j)``, ``y1 = m1 ^ H(q_j ^ s)``.
   * ``send_correlated``/``recv_correlated`` (additive, mod 2^64; Gilboa99, the COT of
     ALSZ13 section 5.4): S's output ``x_j = H(q_j)``; S -> R ``y``:
     ``y = x_j + delta_j - H(q_j ^ s)``; R's output ``H(t_j) + r_j * y = x_j + r_j * delta_j``.
   * KKRT: R's output ``F(j, t_j)``; S can evaluate ``F(j, q_j ^ (C(x) & s))`` for any ``x``.

What each party sees:

* S sees ``A``, the hello, and ``u``. Every row of ``u`` is masked by the stream of the
  seed ``k_{1-s_i}`` that S never learnt, so ``u`` is independent of R's choice bits and
  KKRT inputs. S learns nothing about them.
* R sees the ``B_i`` (uniform group elements whatever ``s`` is), the hello, and the
  corrections ``y``. A message R did not choose is masked by ``H(t_j ^ s)``, which needs
  ``s``; for KKRT, ``F`` on any other input needs ``s`` on the >= 128 positions where two
  codewords differ. R learns the chosen messages (or ``x_j + r_j*delta_j``) only.

Everything travels through the federation :class:`~atoll.federation.Context` (numpy arrays
and bytes through the safe codec); message keys carry the label, the direction and a batch
counter, so batches never mix and both sides must make the same calls in the same order.
:func:`ot_session` gives the cached pair of sessions towards one peer.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from atoll.crypto import aes
from atoll.crypto import ot as otc
from atoll.crypto.bitmatrix import transpose
from atoll.errors import CryptoError
from atoll.federation.context import Context

__all__ = ["OPRFBatch", "OPRFReceiver", "OPRFSender", "OTNReceiver", "OTNSender", "OTReceiver",
           "OTSender", "PendingOT", "ot_session"]

VERSION = 1
#: OTs per message: 2^20 x 128 bits = 16 MiB of u (and 2^18 x 512 bits for KKRT)
MAX_BATCH = 1 << 20
#: the most transfers one call may ask for (bounds what a session buffers for one call)
MAX_OTS = 1 << 28
#: the most bytes of masked messages one 1-out-of-N call sends
MAX_OTN_BYTES = 1 << 28


def _hello(protocol: str, width: int) -> dict:
    return {"protocol": protocol, "version": VERSION, "width": width}


def _check_hello(got: object, mine: dict) -> None:
    if not isinstance(got, dict) or got != mine:
        theirs = {k: got.get(k) for k in mine} if isinstance(got, dict) else type(got).__name__
        raise CryptoError(f"OT setup (step 1): the peer announced {theirs}, this party runs {mine}; "
                          f"both parties must run the same Atoll version and protocol")


def _expect(arr: object, shape: tuple[int, ...], what: str, dtype=np.uint64) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != shape:
        got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise CryptoError(f"OT extension: the peer's {what} is {got}, expected {np.dtype(dtype)} "
                          f"{shape}; both parties must ask for the same transfers in the same order")
    return arr


def _count(n: int) -> int:
    n = int(n)
    if not 0 <= n <= MAX_OTS:
        raise CryptoError(f"asked for {n} oblivious transfers; one call takes 0 to {MAX_OTS}")
    return n


def _pad(n: int) -> int:
    return -(-n // 128) * 128


def _bits(choices: np.ndarray) -> np.ndarray:
    c = np.asarray(choices)
    if c.ndim != 1:
        raise CryptoError(f"choice bits must be a 1-d array, got shape {c.shape}")
    if c.dtype != np.bool_ and c.size and (c.min() < 0 or c.max() > 1):
        raise CryptoError("choice bits must be 0 or 1")
    return c.astype(np.uint8)


def _ring_dtype(a: np.ndarray) -> np.dtype:
    if a.dtype not in (np.uint64, np.uint32, np.uint16, np.uint8):
        raise CryptoError(f"correlations are unsigned ring elements (uint64, uint32, uint16 or uint8), "
                          f"got {a.dtype}")
    return a.dtype


def _as_words(m: np.ndarray, n: int, what: str, dtype=np.uint64) -> np.ndarray:
    m = np.asarray(m)
    if m.dtype != dtype or m.ndim not in (1, 2) or m.shape[0] != n:
        raise CryptoError(f"{what} must be a {np.dtype(dtype)} array of shape (n,) or (n, words), "
                          f"got {m.dtype} {m.shape} for n={n}")
    return m.reshape(n, -1)


# ------------------------------------------------------------------------------ the extension
class _Extension:
    """What both ends of one IKNP/KKRT direction share: naming, counters, stream offsets."""

    protocol = "atoll.iknp"

    def __init__(self, ctx: Context, peer: str, sender: str, receiver: str, width: int, label: str):
        self.ctx, self.peer, self.width = ctx, peer, width
        self._key = f"{label}.{sender}>{receiver}"
        self._ready = False
        self._batches = 0   # batch counter (message keys)
        self._offset = 0    # AES-CTR blocks used of every seed's stream
        self._index = 0     # OTs used (hash tweaks)

    def _k(self, what: str, batch: int | None = None) -> str:
        return f"{self._key}.{what}" if batch is None else f"{self._key}.{batch}.{what}"

    def _next(self, n_pad: int) -> tuple[int, int, int]:
        batch, offset, index = self._batches, self._offset, self._index
        self._batches += 1
        self._offset += n_pad // 128
        self._index += n_pad
        return batch, offset, index

    @property
    def max_batch(self) -> int:
        return MAX_BATCH * 128 // self.width


class _ExtSender(_Extension):
    """The extension sender: base-OT receiver, holds ``s`` and the seeds ``k_{s_i}``."""

    def __init__(self, ctx: Context, peer: str, width: int = otc.KAPPA, label: str = "ot"):
        super().__init__(ctx, peer, ctx.party, peer, width, label)
        self.delta: np.ndarray | None = None  # set by the base OTs (1-out-of-2 only)

    def _setup(self) -> None:
        if self._ready:
            return
        mine = _hello(self.protocol, self.width)
        got = self.ctx.recv(self.peer, self._k("setup"))
        if not isinstance(got, dict) or not isinstance(got.get("A"), bytes) \
                or not isinstance(got.get("nonce"), bytes) or len(got["nonce"]) != 16:
            raise CryptoError("OT setup (step 1): the peer's setup message is malformed")
        _check_hello(got.get("hello"), mine)
        s = aes.random_bits(self.width)
        s[0] = 1  # lsb of Delta = 1: point-and-permute for the garbled circuits built on it
        nonce = os.urandom(16)
        tag = hashlib.blake2b(self._key.encode(), digest_size=32).digest()
        points, seeds = otc.co15_receiver(got["A"], s, tag)
        self.ctx.send(self.peer, self._k("setup"), {"hello": mine, "B": b"".join(points), "nonce": nonce})
        self._s_bits = s
        self._seeds = seeds
        self.delta = np.packbits(s, bitorder="little").view(np.uint64)[:2].copy() if self.width == 128 else None
        self._s_words = np.packbits(s, bitorder="little").view(np.uint64).copy()
        self._nonces = (got["nonce"], nonce)
        self._ready = True

    def ensure_setup(self) -> np.ndarray | None:
        """Run the base OTs now (the peer's receiver must do the same); returns ``delta``
        (1-out-of-2) or None (KKRT)."""
        self._setup()
        return self.delta

    def _q(self, n: int) -> tuple[np.ndarray, int, int]:
        """One batch: receive ``u``, return the rows ``q_j`` (``(n, width/64)``), batch, index."""
        self._setup()
        n_pad = _pad(n)
        batch, offset, index = self._next(n_pad)
        g = aes.prg_rows(self._seeds, n_pad // 8, offset).view(np.uint64)
        u = _expect(self.ctx.recv(self.peer, self._k("u", batch)), g.shape, f"u (batch {batch})")
        return otc.iknp_sender(g, self._s_bits, u)[:n], batch, index


class _ExtReceiver(_Extension):
    """The extension receiver: base-OT sender, holds both seeds of every column."""

    def __init__(self, ctx: Context, peer: str, width: int = otc.KAPPA, label: str = "ot"):
        super().__init__(ctx, peer, peer, ctx.party, width, label)

    def _setup_begin(self) -> None:
        """Step 1 only (sends ``A``; never waits)."""
        if self._ready or hasattr(self, "_co15"):
            return
        a, a_pt = otc.co15_sender_start()
        nonce = os.urandom(16)
        self.ctx.send(self.peer, self._k("setup"),
                      {"hello": _hello(self.protocol, self.width), "A": a_pt, "nonce": nonce})
        self._co15 = (a, a_pt, nonce)

    def _setup(self) -> None:
        if self._ready:
            return
        mine = _hello(self.protocol, self.width)
        self._setup_begin()
        a, a_pt, nonce = self._co15
        got = self.ctx.recv(self.peer, self._k("setup"))
        if not isinstance(got, dict) or not isinstance(got.get("B"), bytes) \
                or len(got["B"]) != self.width * otc.POINT_BYTES \
                or not isinstance(got.get("nonce"), bytes) or len(got["nonce"]) != 16:
            raise CryptoError(f"OT setup (step 2): the peer's reply must carry {self.width} points")
        _check_hello(got.get("hello"), mine)
        b = got["B"]
        points = [b[i:i + otc.POINT_BYTES] for i in range(0, len(b), otc.POINT_BYTES)]
        tag = hashlib.blake2b(self._key.encode(), digest_size=32).digest()
        self._seeds0, self._seeds1 = otc.co15_sender_keys(a, a_pt, points, tag)
        self._nonces = (nonce, got["nonce"])
        del self._co15
        self._ready = True

    def ensure_setup(self) -> None:
        """Run the base OTs now (the peer's sender must do the same)."""
        self._setup()

    def _t(self, r: np.ndarray, n: int) -> tuple[np.ndarray, int, int]:
        """One batch: send ``u`` for choice words / codeword matrix ``r``; rows ``t_j``, batch, index."""
        self._setup()
        n_pad = _pad(n)
        batch, offset, index = self._next(n_pad)
        g0 = aes.prg_rows(self._seeds0, n_pad // 8, offset).view(np.uint64)
        g1 = aes.prg_rows(self._seeds1, n_pad // 8, offset).view(np.uint64)
        u, t = otc.iknp_receiver(g0, g1, r)
        self.ctx.send(self.peer, self._k("u", batch), u)
        return t[:n], batch, index


# ------------------------------------------------------------------------------ 1-out-of-2
@dataclass
class PendingOT:
    """Choices whose ``u`` has been sent: finish with ``recv``/``recv_correlated``/``cot``/``rot``.

    Splitting the receiver's start from its finish lets two parties that are each other's
    sender and receiver (Gilboa multiplication) both send ``u`` first and never wait on
    each other.
    """

    choices: np.ndarray        # (n,) uint8
    parts: list                # [(start, stop, t rows, batch, index)]
    used: bool = False


class OTSender(_ExtSender):
    """1-out-of-2 OT extension sender towards ``peer`` (IKNP03).

    ``delta`` (after the first call) is the ``(2,) uint64`` global correlation ``s`` of the
    raw correlated OTs (:meth:`cot`); its lowest bit is 1.
    """

    def _rows(self, n: int):
        n = _count(n)
        for start in range(0, n, self.max_batch):
            stop = min(n, start + self.max_batch)
            q, batch, index = self._q(stop - start)
            yield start, stop, q, batch, index

    def cot(self, n: int) -> np.ndarray:
        """Raw correlated OT: ``q_j`` (``(n, 2) uint64``); the receiver gets ``q_j ^ r_j*delta``.

        Correlated, not random: hash before using them as independent keys (the other
        methods do). The garbled circuits use them as free-XOR input labels.
        """
        out = np.empty((_count(n), 2), dtype=np.uint64)
        for start, stop, q, _, _ in self._rows(n):
            out[start:stop] = q
        return out

    def rot(self, n: int, words: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Random OT: both messages ``(m0, m1)``, each ``(n, words) uint64``."""
        m0 = np.empty((_count(n), words), dtype=np.uint64)
        m1 = np.empty_like(m0)
        for start, stop, q, _, index in self._rows(n):
            idx = np.arange(index, index + stop - start, dtype=np.uint64)
            m0[start:stop] = otc.ot_hash(q, idx, words)
            m1[start:stop] = otc.ot_hash(q ^ self.delta, idx, words)
        return m0, m1

    def send(self, m0: np.ndarray, m1: np.ndarray) -> None:
        """Chosen-message OT: the receiver gets ``m0[j]`` or ``m1[j]`` (uint64, ``(n,)`` or ``(n, w)``)."""
        n = np.asarray(m0).shape[0] if np.ndim(m0) else -1
        a, b = _as_words(m0, n, "m0"), _as_words(m1, n, "m1")
        if a.shape != b.shape:
            raise CryptoError(f"m0 and m1 must have the same shape, got {a.shape} and {b.shape}")
        w = a.shape[1]
        for start, stop, q, batch, index in self._rows(n):
            idx = np.arange(index, index + stop - start, dtype=np.uint64)
            y = np.empty((2, stop - start, w), dtype=np.uint64)
            np.bitwise_xor(a[start:stop], otc.ot_hash(q, idx, w), out=y[0])
            np.bitwise_xor(b[start:stop], otc.ot_hash(q ^ self.delta, idx, w), out=y[1])
            self.ctx.send(self.peer, self._k("y", batch), y)

    def send_correlated(self, delta: np.ndarray) -> np.ndarray:
        """Additive correlated OT: returns ``x``; the receiver gets ``x + r_j*delta[j]``.

        ``delta``: ``(n,)`` or ``(n, w)`` of ``uint64`` (arithmetic mod 2^64), or of
        ``uint32`` / ``uint16`` / ``uint8`` (mod 2^32, 2^16, 2^8: shorter corrections on the
        wire for callers that need fewer bits); ``x`` has the same shape and dtype.
        """
        d0 = np.asarray(delta)
        dt = _ring_dtype(d0)
        n = d0.shape[0] if d0.ndim else -1
        d = _as_words(d0, n, "delta", dt)
        w = d.shape[1]
        x = np.empty_like(d)
        for start, stop, q, batch, index in self._rows(n):
            idx = np.arange(index, index + stop - start, dtype=np.uint64)
            x0 = otc.ot_hash(q, idx, w).astype(dt)
            y = x0 + d[start:stop]
            y -= otc.ot_hash(q ^ self.delta, idx, w).astype(dt)
            self.ctx.send(self.peer, self._k("y", batch), y)
            x[start:stop] = x0
        return x.reshape(d0.shape)


class OTReceiver(_ExtReceiver):
    """1-out-of-2 OT extension receiver from ``peer`` (IKNP03)."""

    def start(self, choices: np.ndarray) -> PendingOT:
        """Send ``u`` for these choice bits (step 3); finish with one of the methods below."""
        c = _bits(choices)
        n = _count(c.size)
        parts = []
        for start in range(0, n, self.max_batch):
            stop = min(n, start + self.max_batch)
            padded = np.zeros(_pad(stop - start), dtype=np.uint8)
            padded[: stop - start] = c[start:stop]
            r = np.packbits(padded, bitorder="little").view(np.uint64)
            t, batch, index = self._t(r, stop - start)
            parts.append((start, stop, t, batch, index))
        return PendingOT(c, parts)

    def _pending(self, choices) -> PendingOT:
        p = choices if isinstance(choices, PendingOT) else self.start(choices)
        if p.used:
            raise CryptoError("these OTs were already used; start() new ones")
        p.used = True
        return p

    def cot(self, choices) -> np.ndarray:
        """Raw correlated OT: ``q_j ^ r_j*delta`` (``(n, 2) uint64``), see :meth:`OTSender.cot`."""
        p = self._pending(choices)
        out = np.empty((p.choices.size, 2), dtype=np.uint64)
        for start, stop, t, _, _ in p.parts:
            out[start:stop] = t
        return out

    def rot(self, choices, words: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Random OT: ``(choices, m_choice)``. ``choices``: an int ``n`` for random choice bits,
        or the bits themselves (random messages, chosen choices)."""
        if isinstance(choices, (int, np.integer)):
            choices = aes.random_bits(_count(choices))
        p = self._pending(choices)
        out = np.empty((p.choices.size, words), dtype=np.uint64)
        for start, stop, t, _, index in p.parts:
            out[start:stop] = otc.ot_hash(t, np.arange(index, index + stop - start, dtype=np.uint64), words)
        return p.choices, out

    def recv(self, choices, words: int = 1) -> np.ndarray:
        """Chosen-message OT: ``m_{c_j}[j]`` as ``(n, words) uint64``."""
        p = self._pending(choices)
        out = np.empty((p.choices.size, words), dtype=np.uint64)
        for start, stop, t, batch, index in p.parts:
            y = _expect(self.ctx.recv(self.peer, self._k("y", batch)), (2, stop - start, words),
                        f"messages (batch {batch})")
            c = p.choices[start:stop].astype(bool)
            chosen = np.where(c[:, None], y[1], y[0])
            out[start:stop] = chosen ^ otc.ot_hash(t, np.arange(index, index + stop - start, dtype=np.uint64), words)
        return out

    def recv_correlated(self, choices, words: int = 1, dtype=np.uint64) -> np.ndarray:
        """Additive correlated OT: ``x_j + c_j * delta_j`` as ``(n, words)`` of ``dtype``
        (the sender's ``delta`` dtype: arithmetic mod 2^64, 2^32, 2^16 or 2^8)."""
        dt = _ring_dtype(np.zeros(0, dtype))
        p = self._pending(choices)
        out = np.empty((p.choices.size, words), dtype=dt)
        for start, stop, t, batch, index in p.parts:
            y = _expect(self.ctx.recv(self.peer, self._k("y", batch)), (stop - start, words),
                        f"corrections (batch {batch})", dt)
            z = otc.ot_hash(t, np.arange(index, index + stop - start, dtype=np.uint64), words).astype(dt)
            mask = (np.uint64(0) - p.choices[start:stop].astype(np.uint64)).astype(dt)
            z += y & mask[:, None]
            out[start:stop] = z
        return out


# ------------------------------------------------------------------------------ KKRT16 / OPRF
def _kkrt_keys(nonces: tuple[bytes, bytes], key: str) -> tuple[list[bytes], bytes]:
    seed = hashlib.blake2b(b"".join(nonces) + key.encode(), digest_size=32, person=b"atoll-kkrt").digest()
    return otc.prc_keys(seed), hashlib.blake2b(seed, digest_size=32, person=b"atoll-kkrt-h").digest()


def _blocks(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint64 or x.ndim != 2 or x.shape[1] != 2:
        raise CryptoError(f"{what} must be 128-bit values as an (n, 2) uint64 array, got {x.dtype} {x.shape}")
    return np.ascontiguousarray(x)


class OPRFBatch:
    """The sender's side of one KKRT batch: ``F_j(x)`` for any ``j < n`` and any 128-bit ``x``."""

    def __init__(self, q: np.ndarray, s_words: np.ndarray, keys: list[bytes], hkey: bytes, index: np.ndarray):
        self.n = q.shape[0]
        self._q, self._s, self._keys, self._hkey, self._index = q, s_words, keys, hkey, index

    def eval(self, j: np.ndarray, x: np.ndarray, out_words: int = 2) -> np.ndarray:
        """``F_{j[i]}(x[i])`` for each ``i``: ``(m, out_words) uint64``."""
        j = np.asarray(j)
        if j.ndim != 1 or (j.size and (j.min() < 0 or j.max() >= self.n)):
            raise CryptoError(f"OPRF instance indices must be a 1-d array within [0, {self.n})")
        x = _blocks(x, "OPRF inputs")
        if x.shape[0] != j.shape[0]:
            raise CryptoError(f"{j.shape[0]} instance indices for {x.shape[0]} inputs")
        rows = self._q[j] ^ (otc.prc(x, self._keys) & self._s)
        return otc.row_hash(rows, self._index[j], self._hkey, out_words)

    def eval_all(self, x: np.ndarray, out_words: int = 2) -> np.ndarray:
        """``F_j(x[j])`` for ``j = 0 .. n-1``."""
        return self.eval(np.arange(self.n), x, out_words)


class OPRFSender(_ExtSender):
    """KKRT16 batched OPRF (1-out-of-N OT) sender: the key holder.

    ``batch = OPRFSender(ctx, peer).expand(n)`` runs one batch of ``n`` instances; then
    ``batch.eval(j, x)`` is ``F_j(x)`` for any instance ``j`` and 128-bit input ``x``.

    For KKRT PSI (KKRT16 section 5): the receiver hashes its ids to 128 bits, places them in
    ``n`` cuckoo bins (a random dummy in empty bins) and calls
    ``OPRFReceiver.query(bins) -> F_j(bin_j)``; the sender, for each of its ids ``y`` and
    each bin ``j in {h_1(y), h_2(y), h_3(y)}``, computes ``batch.eval(j, y)`` (vectorised:
    ``j`` and ``y`` as arrays) and sends those values (shuffled; ``out_words`` or a truncation
    to ``lambda + 2 log n`` bits shortens them); the receiver intersects. Inputs are
    ``(m, 2) uint64`` arrays (128-bit values), outputs ``(m, out_words) uint64``. One
    batch holds at most ``max_batch`` (2^18) instances; several batches may be run.
    """

    protocol = "atoll.kkrt"

    def __init__(self, ctx: Context, peer: str, label: str = "kkrt"):
        super().__init__(ctx, peer, otc.KKRT_WIDTH, label)

    def expand(self, n: int) -> OPRFBatch:
        """One batch of ``n`` instances (sent as messages of at most ``max_batch`` each)."""
        n = _count(n)
        qs, idx = [], []
        for start in range(0, n, self.max_batch):
            m = min(n, start + self.max_batch) - start
            q, _, index = self._q(m)
            qs.append(q)
            idx.append(np.arange(index, index + m, dtype=np.uint64))
        self._setup()
        keys, hkey = _kkrt_keys(self._nonces, self._key)
        q = np.concatenate(qs) if qs else np.zeros((0, otc.KKRT_WIDTH // 64), np.uint64)
        return OPRFBatch(q, self._s_words, keys, hkey, np.concatenate(idx) if idx else np.zeros(0, np.uint64))


class OPRFReceiver(_ExtReceiver):
    """KKRT16 batched OPRF receiver: ``query(x)`` returns ``F_j(x[j])`` for ``j = 0 .. n-1``."""

    protocol = "atoll.kkrt"

    def __init__(self, ctx: Context, peer: str, label: str = "kkrt"):
        super().__init__(ctx, peer, otc.KKRT_WIDTH, label)

    def query(self, x: np.ndarray, out_words: int = 2) -> np.ndarray:
        """``F_j(x[j])`` for one batch: ``x`` ``(n, 2) uint64`` -> ``(n, out_words) uint64``."""
        x = _blocks(x, "OPRF inputs")
        n = _count(x.shape[0])
        self._setup()
        keys, hkey = _kkrt_keys(self._nonces, self._key)
        out = np.empty((n, out_words), dtype=np.uint64)
        for start in range(0, n, self.max_batch):
            stop = min(n, start + self.max_batch)
            code = np.zeros((_pad(stop - start), otc.KKRT_WIDTH // 64), dtype=np.uint64)
            code[: stop - start] = otc.prc(x[start:stop], keys)
            t, _, index = self._t(transpose(code), stop - start)
            out[start:stop] = otc.row_hash(t, np.arange(index, index + stop - start, dtype=np.uint64),
                                           hkey, out_words)
        return out


class OTNSender:
    """1-out-of-N chosen-message OT on KKRT: ``send(messages)`` with ``messages`` ``(n, N, w)``.

    One OPRF batch per call; ``y[j, i] = messages[j, i] ^ F_j(i)`` goes to the receiver.
    """

    def __init__(self, ctx: Context, peer: str, label: str = "otn"):
        self._oprf = OPRFSender(ctx, peer, label)

    def send(self, messages: np.ndarray) -> None:
        m = np.asarray(messages)
        if m.dtype != np.uint64 or m.ndim != 3 or not 1 <= m.shape[2] <= 8:
            raise CryptoError(f"1-out-of-N messages must be an (n, N, words<=8) uint64 array, got "
                              f"{m.dtype} {m.shape}")
        n, big_n, w = m.shape
        if m.nbytes > MAX_OTN_BYTES:
            raise CryptoError(f"1-out-of-N messages of {m.nbytes} bytes exceed one message's "
                              f"{MAX_OTN_BYTES}; split the transfers into several calls")
        batch = self._oprf.expand(n)
        j = np.repeat(np.arange(n), big_n)
        x = np.zeros((n * big_n, 2), dtype=np.uint64)
        x[:, 0] = np.tile(np.arange(big_n, dtype=np.uint64), n)
        pads = batch.eval(j, x, w).reshape(n, big_n, w)
        self._oprf.ctx.send(self._oprf.peer, self._oprf._k("y", self._oprf._batches - 1), m ^ pads)


class OTNReceiver:
    """1-out-of-N chosen-message OT receiver: ``recv(choices, N, words)`` -> ``(n, words)``."""

    def __init__(self, ctx: Context, peer: str, label: str = "otn"):
        self._oprf = OPRFReceiver(ctx, peer, label)

    def recv(self, choices: np.ndarray, n_messages: int, words: int = 1) -> np.ndarray:
        c = np.asarray(choices)
        if c.ndim != 1 or (c.size and (c.min() < 0 or c.max() >= n_messages)):
            raise CryptoError(f"1-out-of-N choices must be a 1-d array of integers in [0, {n_messages})")
        if not 1 <= words <= 8 or c.size * int(n_messages) * words * 8 > MAX_OTN_BYTES:
            raise CryptoError(f"1-out-of-N: {c.size} x {n_messages} messages of {words} words is more than "
                              f"one call takes ({MAX_OTN_BYTES} bytes, words <= 8); split the transfers")
        x = np.zeros((c.size, 2), dtype=np.uint64)
        x[:, 0] = c.astype(np.uint64)
        pad = self._oprf.query(x, words)
        o = self._oprf
        y = _expect(o.ctx.recv(o.peer, o._k("y", o._batches - 1)), (c.size, n_messages, words),
                    "1-out-of-N messages")
        return y[np.arange(c.size), c.astype(np.intp)] ^ pad


# ------------------------------------------------------------------------------ sessions
class OTSession:
    """This party's two directions towards one peer: ``sender`` (us -> peer) and ``receiver``."""

    def __init__(self, ctx: Context, peer: str):
        self.sender = OTSender(ctx, peer)
        self.receiver = OTReceiver(ctx, peer)

    def setup_both(self) -> None:
        """Base OTs of both directions, interleaved so that two parties doing it at once never
        wait on each other. Call it before using both directions concurrently (each party
        starting as receiver first would otherwise wait for the other's sender)."""
        self.receiver._setup_begin()
        self.sender._setup()
        self.receiver._setup()


_SESSIONS: "weakref.WeakKeyDictionary[Context, dict[str, OTSession]]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def ot_session(ctx: Context, peer: str) -> OTSession:
    """The OT extension sessions of ``ctx`` towards ``peer``, created once and reused.

    Base OTs run on first use of each direction; both parties must use the same ``Context``
    object (the same task) for the calls that belong together.
    """
    if peer == ctx.party or peer not in ctx.parties:
        raise CryptoError(f"OT needs another party of this job as the peer, got {peer!r}")
    with _LOCK:
        per = _SESSIONS.setdefault(ctx, {})
        if peer not in per:
            per[peer] = OTSession(ctx, peer)
        return per[peer]
