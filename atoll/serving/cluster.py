"""The enclave serving cluster: a ClusterManager, heartbeats, and key sync between identical enclaves.

After the seed's online-prediction design (Ant's shared learning on SGX) and Brave's Nitriding
(key sync among enclaves with identical measurements, heartbeats carrying a hash of the keys).
Protocol:

1. **Register.** Each :class:`EnclaveService` (an enclave runtime serving predictions) starts
   two attested channels (:mod:`atoll.tee.channel`, RA-TLS): a client port, and a peer port that
   accepts only enclaves whose quote shows *its own measurement*. It registers with the
   :class:`ClusterManager` (CM): id, both addresses, measurement, backend.
2. **Key genesis / sync.** The CM groups services by measurement. The first service of a
   group is told to make the group's *cluster key* (X25519; requests are encrypted to its public
   key and the model is stored encrypted to it, so any member can serve any request). A later
   service of the same group is told to sync from a member: it opens an attested channel to the
   member's peer port, both sides attest (mutual RA-TLS: each checks the other's quote shows
   the same measurement), and only then does the member send the key over that channel.
   Another measurement is never told to sync from this group, and its quote is refused at the
   peer port should it try (the enclave checks; the CM is not trusted with keys).
3. **Heartbeat.** Every service reports ``(id, SHA-256 of the cluster public key, load)``
   every ``interval``; the CM answers with a command. A service whose key hash differs from
   its group's is told to re-sync; one silent for ``dead_after`` seconds is dropped.
4. **Clients.** The SDK (:class:`ClusterClient`) asks the CM for the live, in-sync members of
   the *active* measurement, attests one to learn the cluster public key (its hash must equal
   the CM's), encrypts each request to it with a fresh reply key, and sends it to the next
   member (round robin); a member that fails is skipped and the request retried once on
   another, after refreshing the member list. Scaling up or down changes the member list;
   a rolling upgrade activates another measurement's group (its own key), rollback the
   previous one.

The CM runs in-process or as a network service (:class:`ClusterManagerServer`, reached through
:class:`RemoteClusterManager`, which has the CM's methods).

What each party sees: the CM sees ids, addresses, measurements, key hashes and loads — never
a key, a request or a score. The host running an enclave sees ciphertexts only (on real
hardware). A member learns the cluster key only after proving its measurement; a client
learns the cluster public key and its own scores. On the ``simulated`` backend every status and
log line is marked ``SIMULATED: NO HARDWARE PROTECTION``: the host sees everything.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from atoll import wire
from atoll.errors import AtollError, CryptoError, WireError
from atoll.tee.base import SIMULATED_MARK, EnclavePolicy, EnclaveRuntime, TeeError
from atoll.tee.channel import AttestedServer, Framed, attested_connect
from atoll.tee.envelope import unwrap, wrap_to, x25519_keypair, x25519_public

log = logging.getLogger(__name__)

REQUEST_CONTEXT = b"atoll-serving/cluster/request/1"
REPLY_CONTEXT = b"atoll-serving/cluster/reply/1"
MODEL_CONTEXT = b"atoll-serving/cluster/model/1"
MAX_ROWS = 1000


class ClusterError(AtollError):
    """The enclave cluster could not serve a request (no live member, every try failed)."""


def key_hash(public_key: bytes) -> str:
    """What a heartbeat carries about the cluster key: SHA-256 of its public key."""
    return hashlib.sha256(b"atoll-cluster-key/1" + public_key).hexdigest()


# ================================================================================ pure helpers
def seal_model(cluster_public: bytes, model: dict[str, Any]) -> bytes:
    """A model encrypted to the cluster key: only members that synced the key can load it."""
    return wrap_to(cluster_public, wire.dumps(model), MODEL_CONTEXT)


def score(model: tuple[dict[str, Any], Any], x: np.ndarray) -> np.ndarray:
    """A TEE-route model payload (:func:`atoll.tee.training.model_payload`: XGBoost or logistic
    regression), loaded once, scored on rows of its width inside the enclave."""
    from atoll.tee.training import predict_payload

    payload, loaded = model
    if x.ndim != 2 or x.shape[1] != len(payload["columns"]) or not 1 <= x.shape[0] <= MAX_ROWS:
        raise ValueError("rows of the model's width, 1 to MAX_ROWS of them")
    return predict_payload(payload, x, loaded)


# ================================================================================ cluster manager
@dataclass
class Member:
    id: str
    address: tuple[str, int]
    peer_address: tuple[str, int]
    measurement: str
    simulated: bool
    key_hash: str | None = None
    last_seen: float = 0.0
    load: int = 0


@dataclass
class Group:
    measurement: str
    key_hash: str | None = None
    genesis: str | None = None  # the member told to make the key


class ClusterManager:
    """Registry, liveness and key-sync orders of the enclave cluster (see the module docstring).

    It holds no secret: its worst failure is ordering a sync that the enclaves refuse, or
    listing a member that cannot decrypt (clients then fail over).
    """

    def __init__(self, dead_after: float = 3.0, clock: Callable[[], float] = time.monotonic):
        self.dead_after, self.clock = dead_after, clock
        self._lock = threading.Lock()
        self.members: dict[str, Member] = {}
        self.groups: dict[str, Group] = {}
        self.active: str | None = None
        self.previous: str | None = None
        self.log: list[tuple[str, str, str]] = []  # (event, member, measurement): what the CM ordered

    def register(self, mid: str, address: tuple[str, int], peer_address: tuple[str, int], measurement: str,
                 simulated: bool) -> dict | None:
        with self._lock:
            m = Member(mid, tuple(address), tuple(peer_address), measurement.lower(), bool(simulated),
                       last_seen=self.clock())
            self.members[mid] = m
            self.groups.setdefault(m.measurement, Group(m.measurement))
            if self.active is None:
                self.active = m.measurement
            self._event("register", m)
            return self._command(m)

    def heartbeat(self, mid: str, key_hash_: str | None, load: int = 0) -> dict | None:
        with self._lock:
            m = self.members.get(mid)
            if m is None:
                return {"do": "register"}
            m.last_seen, m.key_hash, m.load = self.clock(), key_hash_, int(load)
            return self._command(m)

    def deregister(self, mid: str) -> None:
        with self._lock:
            m = self.members.pop(mid, None)
            if m is not None:
                self._event("deregister", m)

    def _event(self, what: str, m: Member) -> None:
        self.log.append((what, m.id, m.measurement))
        log.info("cluster: %s %s (%s)%s", what, m.id, m.measurement[:16], f" {SIMULATED_MARK}" if m.simulated else "")

    def _live(self, m: Member) -> bool:
        return self.clock() - m.last_seen <= self.dead_after

    def _command(self, m: Member) -> dict | None:
        g = self.groups[m.measurement]
        if g.genesis is not None and (g.genesis not in self.members or not self._live(self.members[g.genesis])) \
                and g.key_hash is None:
            g.genesis = None  # the member told to make the key died first
        if m.key_hash is None:
            if g.key_hash is None:
                if g.genesis in (None, m.id):
                    g.genesis = m.id
                    self._event("genesis", m)
                    return {"do": "genesis"}
                return None  # wait for the genesis member's key
            return self._sync_order(m, g)
        if g.key_hash is None and g.genesis == m.id:
            g.key_hash = m.key_hash
            return None
        if m.key_hash != g.key_hash:
            return self._sync_order(m, g)
        return None

    def _sync_order(self, m: Member, g: Group) -> dict | None:
        sources = [s for s in self.members.values() if s.id != m.id and s.measurement == m.measurement
                   and s.key_hash == g.key_hash and self._live(s)]
        if not sources:
            return None
        src = min(sources, key=lambda s: s.load)
        self._event("sync", m)
        return {"do": "sync", "from": list(src.peer_address), "key_hash": g.key_hash}

    def live_members(self, measurement: str | None = None) -> list[Member]:
        """Members clients may use: alive, of the (active) measurement, holding the group's key."""
        with self._lock:
            want = (measurement or self.active or "").lower()
            g = self.groups.get(want)
            return [m for m in self.members.values() if m.measurement == want and self._live(m)
                    and g is not None and g.key_hash is not None and m.key_hash == g.key_hash]

    def group_key_hash(self, measurement: str | None = None) -> str | None:
        with self._lock:
            g = self.groups.get((measurement or self.active or "").lower())
            return None if g is None else g.key_hash

    def activate(self, measurement: str) -> None:
        """Rolling upgrade: clients move to another measurement's group (kept: the previous one)."""
        with self._lock:
            measurement = measurement.lower()
            if measurement not in self.groups:
                raise ClusterError(f"no enclave of measurement {measurement[:16]}... has registered")
            if measurement != self.active:
                self.previous, self.active = self.active, measurement

    def rollback(self) -> None:
        with self._lock:
            if self.previous is None:
                raise ClusterError("nothing to roll back to")
            self.active, self.previous = self.previous, self.active

    def status(self) -> dict[str, Any]:
        with self._lock:
            out = {"active": self.active, "previous": self.previous,
                   "members": [{"id": m.id, "measurement": m.measurement, "live": self._live(m),
                                "in_sync": m.key_hash is not None and m.key_hash == self.groups[m.measurement].key_hash,
                                "load": m.load} for m in self.members.values()]}
            if any(m.simulated for m in self.members.values()):
                out["mark"] = SIMULATED_MARK
            return out


class ClusterManagerServer:
    """The CM as a network service: one wire-encoded request and answer per frame over TCP.

    Requests ``{"op": register | heartbeat | deregister | live_members | group_key_hash, ...}``;
    every field is type-checked before it reaches the CM. The channel carries no secret (ids,
    addresses, measurements, key hashes); a forged registration gains nothing — members and
    clients attest every enclave themselves — but deployments should still keep the CM's port
    on the cluster's private network.
    """

    def __init__(self, cm: ClusterManager, host: str = "127.0.0.1", port: int = 0):
        import socketserver

        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve(self.request)

        self.cm = cm
        self._server = socketserver.ThreadingTCPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.address = self._server.server_address[:2]
        threading.Thread(target=self._server.serve_forever, daemon=True, name="atoll-cm").start()

    def _serve(self, raw: Any) -> None:
        chan = Framed(raw, max_frame=1 << 16)
        try:
            while True:
                req = chan.recv()
                try:
                    chan.send({"ok": self._call(req)})
                except (KeyError, TypeError, ValueError, ClusterError) as e:
                    chan.send({"error": type(e).__name__})
        except (TeeError, WireError, OSError):
            pass

    @staticmethod
    def _address(v: Any) -> tuple[str, int]:
        host, port = v
        if not isinstance(host, str) or type(port) is not int or not 0 < port < 65536:
            raise ValueError("address")
        return host, port

    def _call(self, req: Any) -> Any:
        op = req["op"]
        if op == "register":
            mid, meas = req["id"], req["measurement"]
            if not isinstance(mid, str) or not isinstance(meas, str) or len(meas) > 128:
                raise TypeError("register")
            bytes.fromhex(meas)
            return self.cm.register(mid[:64], self._address(req["address"]), self._address(req["peer_address"]),
                                    meas, bool(req["simulated"]))
        if op == "heartbeat":
            kh = req["key_hash"]
            if not isinstance(req["id"], str) or not (kh is None or isinstance(kh, str)) or type(req["load"]) is not int:
                raise TypeError("heartbeat")
            return self.cm.heartbeat(req["id"], kh, req["load"])
        if op == "deregister":
            return self.cm.deregister(str(req["id"]))
        meas = req.get("measurement")
        if meas is not None and not isinstance(meas, str):
            raise TypeError("measurement")
        if op == "live_members":
            return [{"id": m.id, "address": list(m.address), "peer_address": list(m.peer_address),
                     "measurement": m.measurement, "simulated": m.simulated, "key_hash": m.key_hash}
                    for m in self.cm.live_members(meas)]
        if op == "group_key_hash":
            return self.cm.group_key_hash(meas)
        raise KeyError(op)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class RemoteClusterManager:
    """What enclaves and clients use to reach a :class:`ClusterManagerServer` (same methods as the CM)."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0):
        self.address, self.timeout = tuple(address), timeout
        self._chan: Framed | None = None
        self._lock = threading.Lock()

    def _call(self, **req: Any) -> Any:
        import socket

        with self._lock:
            for attempt in range(2):  # one reconnect: the CM may have restarted
                try:
                    if self._chan is None:
                        self._chan = Framed(socket.create_connection(self.address, timeout=self.timeout), 1 << 20)
                    self._chan.send(req)
                    ans = self._chan.recv()
                    break
                except (OSError, TeeError):
                    if self._chan is not None:
                        self._chan.close()
                    self._chan = None
                    if attempt:
                        raise ClusterError(f"the ClusterManager at {self.address[0]}:{self.address[1]} "
                                           "does not answer") from None
        if not isinstance(ans, dict) or "ok" not in ans:
            raise ClusterError(f"the ClusterManager refused {req.get('op')}")
        return ans["ok"]

    def register(self, mid: str, address: tuple[str, int], peer_address: tuple[str, int], measurement: str,
                 simulated: bool) -> dict | None:
        return self._call(op="register", id=mid, address=list(address), peer_address=list(peer_address),
                          measurement=measurement, simulated=bool(simulated))

    def heartbeat(self, mid: str, key_hash_: str | None, load: int = 0) -> dict | None:
        return self._call(op="heartbeat", id=mid, key_hash=key_hash_, load=int(load))

    def deregister(self, mid: str) -> None:
        self._call(op="deregister", id=mid)

    def live_members(self, measurement: str | None = None) -> list[Member]:
        return [Member(d["id"], tuple(d["address"]), tuple(d["peer_address"]), d["measurement"], d["simulated"],
                       d["key_hash"]) for d in self._call(op="live_members", measurement=measurement)]

    def group_key_hash(self, measurement: str | None = None) -> str | None:
        return self._call(op="group_key_hash", measurement=measurement)


# ================================================================================ enclave service
class EnclaveService:
    """One enclave serving predictions in the cluster (see the module docstring).

    ``runtime``: its enclave runtime; ``peer_policy``: the policy peers must satisfy — by default
    exactly this runtime's measurement on its (simulated) platform; ``model_blob``: the model
    sealed to the cluster key (:func:`seal_model`; a TEE-route model payload, as ``tee_train``
    releases: XGBoost or logistic regression); the genesis member may be given the model
    in the clear instead (``model``) and then seals it itself (:attr:`sealed_model`).
    """

    def __init__(self, runtime: EnclaveRuntime, cm: "ClusterManager | RemoteClusterManager", model_blob: bytes | None = None,
                 model: dict[str, Any] | None = None, peer_policy: EnclavePolicy | None = None,
                 interval: float = 0.2, host: str = "127.0.0.1"):
        self.runtime, self.cm, self.interval = runtime, cm, interval
        self.id = uuid.uuid4().hex[:12]
        self.peer_policy = peer_policy or self._same_measurement_policy()
        self._private: bytes | None = None
        self.model: dict[str, Any] | None = None
        self._plain_model, self.sealed_model = model, model_blob
        self.served = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.server = AttestedServer(runtime, self._serve_client, host=host).start()
        self.peer_server = AttestedServer(runtime, self._serve_peer, client_policy=self.peer_policy, host=host).start()
        self._thread: threading.Thread | None = None

    def _same_measurement_policy(self) -> EnclavePolicy:
        platform = getattr(self.runtime, "platform", None)
        if platform is not None:
            return platform.policy([self.runtime.measurement])
        return EnclavePolicy(measurements=[self.runtime.measurement], backends=[self.runtime.backend])

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "EnclaveService":
        self._apply(self.cm.register(self.id, self.server.address, self.peer_server.address,
                                     self.runtime.measurement, self.runtime.simulated))
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"atoll-enclave-{self.id}")
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.heartbeat()

    def heartbeat(self) -> None:
        try:
            cmd = self.cm.heartbeat(self.id, self.key_hash, self.served)
            if cmd and cmd.get("do") == "register":
                cmd = self.cm.register(self.id, self.server.address, self.peer_server.address,
                                       self.runtime.measurement, self.runtime.simulated)
            self._apply(cmd)
        except (TeeError, OSError, CryptoError, WireError, ClusterError) as e:
            log.warning("enclave %s: heartbeat step failed: %s", self.id, type(e).__name__)

    def stop(self, deregister: bool = True) -> None:
        """Leave the cluster (``deregister``: tell the CM first, so no client is sent here)."""
        if deregister:
            self.cm.deregister(self.id)
        self._stop.set()
        self.server.close()
        self.peer_server.close()

    @property
    def key_hash(self) -> str | None:
        with self._lock:
            return None if self._private is None else key_hash(x25519_public(self._private))

    @property
    def public_key(self) -> bytes | None:
        with self._lock:
            return None if self._private is None else x25519_public(self._private)

    # ------------------------------------------------------------------ key
    def _apply(self, cmd: dict | None) -> None:
        if not cmd:
            return
        if cmd.get("do") == "genesis" and self._private is None:
            sk, pk = x25519_keypair()
            if self.sealed_model is None:
                if self._plain_model is None:
                    raise ClusterError("the genesis enclave needs the model")
                self.sealed_model = seal_model(pk, self._plain_model)
            self._set_key(sk)
        elif cmd.get("do") == "sync":
            self.sync_from(tuple(cmd["from"]))

    def sync_from(self, peer_address: tuple[str, int]) -> None:
        """Fetch the cluster key from a member over mutually attested RA-TLS (same measurement only)."""
        with attested_connect(peer_address, self.peer_policy, runtime=self.runtime, timeout=10.0) as conn:
            if conn.peer.measurement != self.runtime.measurement:
                raise TeeError("key sync offered by an enclave of another measurement")
            answer = conn.call({"op": "key"})
        sk = answer.get("key") if isinstance(answer, dict) else None
        if not isinstance(sk, bytes) or len(sk) != 32:
            raise TeeError("the peer sent no valid cluster key")
        if self.sealed_model is None and isinstance(answer.get("model"), bytes):
            self.sealed_model = answer["model"]
        self._set_key(sk)
        log.info("enclave %s synced the cluster key%s", self.id, f" {SIMULATED_MARK}" if self.runtime.simulated else "")

    def _set_key(self, sk: bytes) -> None:
        model = None
        if self.sealed_model:
            from atoll.tee.training import load_model

            payload = wire.loads(unwrap(sk, self.sealed_model, MODEL_CONTEXT))
            model = (payload, load_model(payload))
        with self._lock:
            self._private, self.model = sk, model

    def corrupt_key_for_test(self) -> None:
        """Replace the key by a random one (what a faulty memory or a botched restore would do)."""
        with self._lock:
            self._private = os.urandom(32)

    # ------------------------------------------------------------------ channels
    def _serve_peer(self, conn: Framed, client: Any) -> None:
        # AttestedServer has verified the client against peer_policy (this measurement only)
        while True:
            req = conn.recv()
            if not isinstance(req, dict) or req.get("op") != "key":
                conn.send({"error": "unknown request"})
                continue
            with self._lock:
                sk = self._private
            conn.send({"key": sk, "model": self.sealed_model} if sk else {"error": "no key yet"})

    def _serve_client(self, conn: Framed, client: Any) -> None:
        while True:
            req = conn.recv()
            op = req.get("op") if isinstance(req, dict) else None
            with self._lock:
                sk, model = self._private, self.model
            if op == "public_key":
                conn.send({"public_key": None if sk is None else x25519_public(sk),
                           "mark": self.runtime.mark})
            elif op == "predict" and sk is not None and model is not None:
                try:
                    body = wire.loads(unwrap(sk, req["sealed"], REQUEST_CONTEXT), max_bytes=64 << 20)
                    scores = score(model, np.asarray(body["x"], dtype=np.float64))
                    reply = wrap_to(bytes(body["reply"]), wire.dumps(scores), REPLY_CONTEXT)
                except (KeyError, TypeError, ValueError, CryptoError, WireError):
                    conn.send({"error": "bad request"})
                    continue
                self.served += 1
                conn.send({"sealed": reply, "mark": self.runtime.mark})
            else:
                conn.send({"error": "not ready" if sk is None else "unknown request"})


# ================================================================================ SDK client
class ClusterClient:
    """The SDK: hides the cluster behind ``predict(x)`` (see the module docstring, step 4)."""

    def __init__(self, cm: "ClusterManager | RemoteClusterManager", policy: EnclavePolicy, timeout: float = 5.0):
        self.cm, self.policy, self.timeout = cm, policy, timeout
        self._rr = itertools.count()
        self._conns: dict[str, Any] = {}
        self._public: bytes | None = None
        self._hash: str | None = None
        self._lock = threading.Lock()
        self.retries = 0

    def _connect(self, m: Member) -> Any:
        conn = self._conns.get(m.id)
        if conn is None:
            conn = self._conns[m.id] = attested_connect(m.address, self.policy, timeout=self.timeout)
        return conn

    def _drop(self, mid: str) -> None:
        conn = self._conns.pop(mid, None)
        if conn is not None:
            conn.close()

    def _cluster_key(self, members: list[Member]) -> bytes:
        want = self.cm.group_key_hash()
        if self._public is not None and self._hash == want:
            return self._public
        for m in members:
            try:
                pk = self._connect(m).call({"op": "public_key"})["public_key"]
            except (TeeError, OSError, KeyError, TypeError):
                self._drop(m.id)
                continue
            if isinstance(pk, bytes) and key_hash(pk) == want:
                self._public, self._hash = pk, want
                return pk
        raise ClusterError("no attested member holds the cluster key the ClusterManager announces")

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        with self._lock:
            last: Exception | None = None
            tried: set[str] = set()
            for attempt in range(2):  # the first try and one retry on another member
                members = [m for m in self.cm.live_members() if m.id not in tried]
                if not members:
                    break
                m = members[next(self._rr) % len(members)]
                try:
                    pk = self._cluster_key(members)
                    reply_sk, reply_pk = x25519_keypair()
                    sealed = wrap_to(pk, wire.dumps({"x": x, "reply": reply_pk}), REQUEST_CONTEXT)
                    ans = self._connect(m).call({"op": "predict", "sealed": sealed})
                    return np.asarray(wire.loads(unwrap(reply_sk, ans["sealed"], REPLY_CONTEXT)))
                except (TeeError, OSError, CryptoError, WireError, KeyError, TypeError) as e:
                    last = e
                    tried.add(m.id)
                    self._drop(m.id)
                    self.retries += attempt == 0
            raise ClusterError(f"no enclave of the cluster answered ({len(tried)} tried"
                               + (f"; last: {type(last).__name__}" if last else "") + ")")

    def close(self) -> None:
        for mid in list(self._conns):
            self._drop(mid)


__all__ = ["ClusterClient", "ClusterError", "ClusterManager", "ClusterManagerServer", "EnclaveService",
           "RemoteClusterManager", "key_hash", "score", "seal_model"]
