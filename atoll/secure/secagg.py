"""Secure aggregation that survives dropouts (SecAgg, with the SecAgg+ sparse graph).

The server learns ``sum_u x_u`` over the clients that uploaded, and nothing about
any single ``x_u``, while up to a configured share of the clients may drop at
any stage (Bonawitz et al., "Practical secure aggregation for privacy-preserving
machine learning", CCS 2017, semi-honest variant; the sparse communication graph
is Bell et al., "Secure single-server aggregation with (poly)logarithmic
overhead", CCS 2020, "SecAgg+").

Inputs are float vectors, encoded as fixed point in Z_{2^64} (``frac_bits``
fractional bits; the server checks before the round that ``n * bound * 2^frac_bits``
leaves headroom below 2^63, so the decoded sum never wraps). Masks are expanded
from 32-byte seeds with AES-256-CTR (a vectorised, cryptographic PRG), seeds come
out of X25519 key agreements through HKDF-SHA256.

Protocol (one aggregation; ``U0`` the sampled clients, ``N(u)`` u's neighbours in
a Harary graph of degree ``k`` over a random permutation of ``U0``, ``k = |U0| - 1``
for plain SecAgg; ``t`` the reconstruction threshold, more than half of ``k`` by default):

0. **Advertise keys.** Each client makes two X25519 key pairs, ``(c_pk, c_sk)``
   for encrypting shares and ``(s_pk, s_sk)`` for masks, and sends both public
   keys. ``U1`` = clients that answered. Server aborts if some client of ``U1``
   has fewer than ``t`` neighbours in ``U1``.
1. **Share keys.** Server forwards to each ``u`` its neighbours' public keys.
   ``u`` checks they are distinct and at least ``t``, draws a self-mask seed
   ``b_u``, Shamir-shares ``s_sk_u`` and ``b_u`` (threshold ``t``; each 32-byte
   secret as nine 30-bit chunks over GF(2^31 - 1), all at once in numpy) among its
   neighbours, encrypts each neighbour's pair of shares with ChaCha20-Poly1305
   under ``HKDF(X25519(c_sk_u, c_pk_v))`` (sender, receiver and round bound as
   associated data), and sends the ciphertexts plus ``SHA-256(b_u)``. ``U2``.
2. **Masked input.** Server routes the ciphertexts; ``u`` decrypts and checks
   its shares, and sends ``y_u = x_u + PRG(b_u) + sum_{v in N(u) ∩ U2} sign(u, v) PRG(s_uv)``
   (mod 2^64) with ``s_uv = HKDF(X25519(s_sk_u, s_pk_v))`` and ``sign = +1`` if
   ``u < v`` else ``-1``. ``U3``.
3. **Consistency check.** Server tells each ``u`` which of its neighbours are in
   ``U3``; ``u`` checks ``U3 ⊆ U2``, that it is itself in ``U3``, that at least
   ``t`` neighbours remain, and that it has not answered an unmask request
   before in this aggregation.
4. **Unmask.** ``u`` reveals, per neighbour ``v``, the share of ``b_v`` if
   ``v ∈ U3`` or the share of ``s_sk_v`` if ``v ∈ U2 \\ U3`` — never both for the
   same ``v``. ``U4``. Server reconstructs from ``t`` shares each, checks every
   ``b_v`` against its hash and every ``s_sk_v`` against ``s_pk_v`` (a corrupted or
   inconsistent share aborts), removes the self masks of ``U3`` and the dropped
   clients' pairwise masks, and decodes the sum.

At every stage a client that does not answer is dropped; if too few remain for
reconstruction the server raises :class:`SecAggAborted` naming the stage and the
counts — it never returns a partial or stale sum.

What each party sees:
- **Server**: public keys, ciphertexts it cannot open, masked vectors ``y_u``
  (uniformly random individually), ``t`` shares of ``b_v`` for uploaders and of
  ``s_sk_v`` for clients that dropped before uploading (so it can unmask only
  the sum), and the sum.
- **Client**: its neighbours' public keys, its own shares of their secrets,
  which neighbours dropped when.

Threat model: honest-but-curious server and clients (Bonawitz's semi-honest
variant); a server that lies about ``U3`` to different clients is not detected
(that needs the signed consistency round with a PKI, not implemented).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from atoll import wire
from atoll.crypto import shamir
from atoll.errors import ConfigError, CryptoError, FederationError

log = logging.getLogger(__name__)

STAGES = ("advertise", "share", "masked", "unmask")
_KEY_BYTES = 32
_CHUNKS = shamir.vec_chunks(_KEY_BYTES)  # field elements of GF(2^31 - 1) per shared 32-byte secret
_SHARE_BYTES = 4 * _CHUNKS  # one share of one secret, big-endian uint32 chunks
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw


class SecAggAborted(FederationError):
    """Secure aggregation stopped: too many clients dropped, or a check failed. No sum is returned."""


@dataclass
class SecAggConfig:
    """Parameters of secure aggregation.

    ``degree``: neighbours per client (SecAgg+ graph); ``None`` = everyone (SecAgg).
    ``threshold_fraction``: a client's secrets need ``floor(k * fraction) + 1`` of
    its ``k`` neighbours' shares; more neighbours than ``k - t`` dropping aborts.
    ``bound``: largest absolute value a coordinate may take before encoding.
    ``frac_bits``: fixed-point fractional bits. ``stage_timeout``: seconds the
    server waits for answers at each stage (deployment only).
    """

    degree: int | None = None
    threshold_fraction: float = 0.5
    bound: float = 2.0 ** 16
    frac_bits: int = 24
    stage_timeout: float = 60.0
    epoch_rounds: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.threshold_fraction < 1:
            raise ConfigError("threshold_fraction must be in (0, 1); 0.5 means more than half")
        if self.degree is not None and self.degree < 2:
            raise ConfigError("SecAgg+ degree must be at least 2")
        if not 0 <= self.frac_bits <= 52:
            raise ConfigError("frac_bits must be between 0 and 52")
        if self.epoch_rounds < 1:
            raise ConfigError("epoch_rounds must be at least 1 (1 = a fresh key set-up every round)")


# --------------------------------------------------------------------------- pure helpers

def check_headroom(n_clients: int, bound: float, frac_bits: int) -> int:
    """Bits the decoded sum needs; raise if ``n * bound * 2^frac_bits`` does not fit in 63 bits."""
    need = math.ceil(math.log2(max(n_clients, 1) * bound * 2.0 ** frac_bits + 1)) + 1
    if need > 63:
        raise ConfigError(
            f"fixed point overflow: {n_clients} clients x bound {bound:g} x 2^{frac_bits} needs "
            f"{need} bits > 63; lower SecAggConfig.bound or frac_bits, or clip updates")
    return need


def encode_fixed(x: np.ndarray, frac_bits: int, bound: float) -> np.ndarray:
    """Float vector -> uint64 fixed point (two's complement in Z_2^64)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise CryptoError("cannot encode NaN or infinite values for secure aggregation")
    big = np.abs(x) > bound
    if big.any():
        raise CryptoError(f"{int(big.sum())} value(s) exceed the secure-aggregation bound {bound:g} "
                          f"(largest {float(np.abs(x).max()):.4g}); raise SecAggConfig.bound or clip updates")
    return np.rint(x * 2.0 ** frac_bits).astype(np.int64).view(np.uint64)


def decode_fixed(v: np.ndarray, frac_bits: int) -> np.ndarray:
    """uint64 fixed point (a sum of encodings) -> float."""
    return np.asarray(v, dtype=np.uint64).view(np.int64).astype(np.float64) / 2.0 ** frac_bits


_CTR_ZERO = modes.CTR(bytes(16))  # immutable; sharing it cut a 653-word mask from 13 to 9 us here


def prg(seed: bytes, length: int) -> np.ndarray:
    """``length`` pseudo-random uint64 words from a 32-byte seed (AES-256-CTR keystream, counter from 0)."""
    enc = Cipher(algorithms.AES(seed), _CTR_ZERO).encryptor()
    return np.frombuffer(enc.update(bytes(8 * length)), dtype=np.uint64)


_ZERO_SALT = bytes(32)


def kdf(secret: bytes, info: bytes) -> bytes:
    """32-byte key from a shared secret: HKDF-SHA256 (RFC 5869, no salt), as its two HMAC calls.

    Equal to ``cryptography``'s ``HKDF(SHA256(), 32, salt=None, info)`` (tested) with about 30%
    less overhead per call (measured here); a round derives two keys per pair of neighbours.
    """
    prk = hmac.digest(_ZERO_SALT, secret, "sha256")
    return hmac.digest(prk, info + b"\x01", "sha256")


def _pack_share(share: np.ndarray) -> bytes:
    return np.asarray(share, dtype=np.uint64).astype(">u4").tobytes()


def _unpack_shares(raws: list[bytes]) -> np.ndarray:
    """Shares as sent (big-endian uint32 chunks) -> uint64 array of shape ``(len(raws), _CHUNKS)``."""
    if any(len(r) != _SHARE_BYTES for r in raws):
        raise SecAggAborted(f"malformed share: expected {_SHARE_BYTES} bytes")
    return np.frombuffer(b"".join(raws), dtype=">u4").astype(np.uint64).reshape(len(raws), _CHUNKS)


def agree(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as e:
        raise CryptoError(f"invalid X25519 public key from a peer: {e}") from e


def agree_many(private: X25519PrivateKey, publics: Sequence[bytes]) -> list[bytes]:
    """``agree(private, p)`` for every ``p`` in one batch.

    Goes through the X25519 backend of :mod:`atoll.secure.psi_group` (Intel IPP
    ``crypto_mb``, eight lanes per call, about 5x faster than one OpenSSL call per key,
    where it loads; OpenSSL otherwise). Same bytes as :func:`agree`: both are RFC 7748
    X25519, and the backend passes a known-answer test and a cross-check with OpenSSL
    when it loads."""
    from atoll.secure.psi_group import POINT_BYTES, get_backend

    publics = [bytes(p) for p in publics]
    if not publics:
        return []
    if any(len(p) != POINT_BYTES for p in publics):
        raise CryptoError(f"invalid X25519 public key from a peer: not {POINT_BYTES} bytes")
    raw = private.private_bytes(_RAW, _RAW_PRIV, serialization.NoEncryption())
    points = np.frombuffer(b"".join(publics), dtype=np.uint8).reshape(len(publics), POINT_BYTES)
    try:
        out = get_backend().mul(raw, points)
    except CryptoError as e:
        raise CryptoError("invalid X25519 public key from a peer: it is of small order") from e
    return [bytes(r) for r in out]


def harary_neighbours(clients: list[str], degree: int | None, seed: int,
                      only: str | None = None) -> dict[str, list[str]]:
    """Each client's neighbours in the SecAgg+ graph (Harary graph H(k, n) over a seeded permutation).

    ``degree=None`` or ``degree >= n - 1`` gives the complete graph (plain SecAgg).
    An odd degree is rounded up to the next even number. ``only`` computes one client's row.
    """
    n = len(clients)
    who = clients if only is None else [only]
    if degree is None or degree >= n - 1:
        return {u: [v for v in clients if v != u] for u in who}
    half = (degree + 1) // 2
    order = [clients[i] for i in np.random.default_rng(seed).permutation(n)]
    pos = {u: i for i, u in enumerate(order)}
    out = {}
    for u in who:
        i = pos[u]
        nb = {order[(i + d) % n] for d in range(1, half + 1)} | {order[(i - d) % n] for d in range(1, half + 1)}
        out[u] = sorted(nb)
    return out


def threshold_for(degree: int, fraction: float) -> int:
    return min(degree, int(math.floor(degree * fraction)) + 1)


def _sign_mask(u: str, v: str, seed: bytes, length: int) -> np.ndarray:
    m = prg(seed, length)
    return m if u < v else (np.uint64(0) - m)


def _mask_seeds(private: X25519PrivateKey, publics: Sequence[bytes], rnd: int) -> list[bytes]:
    return [kdf(z, b"atoll-secagg-mask|%d" % rnd) for z in agree_many(private, publics)]


def _enc_keys(private: X25519PrivateKey, publics: Sequence[bytes], rnd: int) -> list[bytes]:
    return [kdf(z, b"atoll-secagg-enc|%d" % rnd) for z in agree_many(private, publics)]


# --------------------------------------------------------------------------- client role

class SecAggClient:
    """Client side of one aggregation: holds the input, the keys and the shares it received.

    Create one per aggregation; call :meth:`handle` with each stage's message
    from the server and send back what it returns.
    """

    def __init__(self, name: str, x: np.ndarray, config: SecAggConfig):
        self.name = name
        self.config = config
        self._x = encode_fixed(x, config.frac_bits, config.bound)
        self._stage = -1
        self._unmasked = False
        self._received: dict[str, tuple[bytes, bytes]] = {}

    def handle(self, msg: Mapping) -> dict:
        stage = msg.get("stage")
        if stage not in STAGES:
            raise SecAggAborted(f"{self.name}: unknown secure-aggregation stage {stage!r}")
        idx = STAGES.index(stage)
        if idx != self._stage + 1:
            raise SecAggAborted(f"{self.name}: stage {stage!r} out of order (after "
                                f"{STAGES[self._stage] if self._stage >= 0 else 'nothing'})")
        if idx and int(msg.get("round", -1)) != self.round:
            raise SecAggAborted(f"{self.name}: message for round {msg.get('round')} in round {self.round}")
        self._stage = idx
        return getattr(self, f"_{stage}")(msg)

    def _advertise(self, msg: Mapping) -> dict:
        self.round = int(msg["round"])
        clients = list(msg["clients"])
        if self.name not in clients:
            raise SecAggAborted(f"{self.name} is not among the clients of this aggregation")
        self.points = {v: i + 1 for i, v in enumerate(clients)}
        self.neighbours = harary_neighbours(clients, msg["degree"], int(msg["graph_seed"]), only=self.name)[self.name]
        self.t = int(msg["threshold"])
        if int(msg["frac_bits"]) != self.config.frac_bits or len(self._x) != int(msg["length"]):
            raise SecAggAborted(f"{self.name}: server's encoding parameters do not match this client's")
        self._c = X25519PrivateKey.generate()
        self._s = X25519PrivateKey.generate()
        return {"c_pk": self._c.public_key().public_bytes(_RAW, _RAW_PUB),
                "s_pk": self._s.public_key().public_bytes(_RAW, _RAW_PUB)}

    def _share(self, msg: Mapping) -> dict:
        keys = {v: (bytes(c), bytes(s)) for v, (c, s) in msg["keys"].items()}
        if not set(keys) <= set(self.neighbours):
            raise SecAggAborted(f"{self.name}: server sent keys of clients that are not its neighbours")
        if len(keys) < self.t:
            raise SecAggAborted(f"{self.name}: only {len(keys)} neighbours left, threshold is {self.t}")
        flat = [k for pair in keys.values() for k in pair]
        if len(set(flat)) != len(flat):
            raise SecAggAborted(f"{self.name}: two public keys are equal; refusing to share secrets")
        self.keys = keys
        b = secrets.token_bytes(32)
        self._b = b
        holders = sorted(keys)
        xs = [self.points[v] for v in holders]
        s_raw = self._s.private_bytes(_RAW, _RAW_PRIV, serialization.NoEncryption())
        # shares of s_sk_u (row 0) and b_u (row 1) for each holder, in one vectorised pass
        shares = shamir.split_bytes_vec([s_raw, b], xs, self.t)
        out = {}
        self._enc = {}
        enc_keys = _enc_keys(self._c, [keys[v][0] for v in holders], self.round)
        for v, sh, key in zip(holders, shares, enc_keys):
            self._enc[v] = key
            nonce = os.urandom(12)
            body = _pack_share(sh)
            aad = f"{self.round}|{self.name}|{v}".encode()
            out[v] = nonce + ChaCha20Poly1305(key).encrypt(nonce, body, aad)
        return {"shares": out, "b_hash": hashlib.sha256(b).digest()}

    def _masked(self, msg: Mapping) -> dict:
        u2 = list(msg["u2"])
        if not set(u2) <= set(self.keys):
            raise SecAggAborted(f"{self.name}: U2 names clients that never advertised keys to it")
        if len(u2) < self.t:
            raise SecAggAborted(f"{self.name}: only {len(u2)} neighbours shared keys, threshold {self.t}")
        for v, ct in msg["shares"].items():
            if v not in u2:
                raise SecAggAborted(f"{self.name}: got shares from {v!r}, which is not in U2")
            ct = bytes(ct)
            key = self._enc[v]  # _share made one for every neighbour that advertised keys; u2 is among them
            try:  # sender, receiver and round are authenticated as associated data
                body = ChaCha20Poly1305(key).decrypt(ct[:12], ct[12:], f"{self.round}|{v}|{self.name}".encode())
            except InvalidTag as e:
                raise SecAggAborted(f"{self.name}: the shares from {v!r} fail authentication") from e
            if len(body) != 2 * _SHARE_BYTES:
                raise SecAggAborted(f"{self.name}: malformed shares from {v!r}")
            self._received[v] = (body[:_SHARE_BYTES], body[_SHARE_BYTES:])  # (s_sk_v share, b_v share)
        missing = set(u2) - set(self._received)
        if missing:
            raise SecAggAborted(f"{self.name}: no shares from {sorted(missing)} although they are in U2")
        self.u2 = u2
        y = self._x + prg(self._b, len(self._x))
        for v, seed in zip(u2, _mask_seeds(self._s, [self.keys[v][1] for v in u2], self.round)):
            y += _sign_mask(self.name, v, seed, len(y))
        return {"y": y}

    def _unmask(self, msg: Mapping) -> dict:
        if self._unmasked:
            raise SecAggAborted(f"{self.name}: asked to unmask twice; refusing")
        self._unmasked = True
        u3 = set(msg["u3"])
        if not u3 <= set(self.u2):
            raise SecAggAborted(f"{self.name}: U3 names neighbours that were not in U2")
        if len(u3) < self.t:
            raise SecAggAborted(f"{self.name}: only {len(u3)} neighbours uploaded, threshold {self.t}")
        b_sh = {v: self._received[v][1] for v in self.u2 if v in u3}
        s_sh = {v: self._received[v][0] for v in self.u2 if v not in u3}
        return {"b": b_sh, "s": s_sh}


# --------------------------------------------------------------------------- server role

Call = Callable[[str, dict[str, dict]], dict[str, dict]]
"""``call(stage, {client: message}) -> {client: reply}``; clients that dropped are absent."""


@dataclass
class SecAggResult:
    """The decoded sum and who contributed; ``revealed`` is for audits."""

    sum: np.ndarray
    contributors: list[str]
    dropped: dict[str, list[str]]
    revealed: dict[str, set] = field(default_factory=dict)
    #: seconds the server computed itself, and seconds spent waiting in ``call`` (the clients' work
    #: in simulation, the network and the clients in deployment)
    server_s: float = 0.0
    call_s: float = 0.0


class SecAggServer:
    """Server side: drives the four stages over ``call`` and returns only the sum."""

    def __init__(self, config: SecAggConfig | None = None):
        self.config = config or SecAggConfig()

    def aggregate(self, call: Call, clients: list[str], length: int, rnd: int = 0,
                  first: Mapping[str, dict] | None = None) -> SecAggResult:
        """Run one aggregation over ``clients`` of vectors of ``length``.

        ``first`` adds fields to each client's first (advertise) message: the
        federated-learning server puts its training instruction there.
        """
        t_start = time.perf_counter()
        waited = [0.0]
        inner_call = call

        def call(stage: str, msgs: dict[str, dict]) -> dict[str, dict]:
            t = time.perf_counter()
            try:
                return inner_call(stage, msgs)
            finally:
                waited[0] += time.perf_counter() - t

        cfg = self.config
        clients = sorted(clients)
        n = len(clients)
        check_headroom(n, cfg.bound, cfg.frac_bits)
        graph_seed = secrets.randbits(63)
        nbrs = harary_neighbours(clients, cfg.degree, graph_seed)
        degree = len(nbrs[clients[0]]) if n > 1 else 0
        t = threshold_for(degree, cfg.threshold_fraction) if degree else 1
        if n < 2 or degree < 2:
            raise SecAggAborted(f"secure aggregation needs at least 3 clients, got {n}")
        dropped: dict[str, list[str]] = {}

        def alive_check(stage: str, alive: set[str], need: set[str] | None = None) -> None:
            for u in sorted(need if need is not None else alive):
                have = len(alive.intersection(nbrs[u]))
                if have < t:
                    raise SecAggAborted(
                        f"secure aggregation aborted at stage {stage!r}: client {u!r} has {have} live "
                        f"neighbours, its secrets need {t} (of {degree}); {len(alive)}/{n} clients "
                        f"still answering. Sample more clients, lower threshold_fraction, or retry the round")

        # 0. advertise
        base = {"stage": "advertise", "round": rnd, "clients": clients, "degree": cfg.degree,
                "graph_seed": graph_seed, "threshold": t, "frac_bits": cfg.frac_bits, "length": length,
                "bound": cfg.bound}
        merged: dict[int, dict] = {}  # one message object per distinct ``first`` (usually one for all)
        msgs = {}
        for u in clients:
            extra = first.get(u) if first else None
            if id(extra) not in merged:
                merged[id(extra)] = {**base, **(dict(extra) if extra else {})}
            msgs[u] = merged[id(extra)]
        r0 = call("advertise", msgs)
        u1 = {u for u in clients if u in r0}
        dropped["advertise"] = sorted(set(clients) - u1)
        alive_check("advertise", u1)
        pks = {}
        for u in u1:
            c, s = bytes(r0[u]["c_pk"]), bytes(r0[u]["s_pk"])
            if len(c) != 32 or len(s) != 32:
                raise SecAggAborted(f"client {u!r} sent malformed public keys")
            pks[u] = (c, s)

        # 1. share keys
        r1 = call("share", {u: {"stage": "share", "round": rnd, "keys": {v: pks[v] for v in nbrs[u] if v in u1}}
                            for u in sorted(u1)})
        u2 = {u for u in u1 if u in r1}
        dropped["share"] = sorted(u1 - u2)
        alive_check("share", u2)
        b_hash = {u: bytes(r1[u]["b_hash"]) for u in u2}
        inbox: dict[str, dict[str, bytes]] = {u: {} for u in u2}
        for u in u2:
            sent = r1[u]["shares"]
            expect = {v for v in nbrs[u] if v in u1}
            if set(sent) != expect:
                raise SecAggAborted(f"client {u!r} sent shares for {len(sent)} neighbours, expected {len(expect)}")
            for v, ct in sent.items():
                if v in u2:
                    inbox[v][u] = ct

        # 2. masked input
        r2 = call("masked", {u: {"stage": "masked", "round": rnd, "shares": inbox[u],
                                 "u2": sorted(v for v in nbrs[u] if v in u2)} for u in sorted(u2)})
        u3 = {u for u in u2 if u in r2}
        dropped["masked"] = sorted(u2 - u3)
        if not u3:
            raise SecAggAborted("secure aggregation aborted at stage 'masked': no client uploaded")
        alive_check("masked", u3, need=u2)
        total = np.zeros(length, dtype=np.uint64)
        for u in sorted(u3):
            y = np.asarray(r2[u]["y"])
            if y.dtype != np.uint64 or y.shape != (length,):
                raise SecAggAborted(f"client {u!r} uploaded a masked vector of dtype {y.dtype} "
                                    f"shape {y.shape}, expected uint64 ({length},)")
            total += y

        # 3+4. consistency check and unmask
        r3 = call("unmask", {u: {"stage": "unmask", "round": rnd, "u3": sorted(v for v in nbrs[u] if v in u3)}
                             for u in sorted(u3)})
        u4 = {u for u in u3 if u in r3}
        dropped["unmask"] = sorted(u3 - u4)
        b_shares: dict[str, list[tuple[int, bytes]]] = {v: [] for v in u3}  # (holder's point, share)
        s_shares: dict[str, list[tuple[int, bytes]]] = {v: [] for v in u2 - u3}
        point = {v: i + 1 for i, v in enumerate(clients)}
        for u in sorted(u4):
            rb, rs = r3[u]["b"], r3[u]["s"]
            if set(rb) & set(rs):
                raise SecAggAborted(f"client {u!r} revealed both shares for the same neighbour")
            for v, y in rb.items():
                if v not in b_shares or v not in nbrs[u]:
                    raise SecAggAborted(f"client {u!r} revealed a self-mask share for {v!r} that was not asked")
                b_shares[v].append((point[u], bytes(y)))
            for v, y in rs.items():
                if v not in s_shares or v not in nbrs[u]:
                    raise SecAggAborted(f"client {u!r} revealed a key share for {v!r} that was not asked")
                s_shares[v].append((point[u], bytes(y)))
        for kind, table in (("self-mask seed", b_shares), ("mask key", s_shares)):
            for v, sh in table.items():
                if len(sh) < t:
                    raise SecAggAborted(
                        f"secure aggregation aborted at stage 'unmask': only {len(sh)} shares of "
                        f"{v!r}'s {kind} came back, {t} needed ({len(u4)}/{n} clients answering)")
        for v, sh in b_shares.items():
            b = self._reconstruct(sh, t, v, "self-mask seed")
            if hashlib.sha256(b).digest() != b_hash[v]:
                raise SecAggAborted(f"reconstructed self-mask seed of {v!r} does not match its hash: "
                                    "a client sent a corrupted share")
            total -= prg(b, length)
        for v, sh in s_shares.items():
            raw = self._reconstruct(sh, t, v, "mask key")
            try:
                sk = X25519PrivateKey.from_private_bytes(raw)
            except ValueError as e:
                raise SecAggAborted(f"reconstructed mask key of {v!r} is malformed") from e
            if sk.public_key().public_bytes(_RAW, _RAW_PUB) != pks[v][1]:
                raise SecAggAborted(f"reconstructed mask key of {v!r} does not match its public key: "
                                    "a client sent a corrupted share")
            alive = [u for u in nbrs[v] if u in u3]
            for u, seed in zip(alive, _mask_seeds(sk, [pks[u][1] for u in alive], rnd)):
                total -= _sign_mask(u, v, seed, length)
        revealed = {"b": set(b_shares), "s": set(s_shares)}
        elapsed = time.perf_counter() - t_start
        return SecAggResult(decode_fixed(total, cfg.frac_bits), sorted(u3), dropped, revealed,
                            server_s=elapsed - waited[0], call_s=waited[0])

    @staticmethod
    def _reconstruct(shares: list[tuple[int, bytes]], t: int, v: str, kind: str) -> bytes:
        try:
            return shamir.combine_bytes_vec([x for x, _ in shares[:t]], _unpack_shares([y for _, y in shares[:t]]),
                                            _KEY_BYTES, t)
        except CryptoError as e:
            raise SecAggAborted(f"could not reconstruct {v!r}'s {kind}: {e}") from e


def simulate_secagg(inputs: Mapping[str, np.ndarray], config: SecAggConfig | None = None,
                    drop: Mapping[str, set[str]] | None = None, rnd: int = 0) -> SecAggResult:
    """Run server and clients in this process (tests, benchmarks).

    ``drop`` maps a stage name to the clients that stop answering from that stage on.
    """
    config = config or SecAggConfig()
    drop = drop or {}
    length = len(next(iter(inputs.values())))
    states = {u: SecAggClient(u, x, config) for u, x in inputs.items()}
    gone: set[str] = set()

    def call(stage: str, msgs: dict[str, dict]) -> dict[str, dict]:
        gone.update(drop.get(stage, ()))
        out = {}
        for u, m in msgs.items():
            if u in gone:
                continue
            reply = states[u].handle(wire.loads(wire.dumps(m)))
            out[u] = wire.loads(wire.dumps(reply))
        return out

    return SecAggServer(config).aggregate(call, sorted(inputs), length, rnd)
