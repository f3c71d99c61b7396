"""Private set intersection (PSI): encrypted sample alignment for vertical learning.

``psi(ctx, ids)`` finds the ids that the guest and every host hold, without
revealing any id outside that overlap, and returns this party's own ids of the
intersection in one order agreed by all parties (row ``i`` is the same user
everywhere). ``align_frame(ctx, frame)`` does the same for a DataFrame indexed
by id. Protocols are pluggable (``PROTOCOLS``); the one built here is ECDH; KKRT-PSI
(OT extension, :mod:`atoll.secure.psi_kkrt`) and unbalanced PSI (:mod:`atoll.secure.psi_unbalanced`)
register themselves beside it (``protocol="kkrt"`` or ``"unbalanced"``).

ECDH-PSI (Meadows 1986, "A more efficient cryptographic matchmaking protocol";
Huberman, Franklin & Hogg 1999; the semi-honest DH-PSI as reviewed by Pinkas,
Schneider & Zohner, USENIX Security 2014), guest G with secret scalar ``a``, each host H_i with
secret scalar ``b_i``; ``H`` hashes an id to a Curve25519 point (BLAKE2b keyed
with a fresh session salt, see :mod:`atoll.secure.psi_group`) and ``k * P`` is
X25519:

1. Hello: G sends the session parameters (protocol, who learns the result, id
   normalisation, a fresh 32-byte salt, batch size, its set size); each H_i
   checks they equal its own (it refuses otherwise) and answers with its set
   size. Each party normalises its ids (below) and shuffles them with a
   permutation drawn from OS entropy.
2. G sends ``A = [a * H(x)]`` for its shuffled ids to every host; H_i sends
   ``B_i = [b_i * H(y)]`` for its shuffled ids to G. Both stream in batches
   and blind on every core at once.
3. H_i returns ``AB_i = [b_i * A_j]`` to G in the order received, truncated to
   ``compare_bytes`` (16) bytes; G computes ``BA_i = [a * B_ij]`` likewise.
4. G matches: id ``x`` is in ``Y_i`` iff ``AB_i[x]`` occurs in ``BA_i`` (at a
   position ``j`` of H_i's shuffled list). The result is the ids found at every
   host, sorted by their normalised form: that order is a function of the
   intersection alone, so it tells nobody anything more.
5. If ``result_to="both"``, G sends each H_i the positions ``j`` (in H_i's own
   shuffled order) of the result, in the agreed order; H_i maps them back to
   its ids. If ``result_to="guest"``, nothing is sent.

Cardinality only (PSI-CA, ``cardinality_only=True``, one host; De Cristofaro,
Gasti and Tsudik, CANS 2012): in step 3 the host shuffles the whole list
``AB`` (OS entropy) before returning it, so the guest can count the matches
of step 4 but not tell which of its ids they belong to; with
``result_to="both"`` it sends the host that count. Both learn the size only.

What each party sees
--------------------
* Guest: each host's set size, and for each host separately which of its own
  ids that host holds (with several hosts, the pairwise intersections
  ``X & Y_i``, a superset of the final result: the standard leakage of the
  guest-centred multi-party design, as in FATE). Nothing about host ids
  outside ``X``: ``b_i * H(y)`` is pseudorandom under DDH.
* Host, ``result_to="both"``: the guest's set size and the final intersection
  (its own ids that every party holds). Not the pairwise intersection, nothing
  about guest ids outside it, nothing about the other hosts beyond the result.
* Host, ``result_to="guest"``: the guest's set size, nothing else.
* PSI-CA: the guest sees the host's set size and the intersection size (the
  returned ``AB`` is in an order it cannot link to its ids); the host sees
  the guest's set size and, with ``result_to="both"``, the intersection size.
* Hosts that collude see that the guest sent them the same list ``A`` (one
  computation serves every host); they learn nothing more from it.
* Everyone: messages are blinded points in a shuffled order, never an id, a
  hash of one, or the input order. Security is semi-honest (honest-but-curious).

Ids and bad input
-----------------
Each id is normalised to a string before hashing, the same way on every side
(the guest's rules travel in the hello and a host with other rules refuses):
strings are Unicode-NFC-normalised and stripped of leading/trailing whitespace
(``strip=False`` keeps it significant; inner whitespace always counts);
integers (Python or numpy) become their decimal form, so ``7`` and ``"7"``
match (``"007"`` does not: strings are never parsed); floats are accepted only
when integral and below 2**53 (``7.0`` is ``7``, from pandas columns with
gaps); booleans, ``None``/NaN, bytes, empty strings and other types are
refused with :class:`DataError`. Duplicates (after normalisation) are refused
by default (``duplicates="drop"`` keeps the first occurrence). Empty sets and
an empty intersection give an empty result; :func:`align_frame` (a pipeline
step) refuses an empty intersection instead.

Scale
-----
Work goes in batches of ``batch_size`` ids over a pool of ``workers`` threads
(the X25519 backends release the GIL); received batches are blinded while
later ones are still in flight. Memory per party is the input ids plus about
100 bytes per id (blinded points, 16-byte comparison values, permutations).
Measured with ``benchmarks/psi.py`` on this project's 2-core machine (both
parties as separate processes over gRPC/mTLS, 50% overlap), 1M x 1M ids:
peak resident memory 459 MB at the guest and 380 MB at the host, each whole
process (Python, gRPC and the 1M input strings included); about 15 CPU-seconds
per party, 29 s wall with both parties sharing the two cores (42-63 s while
other jobs loaded the machine).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import sys
import time
import unicodedata
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from atoll._process import cpu_count
from atoll.errors import ConfigError, CryptoError, DataError
from atoll.federation.context import Context
from atoll.secure import psi_group

log = logging.getLogger(__name__)

__all__ = ["PROTOCOLS", "EcdhPsiGuest", "EcdhPsiHost", "PsiParams", "PsiResult", "align_frame",
           "PsiRole", "canonical_id", "canonical_keys", "match_rows", "normalize_ids", "protocol_roles", "psi", "register_protocol",
           "run_psi"]

VERSION = 1
_MAX_EXACT_FLOAT = 2 ** 53


# ---------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class PsiParams:
    """How a PSI runs. ``result_to``, ``strip`` and ``unicode_form`` must agree at all parties."""

    protocol: str = "ecdh"
    result_to: str = "both"          # "both": every party learns the result; "guest": only the guest
    duplicates: str = "error"        # "error" or "drop" (keep the first occurrence)
    strip: bool = True               # strip leading/trailing whitespace of string ids
    unicode_form: str | None = "NFC"  # Unicode normalisation of string ids (None: as given)
    batch_size: int = 65536          # ids per message; the guest's value is used by every party
    compare_bytes: int = 16          # bytes of a doubly blinded value compared (8..32)
    workers: int | None = None       # threads blinding in parallel (default: usable cores)
    backend: str | None = None       # X25519 backend: "ipp", "cryptography", None = fastest
    progress: bool | None = None     # rich progress bars (None: when stderr is a terminal)
    cache_dir: str | None = None     # unbalanced: folder of the offline phase's cache (None: redone each call)
    cardinality_only: bool = False   # ecdh, one host: learn only the size of the intersection (PSI-CA)

    def __post_init__(self) -> None:
        if self.result_to not in ("both", "guest"):
            raise ConfigError(f"result_to={self.result_to!r}: use 'both' or 'guest'")
        if self.duplicates not in ("error", "drop"):
            raise ConfigError(f"duplicates={self.duplicates!r}: use 'error' or 'drop'")
        if self.unicode_form not in (None, "NFC", "NFD", "NFKC", "NFKD"):
            raise ConfigError(f"unicode_form={self.unicode_form!r}: use NFC, NFD, NFKC, NFKD or None")
        if not 1 <= self.batch_size <= 1 << 22:
            raise ConfigError(f"batch_size={self.batch_size}: use 1 .. 4194304")
        if not 8 <= self.compare_bytes <= psi_group.POINT_BYTES:
            raise ConfigError(f"compare_bytes={self.compare_bytes}: use 8 .. 32")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers={self.workers}: use at least 1")


@dataclass
class PsiResult:
    """One party's outcome. ``ids``/``positions`` are None for a host when only the guest learns."""

    ids: list[Any] | None
    positions: np.ndarray | None     # index of each result id in this party's input
    size: int | None
    stats: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- pure helpers
def canonical_id(x: Any, strip: bool = True, unicode_form: str | None = "NFC") -> str:
    """The normalised string form of one id (see the module docstring); DataError if refused."""
    if isinstance(x, str):
        s = x
    elif isinstance(x, (bool, np.bool_)):
        raise DataError(f"id {x!r} is a boolean; ids must be strings or integers")
    elif isinstance(x, (int, np.integer)):
        return str(int(x))
    elif isinstance(x, (float, np.floating)):
        f = float(x)
        if math.isnan(f):
            raise DataError("an id is missing (NaN); drop or fill rows without an id first")
        if not math.isfinite(f) or f != int(f) or abs(f) > _MAX_EXACT_FLOAT:
            raise DataError(f"id {x!r} is a non-integral or inexact float; ids must be strings or "
                            "integers (read the id column as strings)")
        return str(int(f))
    elif x is None:
        raise DataError("an id is missing (None); drop or fill rows without an id first")
    else:
        raise DataError(f"id {x!r} has type {type(x).__name__}; ids must be strings or integers")
    if unicode_form:
        s = unicodedata.normalize(unicode_form, s)
    if strip:
        s = s.strip()
    if not s:
        raise DataError(f"id {x!r} is empty{' after stripping whitespace' if strip else ''}")
    return s


def canonical_keys(ids: Sequence[Any], strip: bool = True, unicode_form: str | None = "NFC") -> list[bytes]:
    """:func:`canonical_id` of each id, UTF-8 encoded; DataError if one is refused.

    Fast path: a list of ASCII strings (every Unicode normal form leaves ASCII as it is, and
    ``str.strip`` is the same whitespace rule), checked and converted in a few C loops.
    """
    if all(type(x) is str for x in ids) and "".join(ids).isascii():
        keys = [x.strip().encode() for x in ids] if strip else [x.encode() for x in ids]
        if all(keys):
            return keys
    keys = []
    for x in ids:
        s = canonical_id(x, strip, unicode_form)
        try:
            keys.append(s.encode("utf-8"))
        except UnicodeEncodeError:
            raise DataError(f"id {x!r} is not valid Unicode (lone surrogate)") from None
    return keys


def normalize_ids(ids: Iterable[Any], strip: bool = True, unicode_form: str | None = "NFC",
                  duplicates: str = "error") -> tuple[list[bytes], np.ndarray]:
    """Canonical UTF-8 keys of ``ids`` and the input position of each (duplicates handled)."""
    keys = canonical_keys(ids if isinstance(ids, (list, tuple)) else list(ids), strip, unicode_form)
    positions = np.arange(len(keys), dtype=np.int64)
    if len(set(keys)) == len(keys):
        return keys, positions
    first: dict[bytes, int] = {}
    dups: list[str] = []
    for i, k in enumerate(keys):
        if k in first:
            dups.append(k.decode())
        else:
            first[k] = i
    if duplicates == "error":
        shown = ", ".join(repr(d) for d in sorted(set(dups))[:5])
        raise DataError(f"{len(dups)} duplicate ids after normalisation (e.g. {shown}); make ids "
                        "unique or pass duplicates='drop' to keep the first occurrence")
    keep = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    return [keys[i] for i in keep], keep


def secure_permutation(n: int) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` from OS entropy (sort by random 64-bit keys)."""
    return np.argsort(np.frombuffer(os.urandom(8 * n), dtype=np.uint64), kind="stable") \
        if n else np.zeros(0, dtype=np.int64)


def batch_spans(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def match_rows(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """For each row of ``left``, the index of an equal row in ``right``, or -1 (exact)."""
    n = len(left)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(right) == 0:
        return out
    lk = np.ascontiguousarray(left[:, :8]).view("<u8").ravel()
    rk = np.ascontiguousarray(right[:, :8]).view("<u8").ravel()
    order = np.argsort(rk, kind="stable")
    rs = rk[order]
    if len(rs) > 1 and bool((rs[1:] == rs[:-1]).any()):  # equal 64-bit prefixes: go exact, slowly
        index = {bytes(r): j for j, r in enumerate(right)}
        return np.fromiter((index.get(bytes(r), -1) for r in left), dtype=np.int64, count=n)
    idx = np.minimum(np.searchsorted(rs, lk), len(rs) - 1)
    hit = rs[idx] == lk
    cand = order[idx]
    full = hit.copy()
    full[hit] = (left[hit] == right[cand[hit]]).all(axis=1)
    out[full] = cand[full]
    return out


def _hash_blind(backend: psi_group.Backend, salt: bytes, scalar: bytes,
                keys: Sequence[bytes]) -> np.ndarray:
    return backend.mul(scalar, psi_group.hash_to_points(keys, salt))


def _blind(backend: psi_group.Backend, scalar: bytes, points: np.ndarray, keep: int) -> np.ndarray:
    return np.ascontiguousarray(backend.mul(scalar, points)[:, :keep])


def _check_array(x: Any, rows: int, cols: int, what: str, peer: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.shape != (rows, cols):
        raise CryptoError(f"{peer} sent a malformed {what} batch ({getattr(x, 'dtype', type(x))} "
                          f"{getattr(x, 'shape', '')}, expected uint8 {(rows, cols)}); "
                          "check that both sides run the same Atoll version")
    return x


@contextlib.contextmanager
def _pool(workers: int | None) -> Iterator[ThreadPoolExecutor]:
    """Blinding threads; on an error, queued batches are dropped instead of computed."""
    pool = ThreadPoolExecutor(workers or cpu_count(), thread_name_prefix="atoll-psi")
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


@contextlib.contextmanager
def _progress(enabled: bool | None, party: str) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    show = sys.stderr.isatty() if enabled is None else enabled
    with Progress(TextColumn(f"[bold]{party}[/] " + "{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                  transient=True, disable=not show) as prog:
        yield prog


# ---------------------------------------------------------------------------- roles
class PsiRole:
    """What the roles of every PSI protocol share: parameters and the settings all parties must agree on.

    A protocol that shows the guest which of its ids match (``shows_matches``) refuses
    ``cardinality_only``.
    """

    protocol = ""
    version = VERSION
    shows_matches = True

    def __init__(self, params: PsiParams):
        if params.cardinality_only and self.shows_matches:
            raise ConfigError(f"cardinality-only PSI (PSI-CA) runs on protocol 'ecdh'; {self.protocol} shows "
                              "the guest which of its ids match")
        self.params = params

    def _settings(self) -> dict:
        p = self.params
        return {"protocol": self.protocol, "version": self.version, "result_to": p.result_to, "strip": p.strip,
                "unicode_form": p.unicode_form}


class _EcdhRole:
    def __init__(self, params: PsiParams):
        self.params = params

    def _prepare(self, ids: Iterable[Any]) -> tuple[list[Any], list[bytes], np.ndarray]:
        p = self.params
        ids = list(ids.tolist() if hasattr(ids, "tolist") else ids)
        keys, positions = normalize_ids(ids, p.strip, p.unicode_form, p.duplicates)
        return ids, keys, positions

    def _own_phase(self, ctx: Context, pool: ThreadPoolExecutor, prog: Any, to: list[str] | str,
                   key: str, salt: bytes, scalar: bytes, shuffled: list[bytes], batch_size: int) -> None:
        """Hash and blind this party's shuffled ids batch by batch; send each batch as it is done."""
        backend = psi_group.get_backend(self.params.backend)
        spans = batch_spans(len(shuffled), batch_size)
        task = prog.add_task("blinding own ids", total=len(shuffled))
        futs = [pool.submit(_hash_blind, backend, salt, scalar, shuffled[s:e]) for s, e in spans]
        for k, ((s, e), fut) in enumerate(zip(spans, futs)):
            with ctx.scope("batch", k):
                ctx.send(to, key, fut.result())
            prog.advance(task, e - s)


class EcdhPsiGuest(_EcdhRole):
    """Guest side of ECDH-PSI: blinds its ids, matches, decides and (optionally) shares the result."""

    def run(self, ctx: Context, ids: Iterable[Any]) -> PsiResult:
        p = self.params
        t0 = time.perf_counter()
        hosts = ctx.parties_of("host")
        if not hosts:
            raise ConfigError("PSI needs at least one party with role 'host' in the job")
        if p.cardinality_only and len(hosts) != 1:
            raise ConfigError(f"cardinality-only PSI runs between a guest and one host; this job has {hosts}")
        ids, keys, positions = self._prepare(ids)
        n = len(keys)
        salt, scalar = os.urandom(32), psi_group.new_scalar()
        backend = psi_group.get_backend(p.backend)
        order = secure_permutation(n)
        shuffled = [keys[i] for i in order]
        stats: dict[str, Any] = {"backend": backend.name, "n": n}
        with ctx.scope("psi"):
            ctx.send(hosts, "hello", {"protocol": "ecdh", "version": VERSION, "result_to": p.result_to,
                                      "strip": p.strip, "unicode_form": p.unicode_form, "salt": salt,
                                      "n": n, "batch_size": p.batch_size,
                                      "compare_bytes": p.compare_bytes,
                                      "cardinality_only": p.cardinality_only})
            n_host = {}
            for h, reply in ctx.gather(hosts, "hello").items():
                if not isinstance(reply, dict) or not isinstance(reply.get("n"), int) or reply["n"] < 0:
                    raise CryptoError(f"{h} answered the PSI hello with {reply!r}")
                n_host[h] = reply["n"]
            stats["n_hosts"] = dict(n_host)
            t1 = time.perf_counter()
            c = p.compare_bytes
            with _pool(p.workers) as pool, \
                    _progress(p.progress, ctx.party) as prog:
                self._own_phase(ctx, pool, prog, hosts, "a", salt, scalar, shuffled, p.batch_size)
                ba_futs: dict[str, list[Future]] = {}
                task = prog.add_task("blinding hosts' values", total=sum(n_host.values()))
                for h in hosts:
                    ba_futs[h] = []
                    for k, (s, e) in enumerate(batch_spans(n_host[h], p.batch_size)):
                        with ctx.scope("batch", k):
                            b = _check_array(ctx.recv(h, "b"), e - s, psi_group.POINT_BYTES, "b", h)
                        fut = pool.submit(_blind, backend, scalar, b, c)
                        fut.add_done_callback(lambda f, m=e - s: prog.advance(task, m))
                        ba_futs[h].append(fut)
                ab: dict[str, np.ndarray] = {}
                for h in hosts:
                    parts = []
                    for k, (s, e) in enumerate(batch_spans(n, p.batch_size)):
                        with ctx.scope("batch", k):
                            parts.append(_check_array(ctx.recv(h, "ab"), e - s, c, "ab", h))
                    ab[h] = np.concatenate(parts) if parts else np.zeros((0, c), np.uint8)
                ba = {h: np.concatenate([f.result() for f in fs]) if fs else np.zeros((0, c), np.uint8)
                      for h, fs in ba_futs.items()}
            t2 = time.perf_counter()
            if p.cardinality_only:  # the host shuffled AB: count the matches, nothing links them to ids
                size = int((match_rows(ab[hosts[0]], ba[hosts[0]]) >= 0).sum())
                if p.result_to == "both":
                    ctx.send(hosts[0], "size", size)
                stats.update(size=size, seconds={"prepare": t1 - t0, "blind": t2 - t1,
                                                 "total": time.perf_counter() - t0})
                return PsiResult(None, None, size, stats)
            in_all = np.ones(n, dtype=bool)
            where: dict[str, np.ndarray] = {}
            for h in hosts:
                where[h] = match_rows(ab[h], ba[h])
                in_all &= where[h] >= 0
            sel = np.flatnonzero(in_all)
            sel = np.array(sorted(sel.tolist(), key=shuffled.__getitem__), dtype=np.int64)
            if p.result_to == "both":
                for h in hosts:
                    ctx.send(h, "result", where[h][sel])
        pos = positions[order[sel]] if len(sel) else np.zeros(0, dtype=np.int64)
        t3 = time.perf_counter()
        stats.update(size=len(pos), seconds={"prepare": t1 - t0, "blind": t2 - t1, "match": t3 - t2,
                                             "total": t3 - t0})
        log.info("PSI guest: %d ids, hosts %s, intersection %d, %.2fs (%s)", n, n_host, len(pos),
                 t3 - t0, backend.name)
        return PsiResult([ids[i] for i in pos], pos, len(pos), stats)


class EcdhPsiHost(_EcdhRole):
    """Host side of ECDH-PSI: blinds its ids and the guest's; learns the result if allowed."""

    def run(self, ctx: Context, ids: Iterable[Any]) -> PsiResult:
        p = self.params
        t0 = time.perf_counter()
        ids, keys, positions = self._prepare(ids)
        n = len(keys)
        scalar = psi_group.new_scalar()
        backend = psi_group.get_backend(p.backend)
        with ctx.scope("psi"):
            hello = ctx.recv("guest", "hello")
            self._check_hello(hello)
            salt, n_guest, bs, c = hello["salt"], hello["n"], hello["batch_size"], hello["compare_bytes"]
            ctx.send("guest", "hello", {"n": n})
            order = secure_permutation(n)
            shuffled = [keys[i] for i in order]
            t1 = time.perf_counter()
            with _pool(p.workers) as pool, \
                    _progress(p.progress, ctx.party) as prog:
                self._own_phase(ctx, pool, prog, "guest", "b", salt, scalar, shuffled, bs)
                task = prog.add_task("blinding guest's values", total=n_guest)
                pending: deque[tuple[int, int, Future]] = deque()

                def flush(block: bool) -> None:
                    if p.cardinality_only and not block:
                        return  # AB goes back shuffled as a whole (step 3 of PSI-CA)
                    if p.cardinality_only:
                        ab = np.concatenate([f.result() for _, _, f in pending]) if pending \
                            else np.zeros((0, c), np.uint8)
                        ab = ab[secure_permutation(len(ab))]
                        for k, (s, e) in enumerate(batch_spans(n_guest, bs)):
                            with ctx.scope("batch", k):
                                ctx.send("guest", "ab", ab[s:e])
                        pending.clear()
                        return
                    while pending and (block or pending[0][2].done()):
                        k, m, fut = pending.popleft()
                        with ctx.scope("batch", k):
                            ctx.send("guest", "ab", fut.result())
                        prog.advance(task, m)

                for k, (s, e) in enumerate(batch_spans(n_guest, bs)):
                    with ctx.scope("batch", k):
                        a = _check_array(ctx.recv("guest", "a"), e - s, psi_group.POINT_BYTES, "a", "guest")
                    pending.append((k, e - s, pool.submit(_blind, backend, scalar, a, c)))
                    flush(block=False)
                flush(block=True)
            t2 = time.perf_counter()
            result = None
            if p.cardinality_only:
                size = ctx.recv("guest", "size") if p.result_to == "both" else None
                if size is not None and (not isinstance(size, int) or not 0 <= size <= min(n, n_guest)):
                    raise CryptoError(f"the guest sent an impossible intersection size {size!r}")
                return PsiResult(None, None, size, {"backend": backend.name, "n": n, "n_guest": n_guest,
                                                    "size": size, "seconds": {"total": time.perf_counter() - t0}})
            if p.result_to == "both":
                result = ctx.recv("guest", "result")
                if not isinstance(result, np.ndarray) or result.ndim != 1 or result.dtype.kind not in "iu" \
                        or (len(result) and (result.min() < 0 or result.max() >= n)) \
                        or len(np.unique(result)) != len(result):
                    raise CryptoError("the guest sent an invalid PSI result (positions out of range "
                                      "or repeated); check that both sides run the same Atoll version")
        t3 = time.perf_counter()
        stats = {"backend": backend.name, "n": n, "n_guest": n_guest,
                 "seconds": {"prepare": t1 - t0, "blind": t2 - t1, "result": t3 - t2, "total": t3 - t0}}
        if result is None:
            log.info("PSI host: %d ids, guest %d, result kept by the guest, %.2fs", n, n_guest, t3 - t0)
            return PsiResult(None, None, None, stats)
        pos = positions[order[result.astype(np.int64)]]
        stats["size"] = len(pos)
        log.info("PSI host: %d ids, guest %d, intersection %d, %.2fs", n, n_guest, len(pos), t3 - t0)
        return PsiResult([ids[i] for i in pos], pos, len(pos), stats)

    def _check_hello(self, hello: Any) -> None:
        p = self.params
        if not isinstance(hello, dict) or hello.get("protocol") != "ecdh" or hello.get("version") != VERSION:
            raise ConfigError(f"the guest speaks PSI {hello.get('protocol') if isinstance(hello, dict) else '?'}"
                              f" v{hello.get('version') if isinstance(hello, dict) else '?'}; this host "
                              f"runs ecdh v{VERSION}: use the same protocol and Atoll version")
        mine = {"result_to": p.result_to, "strip": p.strip, "unicode_form": p.unicode_form,
                "cardinality_only": p.cardinality_only}
        theirs = {k: hello.get(k) for k in mine}
        if mine != theirs:
            raise ConfigError(f"PSI settings differ: guest {theirs}, this host {mine}; ids would be "
                              "normalised differently or the result shared against a party's will. "
                              "Use the same settings on every side")
        ok = (isinstance(hello.get("salt"), bytes) and len(hello["salt"]) == 32
              and isinstance(hello.get("n"), int) and hello["n"] >= 0
              and isinstance(hello.get("batch_size"), int) and 1 <= hello["batch_size"] <= 1 << 22
              and isinstance(hello.get("compare_bytes"), int) and 8 <= hello["compare_bytes"] <= 32)
        if not ok:
            raise CryptoError(f"malformed PSI hello from the guest: {hello!r}")


# ---------------------------------------------------------------------------- entry points
PROTOCOLS: dict[str, dict[str, type]] = {"ecdh": {"guest": EcdhPsiGuest, "host": EcdhPsiHost}}
#: the other protocols shipped with Atoll, by the module that registers each (imported on first use:
#: they build on this module)
BUILTIN = {"kkrt": "atoll.secure.psi_kkrt", "unbalanced": "atoll.secure.psi_unbalanced"}


def protocol_roles(name: str) -> dict[str, type]:
    """The role classes of PSI protocol ``name`` (ConfigError naming the available ones)."""
    if name not in PROTOCOLS and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    roles = PROTOCOLS.get(name)
    if roles is None:
        raise ConfigError(f"unknown PSI protocol {name!r}; available: {sorted(set(PROTOCOLS) | set(BUILTIN))}")
    return roles


def register_protocol(name: str, guest: type, host: type) -> None:
    """Make another PSI protocol available to :func:`psi` (classes with ``run(ctx, ids)``)."""
    PROTOCOLS[name] = {"guest": guest, "host": host}


def run_psi(ctx: Context, ids: Iterable[Any], params: PsiParams | None = None) -> PsiResult:
    """Like :func:`psi` but returns the full :class:`PsiResult` (positions, statistics)."""
    params = params or PsiParams()
    roles = protocol_roles(params.protocol)
    if ctx.role not in roles:
        raise ConfigError(f"party {ctx.party!r} has role {ctx.role!r}; PSI runs between 'guest' and "
                          "'host' parties")
    return roles[ctx.role](params).run(ctx, ids)


def psi(ctx: Context, ids: Iterable[Any], *, protocol: str = "ecdh", result_to: str = "both",
        **options: Any) -> list[Any] | None:
    """This party's ids that every party holds, in one order common to all parties.

    Run it at the guest and at every host of the job (same ``protocol`` and
    ``result_to``). Returns a list of this party's own ids (as given), or
    ``None`` at a host when ``result_to="guest"``. ``options`` are the other
    fields of :class:`PsiParams`. An empty intersection is an empty list.
    """
    return run_psi(ctx, ids, PsiParams(protocol=protocol, result_to=result_to, **options)).ids


def align_frame(ctx: Context, frame: Any, **options: Any) -> Any:
    """Rows of ``frame`` (a DataFrame indexed by id) in the order agreed with every party.

    The pipeline step of vertical learning: row ``i`` of the result is the same
    user at the guest and at every host. Raises :class:`DataError` if the
    parties have no id in common, and :class:`ConfigError` at a host asked to
    align with ``result_to="guest"`` (it would not know its rows).
    """
    res = run_psi(ctx, frame.index, PsiParams(**options))
    if res.positions is None:
        raise ConfigError("this host cannot align its rows with result_to='guest'; use "
                          "result_to='both' for alignment")
    if res.size == 0:
        raise DataError(f"PSI found no id in common between the parties ({ctx.party} has "
                        f"{res.stats.get('n', len(frame))} ids): check that every party uses the "
                        "same id column and format")
    return frame.iloc[res.positions]
