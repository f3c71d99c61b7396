"""Unbalanced PSI: a small set against a huge one, the huge side's work done once, offline.

A Diffie-Hellman oblivious PRF (2HashDH: Jarecki, Kiayias and Krawczyk,
ASIACRYPT 2014; as used for unbalanced PSI with precomputation by Kiss, Liu,
Schneider, Asokan and Pinkas, PETS 2017) on X25519, semi-honest. The server
(role ``host``, the big set ``Y``) holds a long-term key ``k``; the PRF is
``F(x) = BLAKE2b(x, X25519(k, H(x)))`` with ``H`` the salted hash of
:func:`atoll.secure.psi_group.hash_to_points`. The client is the guest (small
set ``X``). X25519 clamps its scalars (``clamp(k) = 8 k'``), which removes
the cofactor: a blinded value lies in the prime-order subgroup of the curve
(order ``L``) or of its twist (``L'``), and the client can undo its blinding
with a clamped scalar congruent to ``+-clamp(a)^-1`` modulo that order
(:func:`unblinding_scalars`; ``a`` is redrawn until both exist).

Offline, once per server set (:func:`build_server_cache`, cached on disk under
``cache_dir``):

0. The server draws ``k`` and a salt, computes ``F(y)`` for every ``y`` in
   ``Y`` (the only work proportional to ``|Y|``; parallel over cores), and
   keeps the values truncated to ``c`` bytes (:func:`encoded_bytes`: 40
   statistical bits plus ``log2 |Y| + 24`` for clients of up to 2^24 ids) in a
   random order. The first time a client meets this cache (step 2) it receives
   the whole encoded set and keeps it, sorted, in its own ``cache_dir``.

Online, per query (the cost is proportional to ``|X|`` at both sides):

1. Hello: the client sends the protocol, settings, ``|X|``, its batch size and
   the id of the server cache it holds (if any); the server checks them and
   answers with ``|Y|``, its cache id, the salt and ``c``.
2. If the client's cache id differs, the server streams its encoded set
   (offline phase of this client, ``c`` bytes per server id).
3. The client draws a fresh ``a``, shuffles its ids and sends
   ``A = X25519(a, H(x))`` in batches; the server returns ``X25519(k, A)`` in
   the same order.
4. The client unblinds to ``X25519(k, H(x))``, computes ``F(x)`` and looks it
   up in the encoded set. The result is its ids found there, sorted by
   normalised id (the order of ECDH-PSI).
5. With ``result_to="both"`` the client sends the server the positions of the
   result in the encoded set, in that order; the server maps them to its ids.

What each party sees
--------------------
* Client: ``|Y|``, the encoded set (PRF values under a key it never has:
  pseudorandom except at the ids it queries, under one-more Diffie-Hellman),
  and the PRF at its own ids: the intersection. Across sessions a client
  learns the PRF at every id it ever queried; the server bounds what one
  session may ask (at most 2^24 ids) and rotates the key by rebuilding the
  cache (``rebuild=True``) to end that.
* Server: ``|X|``, the client's cache id (which ties the client's sessions to
  one cache download), blinded values ``X25519(a, H(x))`` under a fresh ``a``
  (uniform in the group whatever ``x`` is), and with ``result_to="both"`` the
  intersection. Nothing about client ids outside it.
* Everyone: blinded points, PRF values and positions in shuffled lists, never
  an id or the input order.

Measured with ``benchmarks/psi.py`` (2-core AMD EPYC, IPP X25519, load 5-9):
10k client ids against 10M server ids: the server's offline phase 95 s, the
client's one-time download 110 MB (9.7 s with sorting), then each online
session 2.0 s, of which 1.5 s is the server checking that its ids still match
its cache (a digest of all of them) and 0.46 s the protocol.

Pick it for 1k-100k ids against millions that change rarely; for balanced
sets use ``kkrt`` (:mod:`atoll.secure.psi_kkrt`). Two parties only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import gmpy2
import numpy as np

from atoll.errors import ConfigError, CryptoError, DataError
from atoll.federation.context import Context
from atoll.secure import psi_group
from atoll.secure.psi import (PsiParams, PsiResult, PsiRole, _pool, batch_spans, normalize_ids, register_protocol,
                              secure_permutation)

log = logging.getLogger(__name__)

__all__ = ["ServerCache", "UnbalancedPsiClient", "UnbalancedPsiServer", "build_server_cache",
           "encoded_bytes", "is_on_curve", "prf_values", "unblinding_scalars"]

VERSION = 1
P = 2 ** 255 - 19
#: order of the prime subgroup of Curve25519 (cofactor 8) and of its quadratic twist (cofactor 4)
ORDER = 2 ** 252 + 27742317777372353535851937790883648493
ORDER_TWIST = (2 * (P + 1) - 8 * ORDER) // 4
#: the most ids one client session may query (bounds the server's online work and the false matches)
MAX_CLIENT_IDS = 1 << 24
MAX_SERVER_IDS = 1 << 32
STAT_BITS = 40
#: encoded values per message of the offline transfer
SETUP_BATCH = 1 << 20


# ---------------------------------------------------------------------------- pure helpers
def encoded_bytes(n_server: int) -> int:
    """Bytes kept of each PRF value: 40 bits plus log2 of server ids times 2^24 client ids."""
    bits = STAT_BITS + math.log2(max(n_server, 1)) + math.log2(MAX_CLIENT_IDS)
    return max(8, min(32, int(math.ceil(bits / 8))))


def _clamp(k: bytes) -> int:
    v = int.from_bytes(k, "little")
    return (v & ~7 & ((1 << 255) - 1)) | (1 << 254)


def unblinding_scalars(a: bytes) -> tuple[bytes, bytes] | None:
    """X25519 scalars ``s`` with ``clamp(s) = +-clamp(a)^-1`` modulo the curve's and the twist's
    prime order, or None if one does not exist (draw another ``a``)."""
    out = []
    for order in (ORDER, ORDER_TWIST):
        m = pow(_clamp(a), -1, order)
        inv8 = pow(8, -1, order)
        for target in (m, order - m):  # X25519 gives u-coordinates: -P and P look the same
            t = ((target - (1 << 254)) * inv8) % order
            if t < 1 << 251:
                out.append(((1 << 254) + 8 * t).to_bytes(32, "little"))
                break
        else:
            return None
    return out[0], out[1]


def blinding_scalar() -> tuple[bytes, bytes, bytes]:
    """A fresh ``a`` (OS entropy) with both unblinding scalars."""
    while True:
        a = psi_group.new_scalar()
        s = unblinding_scalars(a)
        if s is not None:
            return a, s[0], s[1]


def is_on_curve(points: np.ndarray) -> np.ndarray:
    """For each u-coordinate: True on Curve25519, False on its twist (Legendre symbol of u^3+Au^2+u)."""
    mask = (1 << 255) - 1
    out = np.empty(len(points), dtype=bool)
    for i, row in enumerate(points):
        u = (int.from_bytes(row.tobytes(), "little") & mask) % P
        out[i] = gmpy2.legendre((u * u * u + 486662 * u * u + u) % P, P) >= 0
    return out


def prf_values(keys: Sequence[bytes], unblinded: np.ndarray, c: int) -> np.ndarray:
    """``F(x) = BLAKE2b(x, k*H(x))`` truncated to ``c`` bytes: ``(n, c) uint8``."""
    out = np.empty((len(keys), c), dtype=np.uint8)
    if len(keys):
        raw = unblinded.tobytes()
        b2 = hashlib.blake2b
        out[:] = np.frombuffer(b"".join([
            b2(raw[32 * i: 32 * i + 32] + k, digest_size=c, person=b"atoll-psi-ub").digest()
            for i, k in enumerate(keys)]), dtype=np.uint8).reshape(-1, c)
    return out


def fingerprint(ids: Sequence[Any]) -> str:
    """A digest of a server's ids as given (rebuild the cache when it changes)."""
    h = hashlib.blake2b(digest_size=16, person=b"atoll-psi-ub-fp")
    h.update(len(ids).to_bytes(8, "little"))
    h.update("\x1f".join(map(str, ids)).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _check(x: Any, shape: tuple[int, ...], what: str, peer: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.shape != shape:
        raise CryptoError(f"{peer} sent {getattr(x, 'shape', type(x).__name__)} {what}, expected uint8 "
                          f"{shape} from its announced sizes; check that both sides run the same Atoll "
                          "version, or stop and check the peer")
    return x


# ---------------------------------------------------------------------------- caches
@dataclass
class ServerCache:
    """The server's offline work: key, salt, encoded set (shuffled) and each value's input position."""

    cache_id: str
    key: bytes
    salt: bytes
    encoded: np.ndarray        # (n, c) uint8, random order
    positions: np.ndarray      # (n,) int64: input position of each encoded value
    fingerprint: str
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.positions)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        key_path = folder / "key.bin"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key)
        np.save(folder / "encoded.npy", self.encoded)
        np.save(folder / "positions.npy", self.positions)
        (folder / "meta.json").write_text(json.dumps({
            "version": VERSION, "cache_id": self.cache_id, "salt": self.salt.hex(),
            "fingerprint": self.fingerprint, "seconds": self.seconds}))

    @classmethod
    def load(cls, folder: Path) -> "ServerCache | None":
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("version") != VERSION:
                return None
            return cls(meta["cache_id"], (folder / "key.bin").read_bytes(), bytes.fromhex(meta["salt"]),
                       np.load(folder / "encoded.npy", mmap_mode="r", allow_pickle=False),
                       np.load(folder / "positions.npy", mmap_mode="r", allow_pickle=False), meta["fingerprint"],
                       meta.get("seconds", 0.0))
        except (OSError, ValueError, KeyError):
            return None


def build_server_cache(ids: Sequence[Any], params: PsiParams | None = None,
                       cache_dir: str | Path | None = None) -> ServerCache:
    """The offline phase of the server (step 0): ``F(y)`` for every id, shuffled; saved under
    ``cache_dir/server`` when given (the key file readable by this user only)."""
    p = params or PsiParams(protocol="unbalanced")
    t0 = time.perf_counter()
    ids = list(ids.tolist() if hasattr(ids, "tolist") else ids)
    keys, positions = normalize_ids(ids, p.strip, p.unicode_form, p.duplicates)
    if len(keys) > MAX_SERVER_IDS:
        raise DataError(f"{len(keys)} ids: unbalanced PSI takes at most {MAX_SERVER_IDS} server ids")
    key, salt = psi_group.new_scalar(), os.urandom(32)
    c = encoded_bytes(len(keys))
    backend = psi_group.get_backend(p.backend)

    def work(span: tuple[int, int]) -> np.ndarray:
        chunk = keys[span[0]:span[1]]
        return prf_values(chunk, backend.mul(key, psi_group.hash_to_points(chunk, salt)), c)

    with _pool(p.workers) as pool:
        parts = list(pool.map(work, batch_spans(len(keys), p.batch_size)))
    encoded = np.concatenate(parts) if parts else np.zeros((0, c), np.uint8)
    order = secure_permutation(len(keys))
    cache = ServerCache(os.urandom(16).hex(), key, salt, np.ascontiguousarray(encoded[order]),
                        positions[order], fingerprint(ids), time.perf_counter() - t0)
    if cache_dir is not None:
        cache.save(Path(cache_dir) / "server")
    log.info("unbalanced PSI: server cache of %d ids built in %.1fs", cache.n, cache.seconds)
    return cache


class _ClientTable:
    """The server's encoded set as the client keeps it: sorted by its first 8 bytes."""

    def __init__(self, cache_id: str, prefix: np.ndarray, order: np.ndarray, encoded: np.ndarray):
        self.cache_id, self.prefix, self.order, self.encoded = cache_id, prefix, order, encoded

    @classmethod
    def from_encoded(cls, cache_id: str, encoded: np.ndarray) -> "_ClientTable":
        prefix = np.ascontiguousarray(encoded[:, :8]).view("<u8").ravel()
        order = np.argsort(prefix, kind="stable")
        return cls(cache_id, prefix[order], order, encoded)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("prefix", "order", "encoded"):
            np.save(folder / f"{name}.npy", getattr(self, name))
        (folder / "meta.json").write_text(json.dumps({"version": VERSION, "cache_id": self.cache_id}))

    @classmethod
    def load(cls, folder: Path) -> "_ClientTable | None":
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("version") != VERSION:
                return None
            arrs = [np.load(folder / f"{n}.npy", mmap_mode="r", allow_pickle=False)
                    for n in ("prefix", "order", "encoded")]
            return cls(meta["cache_id"], *arrs)
        except (OSError, ValueError, KeyError):
            return None

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Position in the server's encoded set of each value, or -1 (exact on all ``c`` bytes)."""
        out = np.full(len(values), -1, dtype=np.int64)
        if not len(values) or not len(self.prefix):
            return out
        key = np.ascontiguousarray(values[:, :8]).view("<u8").ravel()
        lo = np.searchsorted(self.prefix, key, side="left")
        hi = np.searchsorted(self.prefix, key, side="right")
        for i in np.flatnonzero(hi > lo).tolist():  # candidates are rare: the intersection
            for j in range(lo[i], hi[i]):
                pos = int(self.order[j])
                if np.array_equal(self.encoded[pos], values[i]):
                    out[i] = pos
                    break
        return out


# ---------------------------------------------------------------------------- roles
class _Role(PsiRole):
    protocol = "unbalanced"
    version = VERSION

    @property
    def _folder(self) -> Path | None:
        d = self.params.cache_dir
        return Path(d) if d else None


class UnbalancedPsiClient(_Role):
    """The small party (guest): queries the OPRF on its ids and looks them up in the cached set."""

    def run(self, ctx: Context, ids: Iterable[Any]) -> PsiResult:
        p = self.params
        t0 = time.perf_counter()
        hosts = ctx.parties_of("host")
        if len(hosts) != 1:
            raise ConfigError(f"unbalanced PSI runs between one guest and one host; this job has hosts {hosts}")
        server = hosts[0]
        ids = list(ids.tolist() if hasattr(ids, "tolist") else ids)
        keys, positions = normalize_ids(ids, p.strip, p.unicode_form, p.duplicates)
        n = len(keys)
        if n > MAX_CLIENT_IDS:
            raise DataError(f"{n} ids: an unbalanced PSI client queries at most {MAX_CLIENT_IDS}; use kkrt")
        folder = self._folder
        table = _ClientTable.load(folder / "client") if folder else None
        stats: dict[str, Any] = {"protocol": "unbalanced", "n": n}
        with ctx.scope("psi"):
            ctx.send(server, "hello", {**self._settings(), "n": n, "batch_size": p.batch_size,
                                       "cache_id": table.cache_id if table else None})
            reply = ctx.recv(server, "hello")
            if not isinstance(reply, dict) or not isinstance(reply.get("n"), int) \
                    or not 0 <= reply["n"] <= MAX_SERVER_IDS or not isinstance(reply.get("cache_id"), str) \
                    or not isinstance(reply.get("salt"), bytes) or len(reply["salt"]) != 32 \
                    or reply.get("bytes") != encoded_bytes(reply["n"]):
                raise CryptoError(f"{server} answered the unbalanced PSI hello with {reply!r}")
            n_s, c, salt = reply["n"], reply["bytes"], reply["salt"]
            stats["n_server"] = n_s
            t1 = time.perf_counter()
            if table is None or table.cache_id != reply["cache_id"]:
                parts = []
                for k, (s, e) in enumerate(batch_spans(n_s, SETUP_BATCH)):
                    with ctx.scope("setup", k):
                        parts.append(_check(ctx.recv(server, "encoded"), (e - s, c), "encoded values", server))
                encoded = np.concatenate(parts) if parts else np.zeros((0, c), np.uint8)
                table = _ClientTable.from_encoded(reply["cache_id"], encoded)
                if folder:
                    table.save(folder / "client")
                stats["offline_download"] = True
            t2 = time.perf_counter()
            order = secure_permutation(n)
            shuffled = [keys[i] for i in order]
            a, s_curve, s_twist = blinding_scalar()
            backend = psi_group.get_backend(p.backend)
            found = np.full(n, -1, dtype=np.int64)
            for k, (s, e) in enumerate(batch_spans(n, p.batch_size)):
                pts = psi_group.hash_to_points(shuffled[s:e], salt)
                with ctx.scope("batch", k):
                    ctx.send(server, "a", backend.mul(a, pts))
                    blinded = _check(ctx.recv(server, "b"), (e - s, psi_group.POINT_BYTES), "blinded values",
                                     server)
                curve = is_on_curve(pts)
                z = np.empty_like(blinded)
                if curve.any():
                    z[curve] = backend.mul(s_curve, blinded[curve])
                if (~curve).any():
                    z[~curve] = backend.mul(s_twist, blinded[~curve])
                found[s:e] = table.lookup(prf_values(shuffled[s:e], z, c))
            sel = np.flatnonzero(found >= 0)
            sel = np.array(sorted(sel.tolist(), key=shuffled.__getitem__), dtype=np.int64)
            if p.result_to == "both":
                ctx.send(server, "result", found[sel])
        pos = positions[order[sel]] if len(sel) else np.zeros(0, dtype=np.int64)
        t3 = time.perf_counter()
        stats.update(size=len(pos), backend=backend.name,
                     seconds={"hello": t1 - t0, "offline": t2 - t1, "online": t3 - t2, "total": t3 - t0})
        log.info("unbalanced PSI client: %d ids, server %d, intersection %d, online %.2fs", n, n_s, len(pos),
                 t3 - t2)
        return PsiResult([ids[i] for i in pos.tolist()], pos, len(pos), stats)


class UnbalancedPsiServer(_Role):
    """The big party (host): offline, encodes its set once; online, blinds the client's values."""

    def run(self, ctx: Context, ids: Iterable[Any]) -> PsiResult:
        p = self.params
        t0 = time.perf_counter()
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        ids = ids if isinstance(ids, list) else list(ids)
        folder = self._folder
        cache = ServerCache.load(folder / "server") if folder else None
        fp = fingerprint(ids)
        offline = 0.0
        if cache is None or cache.fingerprint != fp:
            cache = build_server_cache(ids, p, folder)
            offline = cache.seconds
        t1 = time.perf_counter()
        backend = psi_group.get_backend(p.backend)
        with ctx.scope("psi"):
            hello = ctx.recv("guest", "hello")
            self._check_hello(hello)
            n_c, bs = hello["n"], hello["batch_size"]
            c = encoded_bytes(cache.n)
            ctx.send("guest", "hello", {"n": cache.n, "cache_id": cache.cache_id, "salt": cache.salt, "bytes": c})
            if hello.get("cache_id") != cache.cache_id:
                for k, (s, e) in enumerate(batch_spans(cache.n, SETUP_BATCH)):
                    with ctx.scope("setup", k):
                        ctx.send("guest", "encoded", np.ascontiguousarray(cache.encoded[s:e]))
            t2 = time.perf_counter()
            for k, (s, e) in enumerate(batch_spans(n_c, bs)):
                with ctx.scope("batch", k):
                    a = _check(ctx.recv("guest", "a"), (e - s, psi_group.POINT_BYTES), "blinded values", "guest")
                    ctx.send("guest", "b", backend.mul(cache.key, a))
            result = None
            if p.result_to == "both":
                result = ctx.recv("guest", "result")
                if not isinstance(result, np.ndarray) or result.ndim != 1 or result.dtype.kind not in "iu" \
                        or len(result) > n_c or (len(result) and (result.min() < 0 or result.max() >= cache.n)) \
                        or len(np.unique(result)) != len(result):
                    raise CryptoError("the guest sent an invalid unbalanced PSI result (positions out of range "
                                      "or repeated); check that both sides run the same Atoll version")
        t3 = time.perf_counter()
        stats = {"protocol": "unbalanced", "backend": backend.name, "n": cache.n, "n_client": n_c,
                 "seconds": {"offline": offline, "check": t1 - t0 - offline, "setup": t2 - t1,
                             "online": t3 - t2, "total": t3 - t0}}
        if result is None:
            return PsiResult(None, None, None, stats)
        pos = np.asarray(cache.positions[result.astype(np.int64)])
        stats["size"] = len(pos)
        return PsiResult([ids[i] for i in pos.tolist()], pos, len(pos), stats)

    def _check_hello(self, hello: Any) -> None:
        mine = self._settings()
        if not isinstance(hello, dict) or {k: hello.get(k) for k in mine} != mine:
            theirs = {k: hello.get(k) for k in mine} if isinstance(hello, dict) else type(hello).__name__
            raise ConfigError(f"the guest asks for PSI {theirs}; this host runs {mine}: use the same "
                              "protocol, settings and Atoll version on both sides")
        n, bs, cid = hello.get("n"), hello.get("batch_size"), hello.get("cache_id")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_CLIENT_IDS:
            raise CryptoError(f"the guest announced {n!r} ids; an unbalanced PSI client may query 0 to "
                              f"{MAX_CLIENT_IDS} per session")
        if not isinstance(bs, int) or not 1 <= bs <= 1 << 22 or not (cid is None or isinstance(cid, str)):
            raise CryptoError("malformed unbalanced PSI hello from the guest")


register_protocol("unbalanced", UnbalancedPsiClient, UnbalancedPsiServer)
