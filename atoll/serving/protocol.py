"""Joint online scoring: the guest scores one request with every host's partial answer.

Protocol (one serving session, model version ``v``; FATE-Serving's and SecretFlow-Serving's
single-round inference, with the protection level chosen explicitly):

1. A client asks the guest (label holder) to score ids (one or a batch), with the guest's own
   features or letting the guest look them up in its feature source.
2. The guest's router picks the version of each id (:mod:`atoll.serving.canary`); per version,
   the guest sends every host ``{session, version, ids, level, request}`` over gRPC with mutual
   TLS (service ``atoll.Serving``, method ``Score``), to one replica of each host at once
   (:mod:`atoll.serving.replicas`: failover, per-peer deadline).
3. Each host checks the caller's certificate names a guest of this session, the session, the
   version it serves and the level it allows, looks the ids up in ITS OWN feature source,
   applies its own preprocessing and answers with its partial score only:

   * ``plain-partial``: linear models' partial scores ``x_h · w_h`` (+ offset); SecureBoost's
     per-tree reachable-leaf bit matrices (as FATE and SecretFlow answer);
   * ``masked``, linear models (two or more hosts): ``encode(x_h · w_h) + Σ_j ±PRF(k_hj, session,
     v, id)`` in Z_2^64, where ``k_hj`` is an X25519 key the hosts h and j agreed (each holds its
     own private key and the others' public keys); the masks cancel in the sum, so the guest
     learns only the sum of the hosts' partial scores, i.e. exactly what the final score tells it.
   * ``masked``, SecureBoost (one host; EINI-like, Chen et al. 2021): the guest's request also
     carries ``[[Mg[i, l] · w_l]]`` under its own Paillier key for every row i and leaf l of every
     tree (``Mg``: the leaves its own splits let the row reach); the host multiplies each by its
     own reachability bit, sums per row and re-randomises: one ciphertext per row, which the guest
     decrypts to the margin. Cost: one encryption per row and leaf at the guest.

4. The guest checks each answer (version hash, level, shape: a wrong shape is a clear error,
   never a score), combines (:mod:`atoll.serving.models`) and answers with the scores and the
   metadata ``{version, level, model sha256}`` of every id.

What each party sees:

* Host: the ids asked for, the session, the version and the level; never the guest's features,
  the scores or the other hosts' answers. It answers only for ids in its own feature source
  and says only how many were missing.
* Guest: per request, each host's partial score (``plain-partial``; for SecureBoost which leaves
  each row can still reach at that host), or in ``masked`` only the sum of the hosts' partial
  scores (linear: with one host the final score reveals that host's partial anyway, so
  ``masked`` needs two or more) or, for trees, only each row's margin; never a host's feature
  value or threshold.
* Host, ``masked`` trees: besides the ids, ciphertexts under the guest's key (the number of
  leaves it already knows), nothing it can decrypt.
* Errors that cross the wire carry a category and a step, never an id, a value or a path.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import grpc
import numpy as np
import pandas as pd

from atoll import wire
from atoll.crypto import ring
from atoll.errors import AtollError, ConfigError, DataError, WireError
from atoll.serving.canary import VersionRouter
from atoll.serving.features import FeatureSource, UnknownIds
from atoll.serving.metrics import Metrics
from atoll.serving.models import LEVELS, linear_score
from atoll.serving.parts import ServedPart
from atoll.serving.replicas import SERVICE, PeerRefused, PeerTimeout, PeerUnavailable, ReplicaSet

log = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_ID_LEN = 128
MAX_REQUEST_BYTES = 64 << 20  # masked tree queries carry a ciphertext per row and leaf
#: the smallest HE key a host accepts in a masked tree query (tests use 1024; the default is 2048)
MIN_QUERY_KEY_BITS = 1024
MAX_ANSWER_BYTES = 64 << 20
#: fractional bits of masked partial scores in Z_2^64 (|partial| < 2^30)
MASK_FRAC_BITS = 32


class ServingError(AtollError):
    """A request could not be scored: ``category`` and ``step`` say why (they may cross the wire)."""

    STATUS = {"unknown_id": 404, "bad_request": 422, "unknown_version": 404, "level_refused": 403, "forbidden": 403,
              "timeout": 504, "unavailable": 503, "bad_answer": 502, "refused": 502, "internal": 500}

    def __init__(self, category: str, step: str, message: str, peer: str | None = None):
        super().__init__(message)
        self.category, self.step, self.peer = category, step, peer

    @property
    def status(self) -> int:
        return self.STATUS.get(self.category, 500)


# ================================================================================ pure helpers
def check_ids(ids: Any) -> list[str]:
    """A request's ids: 1..MAX_BATCH strings of at most MAX_ID_LEN characters."""
    if not isinstance(ids, (list, tuple)) or not 1 <= len(ids) <= MAX_BATCH:
        raise ServingError("bad_request", "parse", f"send 1 to {MAX_BATCH} ids per request")
    out = []
    for i in ids:
        if isinstance(i, (int, np.integer)) and not isinstance(i, bool):
            i = str(int(i))
        if not isinstance(i, str) or not 0 < len(i) <= MAX_ID_LEN:
            raise ServingError("bad_request", "parse", f"ids are strings or integers of 1 to {MAX_ID_LEN} characters")
        out.append(i)
    return out


def check_request(body: Any) -> tuple[str, str, list[str], str]:
    """(session, version, ids, level) of a host's request, or ``bad_request``."""
    if not isinstance(body, dict):
        raise ServingError("bad_request", "parse", "a request is a dict")
    session, version, level = body.get("session"), body.get("version"), body.get("level")
    if not all(isinstance(v, str) and 0 < len(v) <= 128 for v in (session, version, level)):
        raise ServingError("bad_request", "parse", "a request names its session, version and level")
    if level not in LEVELS:
        raise ServingError("bad_request", "parse", f"level must be one of {', '.join(LEVELS)}")
    return session, version, check_ids(body.get("ids")), level


def error_answer(e: ServingError) -> bytes:
    return wire.dumps({"error": e.category, "step": e.step})


def _prf(key: bytes, session: str, version: str, ids: Sequence[str]) -> np.ndarray:
    out = np.empty(len(ids), dtype=np.uint64)
    prefix = f"{session}\x00{version}\x00".encode()
    for k, i in enumerate(ids):
        out[k] = int.from_bytes(hashlib.blake2b(prefix + i.encode(), key=key, digest_size=8).digest(), "little")
    return out


@dataclass(frozen=True)
class MaskKeys:
    """A host's masking keys: its X25519 private key and every other host's public key."""

    party: str
    private: bytes
    peers: Mapping[str, bytes]

    def pair_key(self, peer: str) -> bytes:
        from atoll.tee.envelope import _agree, _hkdf, x25519_public

        mine, theirs = x25519_public(self.private), self.peers[peer]
        lo, hi = sorted((mine, theirs))
        return _hkdf(_agree(self.private, theirs), lo + hi, b"atoll-serving/mask/1")

    def masks(self, session: str, version: str, ids: Sequence[str]) -> np.ndarray:
        """Σ_j ±PRF(k_{me,j}, ...): + towards hosts sorting after this one, - before; cancels over all hosts."""
        total = np.zeros(len(ids), dtype=np.uint64)
        for peer in sorted(self.peers):
            m = _prf(self.pair_key(peer), session, version, ids)
            total = total + m if self.party < peer else total - m
        return total


def mask_partial(partial: np.ndarray, keys: MaskKeys, session: str, version: str, ids: Sequence[str]) -> np.ndarray:
    """A host's masked answer: its partial scores in Z_2^64 plus its pairwise masks."""
    return ring.encode(partial, MASK_FRAC_BITS) + keys.masks(session, version, ids)


def unmask_sum(answers: Mapping[str, Any], n: int) -> np.ndarray:
    """The guest's sum of the hosts' masked answers: the masks cancel, the partials' sum remains."""
    total = np.zeros(n, dtype=np.uint64)
    for host, a in answers.items():
        if not isinstance(a, np.ndarray) or a.dtype != np.uint64 or a.shape != (n,):
            raise DataError(f"{host} answered with {getattr(a, 'shape', type(a).__name__)}, expected "
                            f"{n} masked ring elements")
        total = total + a
    return ring.decode(total, MASK_FRAC_BITS)


def check_query(query: Any) -> Any:
    """A masked tree query: a ciphertext matrix under a key of at least MIN_QUERY_KEY_BITS bits."""
    from atoll.crypto.cipherarray import CipherArray

    if not isinstance(query, CipherArray) or query.ndim != 2:
        raise ServingError("bad_request", "query", "a masked tree query is a ciphertext matrix")
    if int(query.pk.n).bit_length() < MIN_QUERY_KEY_BITS:
        raise ServingError("bad_request", "query", f"the query's key has fewer than {MIN_QUERY_KEY_BITS} bits")
    return query


def _peer_name(context: grpc.ServicerContext) -> str | None:
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode() if names else None


# ================================================================================ host
class HostServing:
    """Host side of joint scoring: answers partial scores from its own features (see the module docstring).

    ``versions``: version name -> this host's part. ``guests``: party names allowed to ask.
    ``levels``: levels this host answers at (it refuses the others). ``mask_keys``: needed for
    ``masked``. ``tls_required``: refuse callers without a client certificate.
    """

    def __init__(self, party: str, session: str, versions: Mapping[str, ServedPart], source: FeatureSource,
                 guests: Sequence[str] = ("guest",), levels: Sequence[str] = ("plain-partial",),
                 mask_keys: MaskKeys | None = None, tls_required: bool = True):
        for v, p in versions.items():
            if p.role != "host":
                raise ConfigError(f"version {v!r}: {party} serves host parts, this is a {p.role}'s")
        if "masked" in levels and mask_keys is None and any(p.adapter.linear for p in versions.values()):
            raise ConfigError("the masked level of linear models needs this host's mask key and the other "
                              "hosts' public keys")
        self.party, self.session, self.source = party, session, source
        self.versions = dict(versions)
        self.guests, self.levels, self.mask_keys = set(guests), tuple(levels), mask_keys
        self.tls_required = tls_required
        self.metrics = Metrics(f"host {party}")

    def answer(self, caller: str | None, payload: bytes) -> bytes:
        """One ``Score`` request -> its wire answer (no network: the gRPC handler calls this)."""
        t0 = time.perf_counter()
        try:
            out = self._answer(caller, payload)
            self.metrics.observe("ok", time.perf_counter() - t0)
            return out
        except ServingError as e:
            self.metrics.observe(e.category, time.perf_counter() - t0)
            log.info("refused a request: %s at %s (%s)", e.category, e.step, e)
            return error_answer(e)
        except Exception:  # a bug here must not leak its text to the peer
            log.exception("scoring failed")
            self.metrics.observe("internal", time.perf_counter() - t0)
            return error_answer(ServingError("internal", "score", "internal error"))

    def _answer(self, caller: str | None, payload: bytes) -> bytes:
        if caller is None and self.tls_required:
            raise ServingError("refused", "auth", "callers must present a certificate")
        if caller is not None and caller not in self.guests:
            raise ServingError("refused", "auth", "the caller is not a guest of this session")
        try:
            body = wire.loads(payload, max_bytes=MAX_REQUEST_BYTES)
        except WireError:
            raise ServingError("bad_request", "parse", "the request is not a wire value") from None
        session, version, ids, level = check_request(body)
        if session != self.session:
            raise ServingError("refused", "session", "not this host's serving session")
        part = self.versions.get(version)
        if part is None:
            raise ServingError("unknown_version", "version", "this host does not serve that version")
        if level not in self.levels:
            raise ServingError("level_refused", "level", f"this host answers only at {', '.join(self.levels)}")
        if level == "masked" and not (part.adapter.linear or part.adapter.mask_answer):
            raise ServingError("level_refused", "level", "this model cannot be served masked")
        try:
            x = part.rows(self.source, ids)
        except UnknownIds as e:
            raise ServingError("unknown_id", "lookup", f"{e.missing} of {e.asked} ids unknown here") from None
        except (ConfigError, DataError, ValueError, KeyError) as e:
            log.warning("feature lookup failed: %s", e)
            raise ServingError("internal", "lookup", "the host could not read its features") from None
        out: dict[str, Any] = {"version": version, "sha256": part.sha256, "level": level, "n": len(ids)}
        if level == "masked" and part.adapter.linear:
            partial = part.adapter.partial(part.model, x, self.party)
            out["masked"] = mask_partial(np.asarray(partial), self.mask_keys, session, version, ids)
        elif level == "masked":
            query = check_query(body.get("query"))
            try:
                out["masked"] = part.adapter.mask_answer(part.model, x, self.party, query)
            except DataError:
                raise ServingError("bad_request", "query", "the masked query does not fit this model") from None
        else:
            out["partial"] = part.adapter.partial(part.model, x, self.party)
        return wire.dumps(out)

    def health(self) -> bytes:
        return wire.dumps({"party": self.party, "session": self.session, "levels": list(self.levels),
                           "versions": {v: p.sha256 for v, p in self.versions.items()}})

    def handler(self) -> grpc.GenericRpcHandler:
        def score(request: bytes, context: grpc.ServicerContext) -> bytes:
            return self.answer(_peer_name(context), request)

        def health(request: bytes, context: grpc.ServicerContext) -> bytes:
            who = _peer_name(context)
            if (who is None and self.tls_required) or (who is not None and who not in self.guests):
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "not a guest of this serving session")
            return self.health()

        return grpc.method_handlers_generic_handler(SERVICE, {
            "Score": grpc.unary_unary_rpc_method_handler(score),
            "Health": grpc.unary_unary_rpc_method_handler(health)})

    def serve(self, listen: str, tls: Any, max_workers: int = 8) -> grpc.Server:
        """Start the gRPC server (mutual TLS with ``tls``, a :class:`~atoll.federation.certs.TlsConfig`)."""
        self.tls_required = tls is not None
        server = grpc.server(futures.ThreadPoolExecutor(max_workers, thread_name_prefix=f"atoll-serve-{self.party}"),
                             options=[("grpc.so_reuseport", 0),
                                      ("grpc.max_receive_message_length", MAX_REQUEST_BYTES)])
        server.add_generic_rpc_handlers((self.handler(),))
        if tls is None:
            port = server.add_insecure_port(listen)
        else:
            creds = grpc.ssl_server_credentials([(tls.key, tls.cert)], root_certificates=tls.ca_cert,
                                                require_client_auth=True)
            port = server.add_secure_port(listen, creds)
        if port == 0:
            raise ConfigError(f"{self.party} could not listen on {listen}: is the port in use?")
        server.start()
        self.port = port
        return server


# ================================================================================ guest
@dataclass
class Scored:
    """The answer to one scoring request: one score (row) per id, and how each was scored."""

    ids: list[str]
    scores: np.ndarray
    versions: list[str]
    level: str
    sha256: dict[str, str]
    request_id: str
    seconds: float = 0.0
    hosts: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ids": self.ids, "scores": self.scores.tolist(), "versions": self.versions,
                "level": self.level, "sha256": self.sha256, "request_id": self.request_id}


class GuestServing:
    """Guest side of joint scoring: routes, asks every host, combines (see the module docstring).

    ``versions``: version name -> the guest's part; ``hosts``: host party -> its
    :class:`ReplicaSet`; ``source``: the guest's own feature source (optional when every request
    brings its features); ``manifest``: version -> {host: sha256} the hosts must answer with
    (versions pinned by hash); ``timeout``: per-peer seconds.
    """

    def __init__(self, party: str, session: str, versions: Mapping[str, ServedPart],
                 hosts: Mapping[str, ReplicaSet], source: FeatureSource | None = None,
                 router: VersionRouter | None = None, level: str = "plain-partial", timeout: float = 2.0,
                 manifest: Mapping[str, Mapping[str, str]] | None = None, published: Sequence[str] | None = None,
                 he_key_bits: int = 2048):
        if level not in LEVELS:
            raise ConfigError(f"level must be one of {', '.join(LEVELS)}")
        self._keys = None
        for v, p in versions.items():
            if p.role != "guest":
                raise ConfigError(f"version {v!r}: the guest serves its own part, this is a {p.role}'s")
            if level != "masked":
                continue
            if p.adapter.linear and len(hosts) < 2:
                raise ConfigError(f"version {v!r}: masked linear models need two or more hosts (with one host "
                                  "the final score itself reveals the host's partial score)")
            if not p.adapter.linear:
                if p.adapter.mask_query is None or len(hosts) != 1:
                    raise ConfigError(f"version {v!r}: this model is served masked with exactly one host")
                if self._keys is None:
                    from atoll.crypto import he

                    self._keys = he.generate_keypair("paillier", he_key_bits)
        if not versions:
            raise ConfigError("serve at least one model version")
        self.party, self.session, self.level, self.timeout = party, session, level, float(timeout)
        self.versions, self.hosts, self.source = dict(versions), dict(hosts), source
        self.manifest = {v: dict(m) for v, m in (manifest or {}).items()}
        self.router = router or VersionRouter(next(iter(self.versions)))
        self.published: set[str] = set(published if published is not None else self.router.versions())
        self.metrics = Metrics(f"guest {party}")
        self._pool = futures.ThreadPoolExecutor(max(4, 2 * len(self.hosts)), thread_name_prefix="atoll-serve-guest")
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ versions
    def publish(self, version: str) -> dict[str, str]:
        """Make ``version`` routable once every host serves it (with the pinned hash, if any)."""
        if version not in self.versions:
            raise ConfigError(f"the guest has no part of version {version!r}")
        seen: dict[str, str] = {}
        for host, rs in self.hosts.items():
            answers = [rs.health(r) for r in rs.replicas]
            shas = {wire.loads(a, max_bytes=1 << 20).get("versions", {}).get(version) for a in answers if a}
            if not answers or None in shas or not shas or len(shas) != 1:
                raise ConfigError(f"{host} does not serve version {version!r} on every replica yet; publish "
                                  "it there first")
            sha = shas.pop()
            want = self.manifest.get(version, {}).get(host)
            if want is not None and want != sha:
                raise ConfigError(f"{host} serves version {version!r} with another part than the manifest pins")
            seen[host] = sha
        self.manifest.setdefault(version, {}).update(seen)
        self.published.add(version)
        return seen

    def start_canary(self, version: str, fraction: float) -> None:
        if version not in self.published:
            raise ConfigError(f"publish version {version!r} (at every party) before routing traffic to it")
        self.router.start_canary(version, fraction)

    # ------------------------------------------------------------------ scoring
    def score(self, ids: Sequence[Any], features: pd.DataFrame | None = None,
              exposure: np.ndarray | None = None) -> Scored:
        """Score ``ids`` (guest features from ``features``, indexed by id, or from the source)."""
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex
        try:
            out = self._score(check_ids(list(ids)), features, exposure, rid)
        except ServingError as e:
            self.metrics.observe(e.category, time.perf_counter() - t0)
            raise
        out.seconds = time.perf_counter() - t0
        self.metrics.observe("ok", out.seconds)
        return out

    def _score(self, ids: list[str], features: pd.DataFrame | None, exposure: np.ndarray | None,
               rid: str) -> Scored:
        if exposure is not None:
            exposure = np.asarray(exposure, dtype=np.float64)
            if exposure.shape != (len(ids),) or not np.all(np.isfinite(exposure)):
                raise ServingError("bad_request", "parse", "send one finite exposure per id")
        frame = self._check_features(ids, features)
        groups: dict[str, list[int]] = {}
        for k, i in enumerate(ids):
            groups.setdefault(self.router.version_for(i), []).append(k)
        scores: np.ndarray | None = None
        versions = [""] * len(ids)
        for version, rows in groups.items():
            part = self.versions[version]
            sub_ids = [ids[k] for k in rows]
            try:
                x = part.matrix(frame.iloc[rows]) if frame is not None else part.rows(self.source, sub_ids)
            except UnknownIds as e:
                raise ServingError("unknown_id", "lookup", f"{e.missing} of {e.asked} ids are not in the guest's "
                                   "features") from None
            except ConfigError as e:
                raise ServingError("bad_request", "features", str(e)) from None
            query = None
            if self.level == "masked" and not part.adapter.linear:
                try:
                    query = part.adapter.mask_query(part.model, x, self._keys.public_key)
                except DataError as e:
                    raise ServingError("bad_request", "query", str(e)) from None
            partials = self._ask_hosts(version, sub_ids, rid, query)
            s = self._combine(part, x, partials, None if exposure is None else exposure[rows])
            if scores is None:
                scores = np.zeros((len(ids),) + s.shape[1:])
            scores[rows] = s
            for k in rows:
                versions[k] = version
        return Scored(ids, scores, versions, self.level,
                      {v: self.versions[v].sha256 for v in groups}, rid)

    def _check_features(self, ids: list[str], features: pd.DataFrame | None) -> pd.DataFrame | None:
        if features is not None:
            features = features.copy()
            features.index = features.index.astype(str)
            if list(features.index) != ids:
                raise ServingError("bad_request", "features", "send one row of features per id, in the ids' order")
            return features
        if self.source is None:
            raise ServingError("bad_request", "features", "this guest has no feature source: send the features")
        return None

    def _ask_hosts(self, version: str, ids: list[str], rid: str, query: Any = None) -> dict[str, Any]:
        body = {"session": self.session, "version": version, "ids": ids, "level": self.level, "request": rid}
        if query is not None:
            body["query"] = query
        payload = wire.dumps(body)
        names = list(self.hosts)
        if len(names) == 1:
            raw = {names[0]: self._ask(names[0], payload)}
        else:
            futs = {h: self._pool.submit(self._ask, h, payload) for h in names[1:]}
            raw = {names[0]: self._ask(names[0], payload)}
            raw.update({h: f.result() for h, f in futs.items()})
        out = {}
        for host, data in raw.items():
            try:
                ans = wire.loads(data, max_bytes=MAX_ANSWER_BYTES)
            except WireError:
                raise ServingError("bad_answer", "decode", f"{host} answered with bytes that are not a wire value",
                                   peer=host) from None
            if not isinstance(ans, dict):
                raise ServingError("bad_answer", "decode", f"{host} answered with a {type(ans).__name__}", peer=host)
            if "error" in ans:
                cat = ans["error"] if ans["error"] in ServingError.STATUS else "refused"
                step = str(ans.get("step"))[:32]
                raise ServingError(cat, step, f"{host} refused: {cat} at {step}", peer=host)
            want = self.manifest.get(version, {}).get(host)
            if ans.get("version") != version or ans.get("level") != self.level or ans.get("n") != len(ids) \
                    or (want is not None and ans.get("sha256") != want):
                raise ServingError("bad_answer", "check", f"{host} answered for another version, level or "
                                   "batch than asked (or with a part the manifest does not pin)", peer=host)
            out[host] = ans.get("masked" if self.level == "masked" else "partial")
        return out

    def _ask(self, host: str, payload: bytes) -> bytes:
        try:
            return self.hosts[host].call(payload, self.timeout)
        except PeerTimeout as e:
            raise ServingError("timeout", "score", str(e), peer=host) from None
        except PeerUnavailable as e:
            raise ServingError("unavailable", "score", str(e), peer=host) from None
        except PeerRefused as e:
            raise ServingError("refused", "score", str(e), peer=host) from None

    def _combine(self, part: ServedPart, x: np.ndarray, partials: dict[str, Any],
                 exposure: np.ndarray | None) -> np.ndarray:
        try:
            if self.level == "masked" and not part.adapter.linear:
                return part.adapter.mask_combine(part.model, self._decrypt(partials, len(x)))
            if self.level == "masked":
                return linear_score(part.model, x, unmask_sum(partials, len(x)), exposure)
            return part.adapter.combine(part.model, x, partials, exposure)
        except DataError as e:
            if "exposure" in str(e):
                raise ServingError("bad_request", "exposure", str(e)) from None
            raise ServingError("bad_answer", "combine", str(e)) from None

    def _decrypt(self, answers: Mapping[str, Any], n: int) -> np.ndarray:
        from atoll.crypto.cipherarray import CipherArray

        (host, a), = answers.items()
        if not isinstance(a, CipherArray) or a.shape != (n,) or a.pk != self._keys.public_key:
            raise DataError(f"{host} answered the masked query with something other than {n} ciphertexts "
                            "under the guest's key")
        return self._keys.private_key.decrypt(a)

    def status(self) -> dict[str, Any]:
        r = self.router.routes
        return {"party": self.party, "session": self.session, "level": self.level,
                "routes": {"stable": r.stable, "canary": r.canary, "fraction": r.fraction, "previous": r.previous},
                "published": sorted(self.published),
                "hosts": {h: rs.status() for h, rs in self.hosts.items()}}

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for rs in self.hosts.values():
            rs.close()


__all__ = ["GuestServing", "HostServing", "MaskKeys", "Scored", "ServingError"]
