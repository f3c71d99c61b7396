"""Beaver triples from oblivious transfer: Gilboa multiplication on the IKNP extension.

Two parties, no third party and no homomorphic encryption. Each party draws its own shares
``a_i, b_i``; ``c = (a_0 + a_1)(b_0 + b_1)`` needs the cross products ``a_0 b_1`` and
``a_1 b_0``, each turned into additive shares by 64 correlated OTs per product (Gilboa,
"Two party RSA key generation", CRYPTO 1999; the IKNP/COT form of ALSZ13 section 5.4 and
SecureML, Mohassel-Zhang S&P 2017, section 4.2).

Protocol (both parties run it at once, each as sender for its ``a`` and receiver for its ``b``):

1. Each party -> peer: IKNP ``u`` with its bits ``b^t`` (``t = 0..63``) of its ``b`` as choice
   bits (:meth:`~atoll.secure.mpc.ot.OTReceiver.start`, step 3 of :mod:`atoll.secure.mpc.ot`).
2. Each party -> peer, as sender with correlation ``a`` (its own): the corrections of an
   additive correlated OT, one per bit ``t``; it keeps ``x_t`` and the peer gets
   ``x_t + b^t a``. Bit ``t`` only matters modulo ``2^(64-t)`` (it is multiplied by ``2^t``
   afterwards), so bits 32-47 travel as ``uint32``, 48-55 as ``uint16`` and 56-63 as
   ``uint8``: 344 bytes of corrections per product instead of 512.
3. Locally: ``share(a_s b_r) = -sum_t 2^t x_t`` for the sender and ``sum_t 2^t z_t`` for the
   receiver; ``c_i = a_i b_i + (its share of a_0 b_1) + (its share of a_1 b_0)``.

Matrix triples (``A (m, k) @ B (k, n)``) use vector correlations: the receiver's choice bit
``b^t`` of ``B[j, l]`` selects the whole column ``A[:, j]`` (``m`` words), so a cross term
costs ``64 k n`` OTs with ``m``-word corrections (or, if ``n > m``, ``64 m k`` OTs with
``n``-word corrections on the rows of ``B``), instead of ``64 m k n`` OTs. Communication is
still ``Theta(mkn)``: about ``2 x 344 mkn + 2 x 1024 k min(m, n)`` bytes per triple. For the
large matrices of SS-LR the dealer or HE providers are the practical choice; this one needs
no third party and no public-key work after the base OTs.

What each party sees: the peer's IKNP ``u`` (independent of the peer's ``b``) and the
correlated-OT corrections (each masked by a hash of a row only the choice the peer made
unlocks); the outputs are uniform shares. A party learns nothing of the peer's ``a``, ``b``
or ``c`` shares.
"""

from __future__ import annotations


import numpy as np

from atoll.crypto.aes import random_words
from atoll.errors import CryptoError
from atoll.federation.context import Context
from atoll.secure.mpc.ot import ot_session

from atoll.secure.mpc.providers import TripleProvider

__all__ = ["OTTripleProvider"]

#: bit positions of each correction width: (dtype, first bit, end bit)
_GROUPS = ((np.uint64, 0, 32), (np.uint32, 32, 48), (np.uint16, 48, 56), (np.uint8, 56, 64))
#: OTs per round (bounds memory: the correlation matrix is OTs x words)
_MAX_WORDS = 1 << 22


class OTTripleProvider(TripleProvider):
    """Beaver triples for one party of a two-party computation, from OT extension (Gilboa).

    ``OTTripleProvider(ctx, peer, party_index)``; both parties must ask for the same triples
    in the same order. ``mul(shape)`` -> this party's shares of ``a, b, c = a * b``
    (elementwise, mod 2^64); ``matmul(m, k, n)`` -> shares of ``A (m, k)``, ``B (k, n)``,
    ``C = A @ B``.
    """

    def __init__(self, ctx: Context, peer: str, party_index: int):
        if party_index not in (0, 1):
            raise CryptoError(f"party_index must be 0 or 1, got {party_index!r}")
        self.ctx, self.peer, self.party_index = ctx, peer, party_index
        self._session = ot_session(ctx, peer)

    # ------------------------------------------------------------------ the OLE core
    def _cross(self, vectors: np.ndarray, scalars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shares of both cross terms for ``P`` pairs at once.

        ``vectors``: ``(P, L)`` this party's correlation vectors (sender role); ``scalars``:
        ``(P,)`` this party's multipliers (receiver role). Returns ``(as_sender, as_receiver)``,
        each ``(P, L)``: this party's share of ``peer_scalar * my_vector`` and of
        ``my_scalar * peer_vector``. The peer calls it with the same ``P`` and ``L``.
        """
        p, w = vectors.shape
        self._session.setup_both()
        snd, rcv = self._session.sender, self._session.receiver
        bits = ((scalars[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
        pend = [rcv.start(bits[:, lo:hi].ravel()) for _, lo, hi in _GROUPS]          # step 1
        xs = []
        for dt, lo, hi in _GROUPS:                                                     # step 2
            corr = np.broadcast_to(vectors.astype(dt)[:, None, :], (p, hi - lo, w)).reshape(-1, w)
            xs.append(snd.send_correlated(np.ascontiguousarray(corr)).reshape(p, hi - lo, w))
        as_sender = np.zeros((p, w), dtype=np.uint64)
        as_receiver = np.zeros((p, w), dtype=np.uint64)
        for (dt, lo, hi), x, pe in zip(_GROUPS, xs, pend):                           # step 3
            z = rcv.recv_correlated(pe, w, dt).reshape(p, hi - lo, w)
            shift = np.arange(lo, hi, dtype=np.uint64)[None, :, None]
            as_sender -= (x.astype(np.uint64) << shift).sum(axis=1, dtype=np.uint64)
            as_receiver += (z.astype(np.uint64) << shift).sum(axis=1, dtype=np.uint64)
        return as_sender, as_receiver

    def _cross_chunked(self, vectors: np.ndarray, scalars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, w = vectors.shape
        step = max(1, _MAX_WORDS // (64 * max(w, 1)))
        a_s = np.empty((p, w), dtype=np.uint64)
        a_r = np.empty((p, w), dtype=np.uint64)
        for i in range(0, p, step):
            a_s[i:i + step], a_r[i:i + step] = self._cross(vectors[i:i + step], scalars[i:i + step])
        return a_s, a_r

    # ------------------------------------------------------------------ TripleProvider
    def mul(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shape = tuple(int(s) for s in shape)
        n = int(np.prod(shape, dtype=np.int64))
        if n < 0 or any(s < 0 for s in shape):
            raise CryptoError(f"triple shape must be non-negative, got {shape}")
        a, b = random_words(n), random_words(n)
        c = a * b
        if n:
            s, r = self._cross_chunked(a[:, None], b)
            c += s[:, 0] + r[:, 0]
        return a.reshape(shape), b.reshape(shape), c.reshape(shape)

    def matmul(self, m: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m, k, n = int(m), int(k), int(n)
        if min(m, k, n) < 0:
            raise CryptoError(f"matrix triple dimensions must be non-negative, got {(m, k, n)}")
        a = random_words(m * k).reshape(m, k)
        b = random_words(k * n).reshape(k, n)
        c = a @ b  # numpy's integer matmul wraps mod 2^64
        if not m * k * n:
            return a, b, c
        if n <= m:
            # pairs (j, l): my column a[:, j] as sender, my b[j, l] as receiver -> column l of C
            jj, ll = np.divmod(np.arange(k * n), n)
            s, r = self._cross_chunked(np.ascontiguousarray(a[:, jj].T), b.ravel())
            ct = np.zeros((n, m), dtype=np.uint64)
            np.add.at(ct, ll, s + r)
            c += ct.T
        else:
            # pairs (i, j): my row b[j, :] as sender, my a[i, j] as receiver -> row i of C
            ii, jj = np.divmod(np.arange(m * k), k)
            s, r = self._cross_chunked(np.ascontiguousarray(b[jj]), a.ravel())
            np.add.at(c, ii, s + r)
        return a, b, c

