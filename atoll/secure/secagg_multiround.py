"""Multi-round secure aggregation: keys and shared secrets set up once per epoch of rounds.

Federated learning sums the clients' updates every round. The per-round protocol
(:mod:`atoll.secure.secagg`, Bonawitz et al. CCS 2017; SecAgg+ graph of Bell et al.
CCS 2020) redoes its whole key set-up each round: two X25519 key pairs per client,
an agreement per pair of neighbours, fresh Shamir shares. Here a client agrees one
key with each neighbour once per *epoch* (``SecAggConfig.epoch_rounds`` rounds) and
derives every round's pairwise mask from that key and the round number, as in
Flamingo (Ma et al., "Flamingo: multi-round single-server secure aggregation with
applications to private federated learning", IEEE S&P 2023); the self-mask seeds of
all the epoch's rounds are Shamir-shared in the same set-up. A steady round is then
three short exchanges and no public-key operation at all.

**The cross-round attack, and why nothing long-lived is ever reconstructed.** The
obvious way to reuse keys is to Shamir-share each client's epoch mask key, as the
per-round protocol does, and reconstruct it when the client drops. That is unsafe
with reuse in *both* directions: a key reconstructed in round ``r`` because ``u``
dropped gives the server ``u``'s pairwise masks of every later round (forward: ``u``
comes back and its update is open, unless every pair of ``u`` is rotated first) and
of every *earlier* round of the epoch, in which the server already holds ``u``'s
masked input and legitimately reconstructed ``u``'s self-mask (backward: rotation
after the fact cannot undo that). So this protocol never reveals a pairwise key or
anything valid beyond one round. A dropped client's masks are cancelled by its live
neighbours, who send the server the *round's* mask streams they share with it
(``correct``); AES-CTR streams of different rounds use disjoint counter blocks, so a
corrected stream says nothing about another round. The only reconstructed secrets
are per-round self-mask seeds ``b_u^r``: independent random values, one per round,
each used once. Rotation happens where a key generation genuinely ends: at the end
of the epoch, when the cohort changes, and when a client re-keys (it lost its state,
or never finished the set-up): it gets a fresh X25519 key, its neighbours replace
the pairwise keys they had with it and forget its old shares.

Notation: epoch ``e`` covers rounds ``[s, s + E)``; ``C`` the cohort (the clients
the strategy selected in round ``s``); ``N(u)`` ``u``'s neighbours in a Harary graph
of degree ``k`` over a seeded permutation of ``C`` (``k = |C| - 1`` without
``degree``); threshold ``t = floor(k f) + 1`` with ``f = threshold_fraction`` (default 1/2,
so ``t > k / 2``); ``m = max(t, k - t + 1)`` the fewest mask partners a client uploads with.

Set-up (first round of the epoch; a client that misses part of it finishes it in a
later round of the same epoch, with the neighbours that are set up by then):

1. **keys.** Each client makes an X25519 key pair and sends its public key.
2. **shares.** Server -> ``u``: its neighbours' public keys. ``u`` agrees one key with
   each (batched) and derives ``K_uv`` (AES-128, for masks) and ``E_uv`` (ChaCha20-Poly1305,
   for shares) from it with HKDF-SHA256 (epoch and both names in ``info``). It draws a
   16-byte self-mask seed ``b_u^r`` for every remaining round ``r`` of the epoch, Shamir-
   shares all of them at once among its neighbours (threshold ``t``, 30-bit chunks over
   GF(2^31 - 1)), encrypts each neighbour's shares under ``E_uv`` (epoch, first round,
   sender and receiver authenticated), and sends the ciphertexts and ``SHA-256(b_u^r)``
   for every ``r``.

Every round ``r`` (a round's first message also carries the training instruction):

3. **upload.** Server -> ``u``: its mask set ``A_u`` (neighbours taking part this round;
   ``u`` checks ``A_u ⊆ N(u)`` and ``|A_u| >= m``), public keys and share ciphertexts
   from neighbours it has not had yet. ``u`` sends
   ``y_u = x_u + G(b_u^r) + sum_{v in A_u} sign(u, v) S(K_uv, r)`` (mod 2^64), where
   ``S(K, r)`` is the AES-128-CTR stream of ``K`` from counter block ``r * 2^64``
   (``sign = +1`` if ``u < v``) and ``G`` AES-128-CTR from 0. ``U`` = clients that uploaded.
4. **correct** (repeated while clients vanish). Server -> each ``u`` in ``F`` (initially
   ``U``): ``D_u`` = its mask partners not in ``F``. ``u`` sends
   ``c_u = sum_{v in D_u} sign(u, v) S(K_uv, r)`` and remembers ``D_u`` for this round. A
   client that does not answer leaves ``F`` (its upload is discarded and its partners
   correct for it in the next pass). Before each pass the server also removes from
   ``F`` every ``u`` with fewer than ``t`` mask partners or fewer than ``t`` share holders
   in ``F`` (its update would be too exposed, or its self-mask unrecoverable).
5. **reveal.** Server -> each ``h`` in ``F``: the clients of ``F`` whose shares ``h``
   holds. ``h`` refuses any name it corrected for this round ("never both": the
   server gets a client's self-mask seed or its round masks, never both), and sends
   its shares of ``b_v^r``. Server reconstructs each ``b_v^r`` from ``t`` shares (all at
   once), checks it against its hash (a corrupted share aborts), and outputs
   ``sum_{u in F} (y_u - c_u - G(b_u^r)) = sum_{u in F} x_u`` decoded from fixed point.

Dropouts: a client that misses keys, shares or upload is absent from this round's
sum; one that misses ``correct`` is too (its upload is discarded); one that misses
``reveal`` is in the sum (its seed comes from its neighbours). The server raises
:class:`~atoll.secure.secagg.SecAggAborted` naming the stage when no client is left,
when a self-mask seed gets fewer than ``t`` shares back, when a share is corrupted, or
after ``MAX_CORRECT_PASSES`` passes that each lost clients: it never returns a
partial or stale sum.

What each party sees:

- **Server**: public keys; share ciphertexts it cannot open; per round, masked
  vectors ``y_u`` (uniformly random individually); corrections ``c_u`` (sums of the
  round's mask streams between a live client and its dropped partners, worthless in
  any other round); ``t`` shares, hence the value, of the round's self-mask seed of
  each client in ``F`` (never of a client it got corrections for, never of a round
  other than the current one); the sum. Never a pairwise key, a seed of another
  round, or an unmasked update.
- **Client**: its neighbours' public keys, the pairwise keys it shares with them,
  its shares of their seeds (``t - 1`` or fewer of anyone's), which neighbours
  dropped when.

Threat model: honest-but-curious server and clients (the semi-honest model of
Bonawitz et al.), over many rounds. Per round, an honest client ``u`` in ``F`` stays
hidden because its masks with live partners never leave the pair; a client the
server treats as dropped stays hidden because ``t`` of its ``k < 2t`` neighbours would
have to reveal its seed, every partner that sent a correction for it refuses, and
with ``|A_u| >= k - t + 1`` partners fewer than ``t`` other neighbours are left. The
clients enforce this themselves (``|A_u| >= m``, never both, one reveal per round,
only for the current round), so a server that lies about who dropped still cannot
open one update in one round. A lower ``threshold_fraction`` makes rounds survive
more dropouts at ``reveal`` and tolerates fewer neighbours colluding with the server
(``t - 1``), as in the per-round protocol; SecAgg+'s degree must be chosen for the
expected dropout rate (Bell et al.): a client's seed needs ``t`` live holders. Across rounds nothing the server holds
is valid for another round, so the guarantee does not decay over the epoch. Not
covered: a server that gives different clients different views *and* colludes with
clients (that needs the signed consistency round with a PKI), and malicious clients
sending wrong masks (they can spoil the sum, not read others' inputs).
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import os
import secrets
import struct
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from atoll import wire
from atoll.crypto import shamir
from atoll.secure.secagg import (Call, SecAggAborted, SecAggConfig, SecAggResult, agree_many, check_headroom,
                                 decode_fixed, encode_fixed, harary_neighbours, prg, threshold_for)

STAGES = ("keys", "shares", "upload", "correct", "reveal")
#: stages that may open a round for a client (the training instruction rides on the first one)
FIRST_STAGES = ("keys", "shares", "upload")
MAX_CORRECT_PASSES = 4
MAX_EPOCH_ROUNDS = 100_000
SEED_BYTES = 16  # self-mask seeds and mask keys: AES-128 (X25519 gives about 128-bit security too)
_CHUNKS = shamir.vec_chunks(SEED_BYTES)
_SHARE_BYTES = 4 * _CHUNKS  # one share of one seed: big-endian uint32 chunks
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_ZERO_SALT = bytes(32)
_HEAD = struct.Struct(">I")  # first round of the seeds a share payload carries (authenticated)


# --------------------------------------------------------------------------- pure helpers

@lru_cache(maxsize=8)
def _counter_blocks(rnd: int, nblocks: int) -> bytes:
    """AES-CTR counter blocks ``rnd * 2^64 + i`` for ``i < nblocks``, big-endian (the round's stream)."""
    blocks = np.empty((nblocks, 2), dtype=">u8")
    blocks[:, 0] = rnd
    blocks[:, 1] = np.arange(nblocks, dtype=np.uint64)
    return blocks.tobytes()


def mask_streams(ciphers: Sequence, rnd: int, length: int) -> np.ndarray:
    """Round ``rnd``'s mask stream of each pairwise key: ``length`` uint64 words per key (a view of a
    reused buffer: valid until the next call in this thread).

    ``ciphers`` are AES-ECB encryptors keyed once per epoch; encrypting the counter
    blocks ``rnd * 2^64 + i`` is AES-CTR with initial block ``rnd * 2^64`` (tested against
    ``cryptography``'s CTR mode), without building a cipher per pair and round.
    """
    nb = (length + 1) // 2
    ctr = _counter_blocks(rnd, nb)
    width = 2 * nb + 2  # update_into wants room for one more block than it writes
    out = _scratch(len(ciphers) * width).reshape(len(ciphers), width)
    view = memoryview(out.view(np.uint8)).cast("B")
    step = 8 * width
    for i, c in enumerate(ciphers):
        c.update_into(ctr, view[i * step:(i + 1) * step])
    return out[:, :length]


_local = threading.local()


def _scratch(words: int) -> np.ndarray:
    """A reused per-thread buffer of ``words`` uint64 (a fresh one per call costs page faults on
    every round; the streams it holds are summed right away and never kept)."""
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) < words:
        buf = _local.buf = np.empty(max(words, 1), dtype=np.uint64)
    return buf[:words]


def signed_sum(streams: np.ndarray, minus: int) -> np.ndarray:
    """``sum(streams[minus:]) - sum(streams[:minus])`` mod 2^64.

    With the partners in name order, the first ``minus`` sort before the client (it subtracts
    their streams) and the rest after it (it adds them): slices, no copies.
    """
    total = streams[minus:].sum(axis=0, dtype=np.uint64)
    if minus:
        total -= streams[:minus].sum(axis=0, dtype=np.uint64)
    return total


def derive_pair_keys(shared: bytes, epoch: int, u: str, v: str) -> tuple[bytes, bytes]:
    """``(K_uv, E_uv)``: the 16-byte AES mask key and the 32-byte share-encryption key of a pair.

    HKDF-SHA256 (RFC 5869, no salt) of the X25519 secret: one extract, one expand per key
    (equal to ``cryptography``'s HKDF with these infos, tested); epoch and both names in ``info``.
    """
    lo, hi = sorted((u, v))
    tag = b"%d|%s|%s\x01" % (epoch, lo.encode(), hi.encode())
    prk = hmac.digest(_ZERO_SALT, shared, "sha256")
    return (hmac.digest(prk, b"atoll-secagg-mr-mask|" + tag, "sha256")[:SEED_BYTES],
            hmac.digest(prk, b"atoll-secagg-mr-enc|" + tag, "sha256"))


def pair_keys(private: X25519PrivateKey, me: str, publics: Mapping[str, bytes], epoch: int) -> dict[str, tuple]:
    """Per neighbour: (AES-ECB encryptor of the mask key ``K_uv``, ChaCha20-Poly1305 of ``E_uv``).

    One batched X25519 agreement per neighbour (:func:`~atoll.secure.secagg.agree_many`).
    """
    names = list(publics)
    out = {}
    for v, z in zip(names, agree_many(private, [publics[v] for v in names])):
        k_mask, k_enc = derive_pair_keys(z, epoch, me, v)
        out[v] = (Cipher(algorithms.AES(k_mask), modes.ECB()).encryptor(), ChaCha20Poly1305(k_enc))
    return out


def min_mask_set(k: int, t: int) -> int:
    """Fewest mask partners a client of ``k`` neighbours uploads with, for threshold ``t``.

    To open ``y_u`` the server needs a correction from every partner of ``u`` (each then refuses
    ``u``'s seed share) and ``t`` seed shares: with at least ``k - t + 1`` partners, fewer than ``t``
    neighbours are left to give shares. And at least ``t``: the masks with live partners hide ``u``.
    """
    return max(t, k - t + 1)


def _aad(epoch: int, first: int, sender: str, receiver: str) -> bytes:
    return b"atoll-secagg-mr|%d|%d|%s|%s" % (epoch, first, sender.encode(), receiver.encode())


def _seed_field(seeds: Sequence[bytes]) -> np.ndarray:
    return np.stack([shamir.bytes_to_field(s) for s in seeds])


def reconstruct_seeds(points: np.ndarray, shares: np.ndarray) -> list[bytes]:
    """Seeds from ``t`` shares each: ``points`` (S, t), ``shares`` (S, t, chunks); raises on invalid ones."""
    values = shamir.combine_field_many(points, shares)
    return [shamir.field_to_bytes(v, SEED_BYTES) for v in values]


# --------------------------------------------------------------------------- client role

class MultiRoundSecAggClient:
    """Client side, kept for the whole run: its epoch's keys, seeds and the shares it holds.

    Call :meth:`handle` with each message of the server and send back what it returns;
    ``x`` (the float vector to aggregate) goes with the round's first message.
    """

    def __init__(self, name: str):
        self.name = name
        self.epoch: int | None = None
        self.round = -1
        self._done: set[str] = set()

    # ------------------------------------------------------------------ dispatch
    def handle(self, msg: Mapping, x: np.ndarray | None = None) -> dict:
        stage = msg.get("stage")
        if stage not in STAGES:
            raise SecAggAborted(f"{self.name}: unknown secure-aggregation stage {stage!r}")
        epoch, rnd = int(msg.get("epoch", -1)), int(msg.get("round", -1))
        if stage != "keys":
            if self.epoch is None or epoch > self.epoch:
                return {"rekey": True}  # no state for this epoch (a restart, or set-up missed): re-key
            if epoch < self.epoch:
                raise SecAggAborted(f"{self.name}: message for epoch {epoch}, this client is in epoch {self.epoch}")
        if rnd != self.round:
            if rnd < self.round:
                raise SecAggAborted(f"{self.name}: message for round {rnd} after round {self.round}")
            if stage not in FIRST_STAGES:
                raise SecAggAborted(f"{self.name}: stage {stage!r} cannot open round {rnd}")
            self.round, self._done, self._x = rnd, set(), None
            self._mask: list[str] = []
            self._corrected: set[str] = set()
        if x is not None:
            if self._x is not None:
                raise SecAggAborted(f"{self.name}: two inputs for round {rnd}")
            self._x_raw = np.asarray(x, dtype=np.float64)
            self._x = True
        order = {"keys": (), "shares": ("keys",), "upload": ("keys", "shares"), "correct": ("keys", "shares", "upload", "correct"),
                 "reveal": ("keys", "shares", "upload", "correct")}
        if stage in self._done and stage != "correct" or not self._done <= set(order[stage]):
            raise SecAggAborted(f"{self.name}: stage {stage!r} out of order in round {rnd} "
                                f"(after {sorted(self._done) or 'nothing'})")
        if stage in ("correct", "reveal") and "upload" not in self._done:
            raise SecAggAborted(f"{self.name}: stage {stage!r} before this client uploaded in round {rnd}")
        reply = getattr(self, f"_{stage}")(msg)
        self._done.add(stage)
        return reply

    # ------------------------------------------------------------------ set-up
    def _keys(self, msg: Mapping) -> dict:
        epoch, start, end = int(msg["epoch"]), int(msg["epoch_start"]), int(msg["epoch_end"])
        if self.epoch is not None and epoch < self.epoch:
            raise SecAggAborted(f"{self.name}: asked to join epoch {epoch} after epoch {self.epoch}")
        if not start <= self.round < end or end - start > MAX_EPOCH_ROUNDS:
            raise SecAggAborted(f"{self.name}: epoch [{start}, {end}) does not contain round {self.round}")
        cohort = list(msg["clients"])
        if self.name not in cohort or len(set(cohort)) != len(cohort):
            raise SecAggAborted(f"{self.name} is not among the clients of this epoch")
        neighbours = harary_neighbours(cohort, msg["degree"], int(msg["graph_seed"]), only=self.name)[self.name]
        t = int(msg["threshold"])
        if not 1 <= t <= len(neighbours):
            raise SecAggAborted(f"{self.name}: threshold {t} does not fit its {len(neighbours)} neighbours")
        # a new epoch, or a re-key inside this one: everything of the old key generation goes
        self.epoch, self.start, self.end = epoch, start, end
        self.cohort, self.neighbours, self.t = cohort, set(neighbours), t
        self.min_mask = min_mask_set(len(neighbours), t)
        self.points = {v: i + 1 for i, v in enumerate(cohort)}
        self.frac_bits, self.bound, self.length = int(msg["frac_bits"]), float(msg["bound"]), int(msg["length"])
        self._sk = X25519PrivateKey.generate()
        self._pairs: dict[str, tuple] = {}
        self._peer_pk: dict[str, bytes] = {}
        self._seeds: dict[int, bytes] = {}
        self._shared = False
        self._held: dict[str, tuple[int, bytes]] = {}  # neighbour -> (first round, its shares, a row per round)
        return {"pk": self._sk.public_key().public_bytes(_RAW, _RAW_PUB)}

    def _learn_keys(self, keys: Mapping) -> list[str]:
        """Agree pairwise keys with neighbours whose (new) public keys these are; returns their names."""
        new = {}
        for v, pk in keys.items():
            pk = bytes(pk)
            if v not in self.neighbours:
                raise SecAggAborted(f"{self.name}: server sent the key of {v!r}, which is not a neighbour")
            if len(pk) != 32:
                raise SecAggAborted(f"{self.name}: malformed public key for {v!r}")
            if self._peer_pk.get(v) != pk:
                new[v] = pk
        if new:
            mine = self._sk.public_key().public_bytes(_RAW, _RAW_PUB)
            known = set(self._peer_pk.values()) | {mine}
            if len(set(new.values())) != len(new) or known & set(new.values()):
                raise SecAggAborted(f"{self.name}: two public keys are equal; refusing")
            for v in new:  # a re-keyed neighbour: its old pair key and shares are gone
                self._held.pop(v, None)
            self._pairs.update(pair_keys(self._sk, self.name, new, self.epoch))
            self._peer_pk.update(new)
        return sorted(new)

    def _shares(self, msg: Mapping) -> dict:
        if self._shared:
            raise SecAggAborted(f"{self.name}: asked to share its seeds twice in one key generation")
        keys = dict(msg["keys"])
        if len(keys) < self.t:
            raise SecAggAborted(f"{self.name}: only {len(keys)} neighbours have keys, threshold is {self.t}")
        self._learn_keys(keys)
        self._shared = True
        self._first = self.round
        rounds = range(self._first, self.end)
        self._seeds = {r: secrets.token_bytes(SEED_BYTES) for r in rounds}
        # one polynomial per 30-bit chunk of every round's seed; kept, so that a neighbour whose key
        # arrives later in the epoch gets its shares of the same secrets
        self._field = _seed_field([self._seeds[r] for r in rounds])
        self._coeffs = shamir.random_field((self.t - 1, self._field.size))
        return {"payloads": self._deal(sorted(keys), self._first),
                "hashes": b"".join(hashlib.sha256(self._seeds[r]).digest() for r in rounds)}

    def _deal(self, holders: list[str], first: int) -> dict[str, bytes]:
        """Encrypted shares of this client's seeds of rounds ``[first, end)`` for each of ``holders``."""
        if not holders or first >= self.end:
            return {}
        skip = (first - self._first) * _CHUNKS
        shares = shamir.share_field_polys(self._field.reshape(-1)[skip:], self._coeffs[:, skip:],
                                          [self.points[v] for v in holders])
        head = _HEAD.pack(first)
        out = {}
        for v, sh in zip(holders, shares):
            nonce = os.urandom(12)
            out[v] = head + nonce + self._pairs[v][1].encrypt(nonce, sh.astype(">u4").tobytes(),
                                                               _aad(self.epoch, first, self.name, v))
        return out

    def _take_payloads(self, payloads: Mapping) -> None:
        for v, ct in payloads.items():
            ct = bytes(ct)
            if v not in self._pairs:
                raise SecAggAborted(f"{self.name}: shares from {v!r} without its key")
            if len(ct) < _HEAD.size + 12 + 16:
                raise SecAggAborted(f"{self.name}: malformed shares from {v!r}")
            (first,) = _HEAD.unpack(ct[:_HEAD.size])
            n = self.end - first
            if not self.start <= first < self.end or len(ct) != _HEAD.size + 12 + 16 + n * _SHARE_BYTES:
                raise SecAggAborted(f"{self.name}: shares from {v!r} do not fit the epoch")
            try:
                body = self._pairs[v][1].decrypt(ct[4:16], ct[16:], _aad(self.epoch, first, v, self.name))
            except InvalidTag as e:
                raise SecAggAborted(f"{self.name}: the shares from {v!r} fail authentication") from e
            self._held[v] = (first, body)  # round r's share: body[(r - first) * _SHARE_BYTES:][:_SHARE_BYTES]

    # ------------------------------------------------------------------ every round
    def _upload(self, msg: Mapping) -> dict:
        if not self._x:
            raise SecAggAborted(f"{self.name}: asked to upload in round {self.round} without an input")
        late = self._learn_keys(msg.get("keys") or {})
        self._take_payloads(msg.get("payloads") or {})
        mask = sorted(msg["mask"])
        if len(set(mask)) != len(mask) or not set(mask) <= set(self._pairs):
            raise SecAggAborted(f"{self.name}: mask set names clients it has no key with")
        if len(mask) < self.min_mask:
            raise SecAggAborted(f"{self.name}: only {len(mask)} mask partners, it needs {self.min_mask} of its "
                                f"{len(self.neighbours)} neighbours; refusing to upload")
        if self.round not in self._seeds:
            raise SecAggAborted(f"{self.name}: no self-mask seed for round {self.round} (shared from a later round)")
        x = encode_fixed(self._x_raw, self.frac_bits, self.bound)
        if len(x) != self.length:
            raise SecAggAborted(f"{self.name}: input of {len(x)} values, the epoch aggregates {self.length}")
        seed = self._seeds.pop(self.round)  # used once
        y = x + prg(seed, self.length)
        y += signed_sum(mask_streams([self._pairs[v][0] for v in mask], self.round, self.length),
                        bisect.bisect_left(mask, self.name))
        self._mask = mask
        reply: dict = {"y": y}
        if late and self._shared:  # neighbours that joined (or re-keyed) after this client shared
            reply["payloads"] = self._deal(late, self.round + 1)
        return reply

    def _correct(self, msg: Mapping) -> dict:
        dropped = sorted(msg["dropped"])
        if not dropped or not set(dropped) <= set(self._mask) or set(dropped) & self._corrected:
            raise SecAggAborted(f"{self.name}: correction asked for clients outside its mask set, or twice")
        self._corrected |= set(dropped)
        c = signed_sum(mask_streams([self._pairs[v][0] for v in dropped], self.round, self.length),
                       bisect.bisect_left(dropped, self.name))
        return {"c": c}

    def _reveal(self, msg: Mapping) -> dict:
        names = list(msg["alive"])
        if set(names) & self._corrected:
            raise SecAggAborted(f"{self.name}: asked for the seed share of a client it corrected for; refusing")
        if names != sorted(set(names)):
            raise SecAggAborted(f"{self.name}: reveal request must name distinct clients in order")
        out = []
        for v in names:
            held = self._held.get(v)
            if held is None or not held[0] <= self.round < self.end:
                raise SecAggAborted(f"{self.name}: holds no share of {v!r}'s seed for round {self.round}")
            i = (self.round - held[0]) * _SHARE_BYTES
            out.append(held[1][i:i + _SHARE_BYTES])
        return {"shares": b"".join(out)}  # in the order of the request


# --------------------------------------------------------------------------- server role

@dataclass
class _Epoch:
    number: int
    start: int
    end: int
    cohort: list[str]
    length: int
    graph_seed: int
    nbrs: dict[str, list[str]]
    degree: int
    t: int
    point: dict[str, int] = field(default_factory=dict)  # Shamir evaluation point of each client
    pk: dict[str, bytes] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)  # client -> first round of its seeds (it has shared)
    hashes: dict[str, bytes] = field(default_factory=dict)
    pending: dict[str, dict[str, bytes]] = field(default_factory=dict)  # receiver -> {sender: ciphertext}
    holders: dict[str, set[str]] = field(default_factory=dict)  # owner -> clients that hold its shares
    knows: dict[str, set[str]] = field(default_factory=dict)  # client -> neighbours whose key it has
    rekey: set[str] = field(default_factory=set)


class MultiRoundSecAggServer:
    """Server side, kept for the whole run: drives each round over ``call`` and returns only the sum."""

    def __init__(self, config: SecAggConfig | None = None):
        self.config = config or SecAggConfig(epoch_rounds=10)
        self._epoch: _Epoch | None = None
        self._count = -1

    def _new_epoch(self, clients: list[str], length: int, rnd: int) -> _Epoch:
        cfg = self.config
        n = len(clients)
        check_headroom(n, cfg.bound, cfg.frac_bits)
        if n < 3:
            raise SecAggAborted(f"secure aggregation needs at least 3 clients, got {n}")
        seed = secrets.randbits(63)
        nbrs = harary_neighbours(clients, cfg.degree, seed)
        degree = len(nbrs[clients[0]])
        self._count += 1
        return _Epoch(self._count, rnd, rnd + max(1, cfg.epoch_rounds), clients, length, seed, nbrs, degree,
                      threshold_for(degree, cfg.threshold_fraction), {v: i + 1 for i, v in enumerate(clients)})

    def aggregate(self, call: Call, clients: list[str], length: int, rnd: int = 0,
                  first: Mapping[str, dict] | None = None) -> SecAggResult:
        """Run round ``rnd`` over ``clients`` of vectors of ``length`` (set-up too when an epoch starts).

        ``first`` adds fields to each client's first message of the round (the training instruction).
        """
        t_start = time.perf_counter()
        waited = [0.0]

        def timed(stage: str, msgs: dict[str, dict]) -> dict[str, dict]:
            t0 = time.perf_counter()
            try:
                out = call(stage, msgs)
            finally:
                waited[0] += time.perf_counter() - t0
            for u, r in list(out.items()):
                if r.get("rekey"):  # the client lost its epoch state: a dropout now, a fresh key next round
                    ep.rekey.add(u)
                    del out[u]
            return out

        clients = sorted(clients)
        ep = self._epoch
        if ep is None or not ep.start <= rnd < ep.end or ep.cohort != clients or ep.length != length:
            ep = self._epoch = self._new_epoch(clients, length, rnd)
        t, nbrs = ep.t, ep.nbrs
        need_mask = min_mask_set(ep.degree, t)
        opened: set[str] = set()

        def with_first(u: str, msg: dict) -> dict:
            if u in opened or not first or first.get(u) is None:
                return msg
            opened.add(u)
            return {**first[u], **msg}

        dropped: dict[str, list[str]] = {}
        gone: set[str] = set()

        # 1. keys: clients without a key in this epoch, or asking to re-key
        for u in sorted(ep.rekey):
            self._forget(ep, u)
        ep.rekey.clear()
        need = [u for u in clients if u not in ep.pk]
        if need:
            base = {"stage": "keys", "round": rnd, "epoch": ep.number, "epoch_start": ep.start, "epoch_end": ep.end,
                    "clients": clients, "degree": self.config.degree, "graph_seed": ep.graph_seed, "threshold": t,
                    "frac_bits": self.config.frac_bits, "bound": self.config.bound, "length": length}
            r = timed("keys", {u: with_first(u, base) for u in need})
            for u in need:
                pk = bytes(r[u]["pk"]) if u in r else None
                if pk is None:
                    continue
                if len(pk) != 32 or pk in ep.pk.values():
                    raise SecAggAborted(f"client {u!r} sent a malformed or repeated public key")
                ep.pk[u] = pk
            dropped["keys"] = sorted(set(need) - set(r))
            gone |= set(dropped["keys"])

        # 2. shares: clients with a key that have not shared their seeds (and have enough keyed neighbours)
        need = [u for u in clients if u in ep.pk and u not in ep.first and u not in gone
                and sum(v in ep.pk for v in nbrs[u]) >= t]
        if need:
            sent = {u: {v: ep.pk[v] for v in nbrs[u] if v in ep.pk} for u in need}
            r = timed("shares", {u: with_first(u, {"stage": "shares", "round": rnd, "epoch": ep.number,
                                                   "keys": sent[u]}) for u in need})
            rounds = ep.end - rnd
            size = 4 + 12 + 16 + rounds * _SHARE_BYTES
            for u in need:
                if u not in r:
                    continue
                pay, hashes = r[u].get("payloads"), bytes(r[u].get("hashes", b""))
                if not isinstance(pay, dict) or set(pay) != set(sent[u]) or len(hashes) != 32 * rounds or \
                        any(len(bytes(c)) != size for c in pay.values()):
                    raise SecAggAborted(f"client {u!r} sent malformed shares")
                ep.first[u], ep.hashes[u] = rnd, hashes
                ep.knows.setdefault(u, set()).update(sent[u])
                ep.holders[u] = set()
                for v, ct in pay.items():
                    ep.pending.setdefault(v, {})[u] = bytes(ct)
            dropped["shares"] = sorted(set(need) - set(r))
            gone |= set(dropped["shares"])

        # 3. upload: who can take part (a key, seeds shared, enough partners and potential share holders)
        cand = {u for u in clients if u in ep.first and u not in gone}
        incoming: dict[str, set[str]] = {}  # owner -> clients that get its shares in this upload
        for v, senders in ep.pending.items():
            for u in senders:
                incoming.setdefault(u, set()).add(v)
        while True:
            out = {u for u in cand if sum(v in cand for v in nbrs[u]) < need_mask or
                   len(ep.holders[u] | (incoming.get(u, set()) & cand)) < t}
            if not out:
                break
            cand -= out
        dropped["waiting"] = sorted(set(clients) - cand - gone)  # not set up enough yet; they sit this round out
        if not cand:
            raise SecAggAborted(f"secure aggregation aborted at stage 'upload': no client can take part "
                                f"({len(clients)} selected, threshold {t} of {ep.degree} neighbours)")
        mask = {u: [v for v in nbrs[u] if v in cand] for u in cand}
        keys = {u: {v: ep.pk[v] for v in nbrs[u] if v in ep.pk and v not in ep.knows[u]} for u in cand}
        deliver = {u: dict(ep.pending.get(u, {})) for u in cand}
        r = timed("upload", {u: with_first(u, {"stage": "upload", "round": rnd, "epoch": ep.number, "mask": mask[u],
                                               "keys": keys[u], "payloads": deliver[u]})
                             for u in sorted(cand)})
        ys = {}
        for u in sorted(cand):
            if u not in r:
                continue
            y = np.asarray(r[u]["y"])
            if y.dtype != np.uint64 or y.shape != (length,):
                raise SecAggAborted(f"client {u!r} uploaded a masked vector of dtype {y.dtype} shape {y.shape}, "
                                    f"expected uint64 ({length},)")
            ys[u] = y
            ep.knows[u].update(keys[u])
            for v, ct in deliver[u].items():  # delivered: u now holds v's shares
                ep.holders[v].add(u)
                if ep.pending[u].get(v) is ct:
                    del ep.pending[u][v]
            late = r[u].get("payloads") or {}
            size = 4 + 12 + 16 + (ep.end - rnd - 1) * _SHARE_BYTES
            if not isinstance(late, dict) or not set(late) <= set(keys[u]) or \
                    any(len(bytes(c)) != size for c in late.values()):
                raise SecAggAborted(f"client {u!r} sent malformed shares for new neighbours")
            for v, ct in late.items():  # shares for a neighbour that joined late: delivered next round
                ep.pending.setdefault(v, {})[u] = bytes(ct)
        dropped["upload"] = sorted(cand - set(ys))

        # 4. correct: live uploaders cancel their masks with partners outside F; repeat while clients vanish
        F = set(ys)
        mask_set = {u: set(mask[u]) for u in F}
        corr: dict[str, np.ndarray] = {}
        done: dict[str, set[str]] = {u: set() for u in F}
        dropped["correct"], excluded = [], []
        passes = 0
        while True:
            while True:  # too few partners or holders left in F: out, before anyone reveals its seed
                out = {u for u in F if len(mask_set[u] & F) < t or len(ep.holders[u] & F) < t}
                if not out:
                    break
                F -= out
                excluded += sorted(out)
            asks = {u: sorted(mask_set[u] - F - done[u]) for u in F}
            asks = {u: d for u, d in asks.items() if d}
            if not asks:
                break
            passes += 1
            if passes > MAX_CORRECT_PASSES:
                raise SecAggAborted(f"secure aggregation aborted at stage 'correct': clients kept vanishing for "
                                    f"{MAX_CORRECT_PASSES} passes ({len(F)}/{len(clients)} left); retry the round")
            r = timed("correct", {u: {"stage": "correct", "round": rnd, "epoch": ep.number, "dropped": d}
                                  for u, d in sorted(asks.items())})
            for u, d in asks.items():
                if u not in r:
                    F.discard(u)
                    dropped["correct"].append(u)
                    continue
                c = np.asarray(r[u]["c"])
                if c.dtype != np.uint64 or c.shape != (length,):
                    raise SecAggAborted(f"client {u!r} sent a correction of dtype {c.dtype} shape {c.shape}")
                corr[u] = corr[u] + c if u in corr else c
                done[u].update(d)
        if not F:
            raise SecAggAborted("secure aggregation aborted at stage 'correct': no client is left in the sum")
        dropped["excluded"] = excluded

        # 5. reveal: holders in F send their shares of the round's self-mask seeds of F
        order = sorted(F)
        col = {h: j for j, h in enumerate(order)}  # holders are members of F too
        ask: dict[str, list[str]] = {h: [] for h in order}
        for v in order:
            for h in ep.holders[v] & F:
                ask[h].append(v)
        r = timed("reveal", {h: {"stage": "reveal", "round": rnd, "epoch": ep.number, "alive": sorted(a)}
                             for h, a in ask.items() if a})
        # shares[i, j] = holder order[j]'s share of order[i]'s seed, where it came back
        shares = np.zeros((len(order), len(order), _CHUNKS), dtype=np.uint64)
        have = np.zeros((len(order), len(order)), dtype=bool)
        row = {v: i for i, v in enumerate(order)}
        for h in sorted(r):
            names, blob = sorted(ask[h]), r[h].get("shares")
            if not isinstance(blob, bytes) or len(blob) != len(names) * _SHARE_BYTES:
                raise SecAggAborted(f"client {h!r} revealed shares that were not asked, or malformed ones")
            rows = [row[v] for v in names]
            shares[rows, col[h]] = np.frombuffer(blob, dtype=">u4").reshape(len(names), _CHUNKS)
            have[rows, col[h]] = True
        dropped["reveal"] = sorted(h for h, a in ask.items() if a and h not in r)
        counts = have.sum(axis=1)
        if (counts < t).any():
            v = order[int(np.argmin(counts))]
            raise SecAggAborted(f"secure aggregation aborted at stage 'reveal': only {int(counts.min())} shares of "
                                f"{v!r}'s self-mask seed came back, {t} needed ({len(r)}/{len(F)} answering)")
        first_t = np.argsort(~have, axis=1, kind="stable")[:, :t]  # each seed's first t holders that answered
        pts = np.array([ep.point[h] for h in order], dtype=np.uint64)[first_t]  # Shamir points
        vals = np.take_along_axis(shares, first_t[:, :, None], axis=1)
        try:
            seeds = reconstruct_seeds(pts, vals)
        except Exception as e:  # noqa: BLE001 - any failure here is a corrupted share
            raise SecAggAborted(f"could not reconstruct a self-mask seed: {e}") from e
        total = np.zeros(length, dtype=np.uint64)
        for v, seed in zip(order, seeds):
            i = rnd - ep.first[v]
            if hashlib.sha256(seed).digest() != ep.hashes[v][32 * i:32 * i + 32]:
                raise SecAggAborted(f"reconstructed self-mask seed of {v!r} does not match its hash: "
                                    "a client sent a corrupted share")
            total += ys[v] - prg(seed, length)
            if v in corr:
                total -= corr[v]
        elapsed = time.perf_counter() - t_start
        revealed = {"b": set(F), "s": set(), "corrected": {u: set(d) for u, d in done.items() if d}}
        return SecAggResult(decode_fixed(total, self.config.frac_bits), order, dropped, revealed,
                            server_s=elapsed - waited[0], call_s=waited[0])

    @staticmethod
    def _forget(ep: _Epoch, u: str) -> None:
        """Drop ``u``'s key generation: its neighbours will get its new key and shares."""
        ep.pk.pop(u, None)
        ep.first.pop(u, None)
        ep.hashes.pop(u, None)
        ep.holders.pop(u, None)
        ep.pending.pop(u, None)  # what others sent it was encrypted to its old key
        for v in ep.pending.values():
            v.pop(u, None)
        for s in ep.holders.values():
            s.discard(u)  # its copy of others' shares went with its old state
        for s in ep.knows.values():
            s.discard(u)
        ep.knows.pop(u, None)

    @property
    def epoch(self) -> int:
        """Number of the current epoch (0, 1, ...), -1 before the first round."""
        return self._count


def simulate_multiround(rounds: Sequence[Mapping[str, np.ndarray]], config: SecAggConfig | None = None,
                        drop=None, clients: Sequence[str] | None = None, recorder=None,
                        states: dict | None = None) -> list[SecAggResult]:
    """Run several rounds of server and clients in this process (tests, benchmarks).

    ``rounds[r]`` maps each client to its input of round ``r``; ``drop(round, stage, client)``
    makes a client stop answering from that stage of that round on (it comes back the next
    round); ``recorder(round, stage, sender, receiver, payload)`` sees every encoded message
    in both directions (audits); ``states``, if given, receives the client objects (audits).
    Every message goes through the wire codec both ways.
    """
    config = config or SecAggConfig(epoch_rounds=len(rounds))
    server = MultiRoundSecAggServer(config)
    names = sorted(clients if clients is not None else rounds[0])
    states = states if states is not None else {}
    states.update({u: MultiRoundSecAggClient(u) for u in names})
    out = []
    for rnd, inputs in enumerate(rounds):
        gone: set[str] = set()
        fed: set[str] = set()

        def call(stage: str, msgs: dict[str, dict]) -> dict[str, dict]:
            res = {}
            for u, m in msgs.items():
                if u in gone or (drop is not None and drop(rnd, stage, u)):
                    gone.add(u)
                    continue
                x = inputs[u] if u not in fed else None
                fed.add(u)
                sent = wire.dumps(m)
                reply = wire.dumps(states[u].handle(wire.loads(sent), x))
                if recorder is not None:
                    recorder(rnd, stage, "server", u, sent)
                    recorder(rnd, stage, u, "server", reply)
                res[u] = wire.loads(reply)
            return res

        length = len(next(iter(inputs.values())))
        out.append(server.aggregate(call, names, length, rnd))
    return out
