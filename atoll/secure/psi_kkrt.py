"""KKRT-PSI: private set intersection from OT extension (batched OPRF, cuckoo hashing).

The protocol of Kolesnikov, Kumaresan, Rosulek and Trieu, "Efficient batched
oblivious PRF with applications to private set intersection" (CCS 2016,
section 5), semi-honest, on the OT extension of :mod:`atoll.secure.mpc.ot`
(:class:`OPRFSender` / :class:`OPRFReceiver`: IKNP-style extension of 512 CO15
base OTs, pseudo-random code of four AES blocks, BLAKE2b row hash). After the
base OTs it runs on AES, hashing and numpy bit operations only, so its speed
does not depend on the processor's curve arithmetic. The guest G is the OPRF
receiver towards every host H_i, the sender and key holder:

1. Hello: G sends the protocol, version, who learns the result and the id
   normalisation; each H_i checks they equal its own (it refuses otherwise) and
   answers with its set size. Every party normalises its ids as ECDH-PSI does
   (:func:`atoll.secure.psi.normalize_ids`) and hashes each to 128 bits
   (:func:`id_hashes`, BLAKE2b; 2^-80 collision odds at 10^10 ids).
2. Plan: G sends the number of buckets ``P`` (a power of two; bucket = the top
   bits of the id hash, so that each bucket holds at most about 2^18 ids of
   the larger party and memory stays bounded), a fresh 16-byte cuckoo seed and
   the length ``c`` of compared values (40 statistical bits plus
   ``log2(3 n_G n_H)``, :func:`value_bytes`). H_i checks them against the sizes.
   Each party pads every bucket to a capacity that depends only on its own set
   size and ``P`` (:func:`bucket_cap`), so bucket sizes are never revealed.
3. For each bucket ``b``: G places its ids in ``m = 1.27 cap + 16`` cuckoo bins
   with three hash functions keyed by the seed (:func:`cuckoo_insert`; an item
   in bin ``j`` by its function ``i`` has OPRF input ``x ^ i``, empty bins a
   random input) and sends each H_i the attempt number of its cuckoo seed.
4. G and H_i run ``m`` OPRF instances: G gets ``F_j(input_j)`` for every bin;
   H_i can evaluate ``F_j`` on anything. H_i computes ``F_{h_i(y)}(y ^ i)`` for
   each of its ids ``y`` and ``i = 0, 1, 2``, pads to ``3 cap`` values with
   random ones, shuffles them (OS entropy) and sends them, truncated to ``c``
   bytes.
5. G matches: its id ``x`` in bin ``j`` is in ``Y_i`` iff ``F_j(x ^ i)`` occurs
   in H_i's values. The result is the ids found at every host.
6. Order and result: with :func:`psi`/:func:`~atoll.secure.psi.run_psi` on ids in
   memory, the result is sorted by normalised id, exactly as ECDH-PSI (the two
   protocols give the same list); :func:`stream_psi` orders by bucket and id
   hash (bounded memory; also a function of the intersection alone). With
   ``result_to="both"`` G sends each H_i the positions, in H_i's shuffled lists,
   of the result in that order; H_i maps them back to its ids.

What each party sees
--------------------
* Guest: each host's set size, and which of its own ids each host holds (the
  pairwise intersections ``X & Y_i``, a superset of the result: the same
  leakage as the guest-centred ECDH-PSI). A host's values for ids outside
  ``X`` are outputs of a PRF whose key the guest never has (KKRT16 theorem 2):
  pseudorandom.
* Host: the guest's set size, the base-OT messages and the OT-extension matrix
  ``u`` (masked by PRG streams of seeds it never learnt: independent of the
  guest's ids), the cuckoo attempt numbers (almost always 0; a retry says that
  one bucket's first placement failed, nothing about which ids), and, with
  ``result_to="both"``, the final intersection. Nothing about guest ids
  outside it, nothing about the other hosts.
* Everyone: messages are OT matrices, PRF values in a shuffled order and
  positions in shuffled lists: never an id, a hash of one, or the input order.
  Bucket sizes are padded. Security is semi-honest (honest-but-curious), as for
  ECDH-PSI.

Which protocol to pick
----------------------
* ``kkrt``: large balanced sets between well-connected parties. Symmetric-key
  work only: fast on any x86 (AES-NI); about 91 bytes sent per guest id (the
  OT matrix of ``1.27`` bins per id, padding included) and 31 per host id
  (``3 c``), measured at 100k and 1M ids (``benchmarks/psi.py``).
* ``ecdh``: fewer bytes (about 64 per id) on slow links, or where
  X25519 is fast (Intel IPP with AVX-512); the simplest to audit.
* ``unbalanced`` (:mod:`atoll.secure.psi_unbalanced`): a small set against a
  huge one that changes rarely; the big side's work is done once, offline.

Measured with ``benchmarks/psi.py`` (both parties as processes over gRPC +
mTLS, 50% overlap) on this project's 2-core AMD EPYC (KKRT needs AES-NI
and nothing else): 100k x 100k in 1.9 s (load 3.5), 1M x 1M in 8.1 s
(load 4.1; peak RSS 479 MB guest, 741 MB host, whole processes), 10M x 10M
streamed from CSV (:mod:`atoll.secure.psi_stream`) in 159 s with 714 MB peak
RSS per party (load 5-12). The cost is the BLAKE2b row hash of the OPRF (one
per bin at the guest, three per id at the host), one Python call each.

Hostile peers: announced sizes are bounded (:data:`MAX_IDS`), the plan must
follow from the sizes, every array must have exactly the shape the sizes
imply (a peer that lies about its size is told so), result positions must
point at real items, once each.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from atoll.crypto import aes
from atoll.errors import ConfigError, CryptoError, DataError
from atoll.federation.context import Context
from atoll.secure.mpc.ot import OPRFReceiver, OPRFSender
from atoll.secure.psi import (PsiResult, PsiRole, _progress, match_rows, normalize_ids, register_protocol,
                              secure_permutation)

log = logging.getLogger(__name__)

__all__ = ["KkrtPsiGuest", "KkrtPsiHost", "MAX_IDS", "bucket_cap", "bucket_of", "cuckoo_bins",
           "cuckoo_candidates", "cuckoo_insert", "id_hashes", "n_buckets", "value_bytes"]

VERSION = 1
#: the most ids a party may announce (256 buckets of 2^19)
MAX_IDS = 1 << 27
#: ids of the larger party per bucket (one OPRF batch of the OT extension is 2^18)
BUCKET_TARGET = 1 << 18
#: buckets are ranges of the top byte of the id hash
MAX_BUCKETS = 256
CUCKOO_FACTOR = 1.27
HASHES = 3
STAT_BITS = 40
MAX_ATTEMPTS = 8


# ---------------------------------------------------------------------------- pure helpers
def id_hashes(keys: Sequence[bytes]) -> np.ndarray:
    """128-bit BLAKE2b of each normalised id: ``(n, 2) uint64`` (the same at every party)."""
    out = np.empty((len(keys), 2), dtype=np.uint64)
    if len(keys):
        b2 = hashlib.blake2b
        out[:] = np.frombuffer(b"".join([b2(k, digest_size=16).digest() for k in keys]),
                               dtype=np.uint64).reshape(-1, 2)
    return out


def n_buckets(n_max: int) -> int:
    """Buckets for sets of at most ``n_max`` ids: the least power of two giving <= 2^18 per bucket."""
    p = 1
    while p < MAX_BUCKETS and n_max > p * BUCKET_TARGET:
        p *= 2
    return p


def top_byte(h: np.ndarray) -> np.ndarray:
    """The fine partition (0..255) of each id hash: its top byte."""
    return (h[:, 1] >> np.uint64(56)).astype(np.int64)


def bucket_of(h: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket of each id hash among ``buckets`` (a power of two <= 256): the top bits."""
    return top_byte(h) >> (8 - int(math.log2(buckets)))


def bucket_cap(n: int, buckets: int) -> int:
    """Padded size of every bucket of a set of ``n`` ids: mean + 8 standard deviations + 64.

    A function of ``n`` and ``buckets`` only, so the padded sizes reveal nothing; a bucket
    of a real set overflows it with probability below 2^-40.
    """
    mu = n / buckets
    return int(math.ceil(mu + 8 * math.sqrt(mu) + 64))


def cuckoo_bins(cap: int) -> int:
    return int(math.ceil(CUCKOO_FACTOR * cap)) + 16


def value_bytes(n_guest: int, n_host: int) -> int:
    """Bytes of each compared PRF value: ``40 + log2(3 n_G n_H)`` bits, 8 to 16 bytes."""
    bits = STAT_BITS + math.log2(HASHES * max(n_guest, 1) * max(n_host, 1))
    return max(8, min(16, int(math.ceil(bits / 8))))


def _seed_key(seed: bytes, bucket: int, attempt: int) -> bytes:
    return hashlib.blake2b(seed + bucket.to_bytes(4, "little") + attempt.to_bytes(4, "little"),
                           digest_size=16, person=b"atoll-kkrt-cuck").digest()


def cuckoo_candidates(h: np.ndarray, key: bytes, bins: int) -> np.ndarray:
    """The three candidate bins of each id hash: ``(n, 3) int64`` (AES under ``key``, multiply-shift)."""
    lanes = aes.permute(h, key).view(np.uint32).reshape(-1, 4)[:, :HASHES].astype(np.uint64)
    return ((lanes * np.uint64(bins)) >> np.uint64(32)).astype(np.int64)


def cuckoo_insert(cand: np.ndarray, bins: int, max_rounds: int = 2000) -> tuple[np.ndarray, np.ndarray] | None:
    """Place each item in one of its candidate bins, one item per bin (vectorised random walk).

    Returns ``(table, choice)``: ``table[j]`` = the item in bin ``j`` or -1, ``choice[i]``
    = which candidate item ``i`` took; ``None`` if it did not converge (pick another seed).
    Every round, all unplaced items claim their current candidate at once; one claimant
    per bin wins, the losers and the evicted occupants move on to their next candidate.
    """
    m = len(cand)
    table = np.full(bins, -1, dtype=np.int64)
    choice = np.zeros(m, dtype=np.int64)
    pending = np.arange(m, dtype=np.int64)
    for _ in range(max_rounds):
        if not len(pending):
            return table, choice
        b = cand[pending, choice[pending]]
        old = table[b]
        table[b] = pending
        won = table[b] == pending
        nxt = np.concatenate([pending[~won], old[won & (old >= 0)]])
        choice[nxt] = (choice[nxt] + 1) % HASHES
        pending = nxt
    return None


def _tweaked(h: np.ndarray, i: int | np.ndarray) -> np.ndarray:
    """OPRF input of an id placed by hash function ``i``: ``h ^ i`` (low word)."""
    x = np.array(h, dtype=np.uint64, copy=True)
    x[:, 0] ^= np.asarray(i, dtype=np.uint64)
    return x


def _as_bytes(vals: np.ndarray, c: int) -> np.ndarray:
    return np.ascontiguousarray(vals.view(np.uint8).reshape(len(vals), 8 * vals.shape[1])[:, :c])


def _bad(msg: str) -> CryptoError:
    return CryptoError(msg + "; check that every party runs the same Atoll version, or stop and "
                       "check the peer")


# ---------------------------------------------------------------------------- id sources
class Buckets:
    """A party's normalised, de-duplicated id hashes, served one bucket at a time.

    ``get(b, P)`` returns ``(h, rows)`` of bucket ``b`` of ``P``: the id hashes sorted
    ascending and each one's row (what the result maps back to). This in-memory source
    holds every hash; :class:`atoll.secure.psi_stream.SpillBuckets` keeps them on disk.
    """

    def __init__(self, h: np.ndarray, rows: np.ndarray):
        order = np.lexsort((h[:, 0], h[:, 1]))  # by top word then low word: bucket-major
        self._h, self._rows = h[order], rows[order]
        self._top = top_byte(self._h)
        self.n = len(h)

    def get(self, b: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
        width = MAX_BUCKETS // buckets
        lo, hi = np.searchsorted(self._top, [b * width, (b + 1) * width])
        return self._h[lo:hi], self._rows[lo:hi]


@dataclass
class _Plan:
    buckets: int
    seed: bytes
    c: dict[str, int]          # compared bytes, per host
    cap_guest: int
    bins: int


def _plan_for(n_guest: int, n_hosts: dict[str, int], seed: bytes) -> _Plan:
    p = n_buckets(max([n_guest, *n_hosts.values()]))
    cap = bucket_cap(n_guest, p)
    return _Plan(p, seed, {h: value_bytes(n_guest, n) for h, n in n_hosts.items()}, cap, cuckoo_bins(cap))


def _check_size(x: Any, who: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= MAX_IDS:
        raise _bad(f"{who} announced a set size of {x!r}; KKRT-PSI takes 0 to {MAX_IDS} ids per party")
    return x


# ---------------------------------------------------------------------------- roles
class _KkrtRole(PsiRole):
    protocol = "kkrt"
    version = VERSION
    label = "psi-kkrt"

    def _memory_source(self, ids: Iterable[Any]) -> tuple[list[Any], list[bytes], np.ndarray, Buckets]:
        p = self.params
        ids = list(ids.tolist() if hasattr(ids, "tolist") else ids)
        keys, positions = normalize_ids(ids, p.strip, p.unicode_form, p.duplicates)
        return ids, keys, positions, Buckets(id_hashes(keys), np.arange(len(keys), dtype=np.int64))


class KkrtPsiGuest(_KkrtRole):
    """Guest side of KKRT-PSI: the OPRF receiver; places its ids in cuckoo bins and matches."""

    def run(self, ctx: Context, ids: Iterable[Any]) -> PsiResult:
        t0 = time.perf_counter()
        ids, keys, positions, source = self._memory_source(ids)
        found: list[tuple[int, np.ndarray, dict[str, np.ndarray]]] = []
        res = self.run_buckets(ctx, source, lambda b, rows, where: found.append((b, rows, where)),
                               ordered=False)
        rows = np.concatenate([r for _, r, _ in found]) if found else np.zeros(0, np.int64)
        found_keys = [keys[r] for r in rows.tolist()]
        order = sorted(range(len(rows)), key=found_keys.__getitem__)  # by normalised id, as ECDH
        rows = rows[order] if len(rows) else rows
        if self.params.result_to == "both":
            hosts = res.stats["hosts"]
            bucket_col = np.concatenate([np.full(len(r), b, np.int64) for b, r, _ in found]) \
                if found else np.zeros(0, np.int64)
            with ctx.scope("psi"):
                for h in hosts:
                    pos = np.concatenate([w[h] for _, _, w in found]) if found else np.zeros(0, np.int64)
                    ctx.send(h, "result", np.stack([bucket_col[order], pos[order]], axis=1)
                             if len(rows) else np.zeros((0, 2), np.int64))
        pos = positions[rows]
        res.stats["seconds"]["total"] = time.perf_counter() - t0
        return PsiResult([ids[i] for i in pos.tolist()], pos, len(pos), res.stats)

    def run_buckets(self, ctx: Context, source: Any, emit: Callable[[int, np.ndarray, dict], None],
                    ordered: bool) -> PsiResult:
        """Steps 1-5 over ``source`` (``n``, ``get(b, P)``); ``emit(b, rows, where)`` per bucket with
        this party's result rows and, per host, their positions in that host's lists. With
        ``ordered`` (streaming) the result positions go to the hosts bucket by bucket, in
        the order given; otherwise the caller sends them (:meth:`run`)."""
        p = self.params
        t0 = time.perf_counter()
        hosts = ctx.parties_of("host")
        if not hosts:
            raise ConfigError("PSI needs at least one party with role 'host' in the job")
        n = source.n
        stats: dict[str, Any] = {"protocol": "kkrt", "backend": "aes+ot", "n": n, "hosts": hosts}
        with ctx.scope("psi"):
            ctx.send(hosts, "hello", {**self._settings(), "n": n})
            n_host = {h: _check_size(r.get("n") if isinstance(r, dict) else None, h)
                      for h, r in ctx.gather(hosts, "hello").items()}
            plan = _plan_for(n, n_host, os.urandom(16))
            stats.update(n_hosts=dict(n_host), buckets=plan.buckets, value_bytes=dict(plan.c))
            for h in hosts:
                ctx.send(h, "plan", {"buckets": plan.buckets, "seed": plan.seed, "bytes": plan.c[h]})
            receivers = {h: OPRFReceiver(ctx, h, self.label) for h in hosts}
            for r in receivers.values():
                r._setup_begin()  # send every host its base-OT key first: hosts work in parallel
            for r in receivers.values():
                r.ensure_setup()
            caps = {h: bucket_cap(n_host[h], plan.buckets) for h in hosts}
            t1 = time.perf_counter()
            size = 0
            with _progress(p.progress, ctx.party) as prog:
                task = prog.add_task("KKRT buckets", total=plan.buckets)
                pending = None
                for b in range(plan.buckets):
                    cur = self._query(ctx, plan, b, source, receivers)
                    if pending is not None:
                        size += self._finish(ctx, plan, caps, pending, emit, ordered)
                        prog.advance(task)
                    pending = cur
                if pending is not None:
                    size += self._finish(ctx, plan, caps, pending, emit, ordered)
                    prog.advance(task)
        t2 = time.perf_counter()
        stats.update(size=size, seconds={"prepare": t1 - t0, "oprf": t2 - t1, "total": t2 - t0})
        log.info("KKRT-PSI guest: %d ids, hosts %s, %d buckets, intersection %d, %.2fs", n, n_host,
                 plan.buckets, size, t2 - t0)
        return PsiResult(None, None, size, stats)

    def _query(self, ctx: Context, plan: _Plan, b: int, source: Any,
               receivers: dict[str, OPRFReceiver]) -> tuple:
        h, rows = source.get(b, plan.buckets)
        if len(h) > plan.cap_guest:
            raise DataError(f"bucket {b} holds {len(h)} ids, more than its padded size "
                            f"{plan.cap_guest} (odds below 2^-40 for distinct ids); report this")
        for attempt in range(MAX_ATTEMPTS):
            cand = cuckoo_candidates(h, _seed_key(plan.seed, b, attempt), plan.bins)
            placed = cuckoo_insert(cand, plan.bins)
            if placed is not None:
                break
        else:
            raise CryptoError(f"cuckoo hashing failed {MAX_ATTEMPTS} times for bucket {b}; report this")
        table, choice = placed
        inputs = aes.random_blocks(plan.bins)
        full = table >= 0
        inputs[full] = _tweaked(h[table[full]], choice[table[full]])
        bin_of = np.empty(len(h), dtype=np.int64)
        bin_of[table[full]] = np.flatnonzero(full)
        vals = {}
        with ctx.scope("bucket", b):
            for host, r in receivers.items():
                ctx.send(host, "attempt", attempt)
                c = plan.c[host]
                vals[host] = _as_bytes(r.query(inputs, (c + 7) // 8), c)[bin_of]
        return b, rows, vals

    def _finish(self, ctx: Context, plan: _Plan, caps: dict[str, int], pending: tuple,
                emit: Callable, ordered: bool) -> int:
        b, rows, vals = pending
        where: dict[str, np.ndarray] = {}
        hit = np.ones(len(rows), dtype=bool)
        with ctx.scope("bucket", b):
            for host, mine in vals.items():
                theirs = ctx.recv(host, "values")
                want = (HASHES * caps[host], plan.c[host])
                if not isinstance(theirs, np.ndarray) or theirs.dtype != np.uint8 or theirs.shape != want:
                    raise _bad(f"{host} sent {getattr(theirs, 'shape', type(theirs).__name__)} values for "
                               f"bucket {b}; its announced set size implies uint8 {want}")
                where[host] = match_rows(mine, theirs)
                hit &= where[host] >= 0
            sel = np.flatnonzero(hit)
            where = {host: w[sel] for host, w in where.items()}
            if ordered and self.params.result_to == "both":
                for host, w in where.items():
                    ctx.send(host, "result", w)
        emit(b, rows[sel], where)
        return len(sel)


class KkrtPsiHost(_KkrtRole):
    """Host side of KKRT-PSI: the OPRF sender; evaluates the PRF on its own ids and shuffles."""

    def run(self, ctx: Context, ids: Iterable[Any]) -> PsiResult:
        t0 = time.perf_counter()
        ids, _, positions, source = self._memory_source(ids)
        res, maps = self.run_buckets(ctx, source, None)
        if self.params.result_to != "both":
            res.stats["seconds"]["total"] = time.perf_counter() - t0
            return res
        with ctx.scope("psi"):
            got = ctx.recv("guest", "result")
        if not isinstance(got, np.ndarray) or got.dtype.kind not in "iu" or got.ndim != 2 \
                or got.shape[1] != 2 or (len(got) and (got[:, 0].min() < 0 or got[:, 0].max() >= len(maps))):
            raise _bad("the guest sent a malformed KKRT-PSI result")
        rows = np.empty(len(got), dtype=np.int64)
        for b in np.unique(got[:, 0]).tolist():
            at = np.flatnonzero(got[:, 0] == b)
            rows[at] = maps[b](got[at, 1])
        if len(np.unique(rows)) != len(rows):
            raise _bad("the guest sent a KKRT-PSI result that repeats an id")
        pos = positions[rows]
        res.stats.update(size=len(pos))
        res.stats["seconds"]["total"] = time.perf_counter() - t0
        return PsiResult([ids[i] for i in pos.tolist()], pos, len(pos), res.stats)

    def _check_hello(self, hello: Any) -> None:
        mine = self._settings()
        if not isinstance(hello, dict) or {k: hello.get(k) for k in ("protocol", "version")} != \
                {k: mine[k] for k in ("protocol", "version")}:
            got = {k: hello.get(k) for k in ("protocol", "version")} if isinstance(hello, dict) else "?"
            raise ConfigError(f"the guest speaks PSI {got}; this host runs kkrt v{VERSION}: use the "
                              "same protocol and Atoll version")
        theirs = {k: hello.get(k) for k in ("result_to", "strip", "unicode_form")}
        own = {k: mine[k] for k in theirs}
        if theirs != own:
            raise ConfigError(f"PSI settings differ: guest {theirs}, this host {own}; ids would be "
                              "normalised differently or the result shared against a party's will. "
                              "Use the same settings on every side")

    def run_buckets(self, ctx: Context, source: Any, on_result: Callable | None
                    ) -> tuple[PsiResult, list[Callable[[np.ndarray], np.ndarray]]]:
        """Steps 1-4 over ``source``; returns the statistics and, per bucket, the map from
        positions in the list sent to this party's rows. With ``on_result`` (streaming,
        ``result_to="both"``) each bucket's result is received right after its values and
        ``on_result(b, rows)`` is called with this party's rows in the agreed order."""
        t0 = time.perf_counter()
        n = source.n
        with ctx.scope("psi"):
            hello = ctx.recv("guest", "hello")
            self._check_hello(hello)
            n_guest = _check_size(hello.get("n"), "the guest")
            ctx.send("guest", "hello", {"n": n})
            plan = ctx.recv("guest", "plan")
            p_min = n_buckets(max(n_guest, n))
            if not isinstance(plan, dict) or plan.get("buckets") not in [2 ** i for i in range(9)] \
                    or plan["buckets"] < p_min or not isinstance(plan.get("seed"), bytes) \
                    or len(plan["seed"]) != 16 or plan.get("bytes") != value_bytes(n_guest, n):
                raise _bad(f"the guest's KKRT-PSI plan {plan!r} does not follow from the set sizes "
                           f"({n_guest} and {n}: at least {p_min} buckets, "
                           f"{value_bytes(n_guest, n)}-byte values)")
            buckets, seed, c = plan["buckets"], plan["seed"], plan["bytes"]
            cap, bins = bucket_cap(n, buckets), cuckoo_bins(bucket_cap(n_guest, buckets))
            sender = OPRFSender(ctx, "guest", self.label)
            sender.ensure_setup()
            t1 = time.perf_counter()
            maps: list[Callable[[np.ndarray], np.ndarray]] = []
            with _progress(self.params.progress, ctx.party) as prog:
                task = prog.add_task("KKRT buckets", total=buckets)
                for b in range(buckets):
                    with ctx.scope("bucket", b):
                        to_rows = self._bucket(ctx, sender, source, b, buckets, seed, c, cap, bins)
                        if on_result is not None:  # streaming: the map is used once, then dropped
                            on_result(b, to_rows(self._recv_positions(ctx)))
                        else:
                            maps.append(to_rows)
                    prog.advance(task)
        t2 = time.perf_counter()
        stats = {"protocol": "kkrt", "backend": "aes+ot", "n": n, "n_guest": n_guest, "buckets": buckets,
                 "seconds": {"prepare": t1 - t0, "oprf": t2 - t1, "total": t2 - t0}}
        log.info("KKRT-PSI host: %d ids, guest %d, %d buckets, %.2fs", n, n_guest, buckets, t2 - t0)
        return PsiResult(None, None, None, stats), maps

    @staticmethod
    def _recv_positions(ctx: Context) -> np.ndarray:
        got = ctx.recv("guest", "result")
        if not isinstance(got, np.ndarray) or got.dtype.kind not in "iu" or got.ndim != 1:
            raise _bad("the guest sent a malformed KKRT-PSI result")
        return got

    @staticmethod
    def _bucket(ctx: Context, sender: OPRFSender, source: Any, b: int, buckets: int, seed: bytes,
                c: int, cap: int, bins: int) -> Callable[[np.ndarray], np.ndarray]:
        h, rows = source.get(b, buckets)
        if len(h) > cap:
            raise DataError(f"bucket {b} holds {len(h)} ids, more than its padded size {cap} "
                            "(odds below 2^-40 for distinct ids); report this")
        attempt = ctx.recv("guest", "attempt")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or not 0 <= attempt < MAX_ATTEMPTS:
            raise _bad(f"the guest sent cuckoo attempt {attempt!r} for bucket {b}")
        batch = sender.expand(bins)
        m = len(h)
        cand = cuckoo_candidates(h, _seed_key(seed, b, attempt), bins)
        x = np.concatenate([_tweaked(h, i) for i in range(HASHES)])
        vals = _as_bytes(batch.eval(cand.T.ravel(), x, (c + 7) // 8), c)
        out = np.frombuffer(os.urandom(HASHES * cap * c), dtype=np.uint8).reshape(HASHES * cap, c).copy()
        out[: HASHES * m] = vals
        perm = secure_permutation(HASHES * cap)
        ctx.send("guest", "values", out[perm])
        item = np.where(perm < HASHES * m, perm % max(m, 1), -1).astype(np.int32)

        def to_rows(pos: np.ndarray) -> np.ndarray:
            if len(pos) and (pos.min() < 0 or pos.max() >= len(item)):
                raise _bad(f"the guest sent result positions outside bucket {b}'s values")
            it = item[pos.astype(np.int64)]
            if (it < 0).any():
                raise _bad("the guest sent a result position that is padding, not an id")
            return rows[it]

        return to_rows


register_protocol("kkrt", KkrtPsiGuest, KkrtPsiHost)
