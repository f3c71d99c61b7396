"""Horizontal federated learning: the ``server`` and ``client`` roles.

Protocol (one round ``r``; McMahan et al., "Communication-efficient learning of
deep networks from decentralized data", AISTATS 2017, with the options below):

1. The server's strategy samples clients and the training config.
2. Server -> each sampled client: ``fit`` with the global weights ``w``.
3. Each client trains locally from ``w`` and forms its update ``d = w_local - w``
   with weight ``n`` (its sample count). With DP it clips ``d`` to norm ``C``
   (weight 1, and, for adaptive clipping, the bit ``|d| <= C``); with
   client-side noise it adds its share of Gaussian noise.
4. Plain: the client sends ``(d, n, loss)``. Secure aggregation: the client
   sends nothing in the clear; the vector ``[n d, n, n loss, bit]`` goes through
   :mod:`atoll.secure.secagg` (keys set up every round) or, with
   ``SecAggConfig(epoch_rounds=E)``, :mod:`atoll.secure.secagg_multiround` (keys and
   seeds set up once per ``E`` rounds), and the server gets only the sum over clients.
5. The server's strategy turns ``sum n d`` and ``sum n`` (linear strategies) or
   the single updates (robust strategies, plain mode only) into the next ``w``;
   with DP the server adds Gaussian noise to the sum (unless the clients did;
   then it adds only the noise shares of clients that dropped), divides by the
   expected client count and updates the clip norm and the accountant's epsilon.
6. Optionally a sample of clients evaluates ``w`` on local test data, and the
   server evaluates it on its own test set; metrics go to the history.

What each party sees:
- **Server**: the global model, the clients' updates in plain mode, only the
  (noised) sum in secure-aggregation mode, evaluation metrics.
- **Client**: the global model each round it is sampled, its own data.

The same :class:`FedClient` and :class:`FedServer` run in deployment (over a
:class:`~atoll.federation.Context`: :func:`run_server`, :func:`run_client`) and in
simulation (:mod:`atoll.ml.horizontal.simulation`); only the :class:`Channel`
that carries their messages differs.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from atoll.crypto import dp as dpm
from atoll.errors import ConfigError, DataError, FederationError, FederationTimeout, PeerFailed
from atoll.federation import Context
from atoll.ml.horizontal.models import Model, flatten, unflatten
from atoll.ml.horizontal.strategies import FedAvg
from atoll.secure import secagg_multiround as mr
from atoll.secure.secagg import SecAggClient, SecAggConfig, SecAggServer

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data and parameters

@dataclass
class ClientData:
    """One client's local data: training rows and optional local test rows."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @classmethod
    def of(cls, data: Any) -> "ClientData":
        if isinstance(data, ClientData):
            return data
        if isinstance(data, Mapping):
            return cls(**data)
        if isinstance(data, (tuple, list)) and len(data) in (2, 4):
            return cls(*data)
        raise DataError("client data must be a ClientData, a (x, y) or (x, y, x_test, y_test) tuple, "
                        "or a dict with those keys")


@dataclass
class DPConfig:
    """Client-level DP-FedAvg (McMahan et al. 2018; adaptive clipping: Andrew et al. 2021).

    ``noise_at="server"`` adds ``N(0, (z C)^2)`` to the sum on the server;
    ``"clients"`` has each sampled client add ``N(0, (z C)^2 / m)`` (use with
    secure aggregation, so the server never sees an un-noised sum). ``seed``
    fixes the noise (tests only; default OS entropy).
    """

    noise_multiplier: float = 1.0
    clip_norm: float = 1.0
    delta: float = 1e-5
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_noise_std: float | None = None
    noise_at: str = "server"
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.noise_at not in ("server", "clients"):
            raise ConfigError("DPConfig.noise_at must be 'server' or 'clients'")
        if self.noise_multiplier < 0 or self.clip_norm <= 0:
            raise ConfigError("noise_multiplier must be >= 0 and clip_norm > 0")


@dataclass
class History:
    """Per-round metrics: ``rounds[i]`` is a dict (``round``, ``train_loss``, ``eval_*``, ...)."""

    rounds: list[dict[str, Any]] = field(default_factory=list)

    def metric(self, name: str) -> list[Any]:
        return [r.get(name) for r in self.rounds]

    def __len__(self) -> int:
        return len(self.rounds)


def client_rng(seed: int, rnd: int, name: str) -> np.random.Generator:
    """The generator a client trains with in round ``rnd`` (reproducible per client and round)."""
    return np.random.default_rng([seed, rnd, zlib.crc32(name.encode())])


# --------------------------------------------------------------------------- client role

class FedClient:
    """Client role: trains the model on its data when asked; answers evaluation and secure-aggregation stages."""

    def __init__(self, name: str, model: Model, data: ClientData | tuple):
        self.name = name
        self.model = model
        self.data = ClientData.of(data)
        self._sa: SecAggClient | None = None
        self._mr: mr.MultiRoundSecAggClient | None = None  # multi-round secure aggregation: kept all run

    def train(self, msg: Mapping) -> dict[str, Any]:
        """Local training for a ``fit`` message; returns the update and what goes with it."""
        rnd, cfg = int(msg["round"]), dict(msg["config"])
        start = [np.asarray(w) for w in msg["weights"]]
        self.model.set_weights(start)
        metrics = self.model.fit(self.data.x, self.data.y, cfg, client_rng(int(cfg.get("seed", 0)), rnd, self.name))
        delta = flatten(self.model.get_weights()) - flatten(start)
        n = float(len(self.data.y))
        loss = float(metrics.get("loss", 0.0))
        dp = msg.get("dp")
        bit = 0.0
        if dp:
            clip = float(dp["clip"])
            delta, norm = dpm.clip_l2(delta, clip)
            bit = 1.0 if norm <= clip else 0.0
            n = 1.0
            std, bstd = float(dp.get("noise_std", 0.0)), float(dp.get("count_noise_std", 0.0))
            if std or bstd:
                seed = None if dp.get("seed") is None else int(dp["seed"]) + zlib.crc32(self.name.encode())
                rng = dpm.noise_rng(seed)
                delta = delta + dpm.gaussian_noise(delta.shape, std, rng)
                bit += float(dpm.gaussian_noise(1, bstd, rng)[0])
        return {"update": delta, "num_examples": n, "loss": loss, "bit": bit}

    @staticmethod
    def secure_vector(trained: Mapping[str, Any]) -> np.ndarray:
        """What a client feeds to secure aggregation: ``[n d, n, n loss, bit]``."""
        n = float(trained["num_examples"])
        return np.concatenate([n * np.asarray(trained["update"]),
                               [n, n * float(trained["loss"]), float(trained["bit"])]])

    @classmethod
    def secagg_client(cls, name: str, trained: Mapping, advertise: Mapping) -> SecAggClient:
        """The secure-aggregation client of one round: this round's training result as its
        input, encoded as the server's advertise message says."""
        return SecAggClient(name, cls.secure_vector(trained),
                            SecAggConfig(bound=float(advertise["bound"]), frac_bits=int(advertise["frac_bits"])))

    def multiround_client(self) -> mr.MultiRoundSecAggClient:
        """This client's multi-round secure-aggregation state (keys, seeds, held shares), made once."""
        if self._mr is None:
            self._mr = mr.MultiRoundSecAggClient(self.name)
        return self._mr

    def handle(self, msg: Mapping) -> dict[str, Any]:
        kind = msg.get("type")
        if kind == "fit":
            trained = self.train(msg)
            if msg.get("stage") == "advertise":  # secure aggregation: nothing leaves in the clear
                self._sa = self.secagg_client(self.name, trained, msg)
                return self._sa.handle(msg)
            if msg.get("stage") in mr.FIRST_STAGES:  # multi-round secure aggregation
                return self.multiround_client().handle(msg, self.secure_vector(trained))
            return trained
        if kind == "evaluate":
            self.model.set_weights([np.asarray(w) for w in msg["weights"]])
            d = self.data
            x, y = (d.x_test, d.y_test) if d.x_test is not None else (d.x, d.y)
            return {"num_examples": float(len(y)), "metrics": self.model.evaluate(x, y)}
        if msg.get("stage") in mr.STAGES and "epoch" in msg:
            return self.multiround_client().handle(msg)
        if "stage" in msg:
            if self._sa is None:
                raise FederationError(f"{self.name}: secure-aggregation stage {msg['stage']!r} before fit")
            reply = self._sa.handle(msg)
            if msg["stage"] == "unmask":
                self._sa = None
            return reply
        raise FederationError(f"{self.name}: unknown message type {kind!r}")


# --------------------------------------------------------------------------- channels

class Channel(Protocol):
    """How the server reaches clients: ``call(stage, {client: msg}) -> {client: reply}`` (dropped clients absent)."""

    clients: list[str]

    def call(self, stage: str, msgs: dict[str, dict]) -> dict[str, dict]: ...

    def close(self) -> None: ...


class ContextChannel:
    """Channel over a federation :class:`Context` (deployment, or launch(mode='threads')).

    Over a transport that knows who is connected (the dial-in server,
    :mod:`atoll.federation.dialin`), :meth:`available` gives the clients connected now and
    restarts the exchange with a client that reconnected; a client that is gone when it is
    sent to, or does not answer within ``stage_timeout`` (the round timeout), is a dropout.
    """

    def __init__(self, ctx: Context, stage_timeout: float = 60.0):
        self.ctx = ctx
        self.clients = ctx.parties_of("client")
        self.stage_timeout = stage_timeout
        self._seq = {c: 0 for c in self.clients}
        self._session: dict[str, int] = {}

    def available(self, minimum: int, timeout: float) -> list[str]:
        """The clients to sample from this round: all of the job's, or over a dial-in transport
        those connected now, once at least ``minimum`` are (waiting up to ``timeout`` s)."""
        transport = self.ctx.transport
        wait = getattr(transport, "wait_sessions", None)
        if wait is None:
            return self.clients
        present = {c: s for c, s in wait(minimum, timeout).items() if c in self._seq}
        if len(present) < minimum:
            raise FederationError(f"only {len(present)} clients were connected after {timeout:g} s; a round "
                                  f"needs {minimum} (min_clients / the strategy's min_fit_clients)")
        for c, session in present.items():
            if self._session.get(c) != session:  # joined, or came back: its exchange starts again
                self._session[c], self._seq[c] = session, 0
                transport.begin_session(c, session)
        return sorted(present)

    def call(self, stage: str, msgs: dict[str, dict]) -> dict[str, dict]:
        ctx = self.ctx
        sent = []
        for c, m in msgs.items():
            try:
                with ctx.scope("m", self._seq[c]):
                    ctx.send(c, "msg", m)
                sent.append(c)
            except PeerFailed as e:
                log.info("client %s dropped at stage %s: %s", c, stage, e)
                self._seq[c] += 1
        deadline = time.monotonic() + self.stage_timeout
        out = {}
        for c in sent:
            try:
                with ctx.scope("m", self._seq[c]):
                    out[c] = ctx.recv(c, "reply", timeout=max(deadline - time.monotonic(), 0.0))
            except (FederationTimeout, PeerFailed) as e:
                log.info("client %s dropped at stage %s: %s", c, stage, e)
            self._seq[c] += 1
        return out

    def close(self) -> None:
        for c in self.clients:
            try:
                with self.ctx.scope("m", self._seq[c]):
                    self.ctx.send(c, "msg", {"type": "stop"})
            except PeerFailed:
                pass  # gone (a dial-in client that left): it has nothing to stop


def run_client(ctx: Context, model: Model, data: Any, drop_at: tuple[int, str] | None = None) -> str:
    """Client party entry point: answer the server until it says stop.

    ``drop_at=(round, stage)`` makes this client vanish at that point (tests of dropouts;
    stages: ``fit``/``advertise``, ``share``, ``masked``, ``unmask``, ``evaluate``).
    """
    client = FedClient(ctx.party, model, data)
    seq, rnd = 0, -1
    while True:
        with ctx.scope("m", seq):
            msg = ctx.recv("server", "msg")
        if msg.get("type") == "stop":
            return "done"
        rnd = int(msg.get("round", rnd))
        if drop_at is not None and drop_at[0] == rnd and drop_at[1] in (msg.get("type"), msg.get("stage")):
            return "dropped"
        reply = client.handle(msg)
        with ctx.scope("m", seq):
            ctx.send("server", "reply", reply)
        seq += 1


def run_server(ctx: Context, weights: list[np.ndarray], rounds: int, strategy: FedAvg | None = None,
               secure_aggregation: SecAggConfig | bool | None = None, dp: DPConfig | None = None,
               evaluate_fn: Callable[[list[np.ndarray]], dict] | None = None, seed: int = 0,
               stage_timeout: float | None = None, min_clients: int = 1,
               wait_timeout: float = 600.0) -> tuple[list[np.ndarray], History]:
    """Server party entry point: run ``rounds`` rounds with the job's ``client`` parties.

    ``stage_timeout`` is the round timeout (per stage with secure aggregation): clients that
    have not answered by then are dropouts. ``min_clients`` and ``wait_timeout``: see
    :class:`FedServer`."""
    server = FedServer(weights, rounds, strategy, secure_aggregation, dp, evaluate_fn, seed,
                       min_clients=min_clients, wait_timeout=wait_timeout)
    timeout = stage_timeout if stage_timeout is not None else (
        server.secagg.stage_timeout if server.secagg else 600.0)
    channel = ContextChannel(ctx, timeout)
    try:
        return server.run(channel)
    finally:
        channel.close()


# --------------------------------------------------------------------------- server role

class FedServer:
    """Server role: samples clients, aggregates with its strategy (optionally securely, with DP).

    Clients that do not answer are dropouts. A round whose answers come from fewer than
    ``min_clients`` clients is not aggregated (the model stays; the round's record says
    ``aggregated: False``); a round no client answers at all stops the job. Over a channel that
    knows who is connected (dial-in), a round starts once ``max(min_clients, the strategy's
    min_fit_clients)`` clients are, waiting up to ``wait_timeout`` s.
    """

    def __init__(self, weights: list[np.ndarray], rounds: int, strategy: FedAvg | None = None,
                 secure_aggregation: SecAggConfig | bool | None = None, dp: DPConfig | None = None,
                 evaluate_fn: Callable[[list[np.ndarray]], dict] | None = None, seed: int = 0,
                 min_clients: int = 1, wait_timeout: float = 600.0):
        if min_clients < 1:
            raise ConfigError("min_clients must be at least 1")
        self.min_clients = int(min_clients)
        self.wait_timeout = float(wait_timeout)
        self.template = [np.asarray(w) for w in weights]
        self.rounds = int(rounds)
        self.strategy = strategy or FedAvg()
        self.secagg = SecAggConfig() if secure_aggregation is True else (secure_aggregation or None)
        self.dp = dp
        self.evaluate_fn = evaluate_fn
        self.seed = seed
        if self.secagg and not self.strategy.linear:
            raise ConfigError(f"{type(self.strategy).__name__} needs each client's update, which secure "
                              "aggregation hides; use FedAvg/FedProx/FedAdam/FedYogi/FedAdagrad with it")
        if dp and not self.strategy.linear:
            raise ConfigError("DP-FedAvg needs a linear strategy (FedAvg family)")

    def run(self, channel: Channel) -> tuple[list[np.ndarray], History]:
        rng = np.random.default_rng(self.seed)
        w = flatten(self.template)
        self.strategy.initialize(w)
        history = History()
        clip = self.dp.clip_norm if self.dp else 0.0
        accountant = dpm.PrivacyAccountant(self.dp.delta) if self.dp and self.dp.noise_multiplier > 0 else None
        server_noise = dpm.noise_rng(self.dp.seed) if self.dp else None
        # the multi-round protocol keeps its epoch (keys, who holds whose shares) from round to round
        multiround = mr.MultiRoundSecAggServer(self.secagg) if self.secagg and self.secagg.epoch_rounds > 1 else None
        for rnd in range(self.rounds):
            t0 = time.perf_counter()
            available = getattr(channel, "available", None)  # who is connected (dial-in); else everyone
            pool = channel.clients if available is None else available(
                max(self.min_clients, int(getattr(self.strategy, "min_fit_clients", 1))), self.wait_timeout)
            selected, cfg = self.strategy.configure_fit(rnd, pool, rng)
            cfg.setdefault("seed", self.seed)
            msg: dict[str, Any] = {"type": "fit", "round": rnd, "weights": unflatten(w, self.template),
                                   "config": cfg}
            record: dict[str, Any] = {"round": rnd, "clients": len(selected)}
            m = len(selected)
            z = zb = 0.0
            if self.dp:
                # clip-count noise (adaptive clipping only): Andrew et al. suggest sigma_b = m / 20
                zb = self.dp.count_noise_std if self.dp.count_noise_std is not None else (
                    m / 20 if self.dp.adaptive else 0.0)
                z = (dpm.adaptive_noise_multiplier(self.dp.noise_multiplier, zb) if self.dp.adaptive
                     else self.dp.noise_multiplier)
                dpmsg = {"clip": clip}
                if self.dp.noise_at == "clients":
                    dpmsg.update(noise_std=z * clip / np.sqrt(m), count_noise_std=zb / np.sqrt(m))
                    if self.dp.seed is not None:
                        dpmsg["seed"] = self.dp.seed + rnd
                msg["dp"] = dpmsg

            if self.secagg:
                res = (multiround or SecAggServer(self.secagg)).aggregate(channel.call, selected, len(w) + 3, rnd,
                                                                          first={c: msg for c in selected})
                s = res.sum
                update_sum, weight_sum, loss_sum, bits = s[:-3], float(s[-3]), float(s[-2]), float(s[-1])
                record["dropped"] = sum(len(v) for v in res.dropped.values())
                contributed = len(res.contributors)
                record["secagg_server_s"], record["secagg_call_s"] = res.server_s, res.call_s
                record["train_loss"] = loss_sum / weight_sum if weight_sum else None
                replies = None
            else:
                replies = channel.call("fit", {c: msg for c in selected})
                if not replies:
                    raise FederationError(f"round {rnd}: no sampled client answered; nothing to aggregate")
                record["dropped"] = m - len(replies)
                contributed = len(replies)
                names = sorted(replies)
                ups = [np.asarray(replies[c]["update"], dtype=np.float64) for c in names]
                ns = [float(replies[c]["num_examples"]) for c in names]
                if any(u.shape != w.shape for u in ups):
                    raise FederationError(f"round {rnd}: a client sent an update of the wrong size")
                if self.strategy.linear:  # (DP needs a linear strategy); robust ones look at each update
                    update_sum = np.tensordot(np.asarray(ns), np.stack(ups), axes=1)
                weight_sum = float(sum(ns))
                bits = float(sum(replies[c]["bit"] for c in names))
                record["train_loss"] = float(np.dot(ns, [replies[c]["loss"] for c in names]) / weight_sum)

            if contributed < self.min_clients:
                record["aggregated"] = False  # too few answers: the model stays as it was
                log.warning("round %d: %d clients answered, fewer than min_clients=%d; not aggregated",
                            rnd, contributed, self.min_clients)
            elif self.dp:
                if self.dp.noise_at == "server":
                    update_sum = update_sum + dpm.gaussian_noise(update_sum.shape, z * clip, server_noise)
                    bits += float(dpm.gaussian_noise(1, zb, server_noise)[0])
                elif contributed < m:
                    # the noise shares of clients that dropped are missing from the sum: the server adds
                    # them, so the released model carries the accounted variance (z C)^2 (a server that
                    # skips this step would see less noise; it is the clients' noise it cannot remove)
                    missing = (m - contributed) / m
                    update_sum = update_sum + dpm.gaussian_noise(update_sum.shape, z * clip * np.sqrt(missing),
                                                                 server_noise)
                    bits += float(dpm.gaussian_noise(1, zb * np.sqrt(missing), server_noise)[0])
                    record["dp_noise_topped_up"] = missing
                w = self.strategy.aggregate_sum(rnd, w, update_sum, float(m))
                record["clip_norm"] = clip
                if self.dp.adaptive:
                    clip = dpm.adaptive_clip(clip, bits / m, self.dp.target_quantile, self.dp.clip_lr)
                if accountant is not None:
                    record["epsilon"] = accountant.step(self.dp.noise_multiplier, m / len(channel.clients))
                    record["delta"] = self.dp.delta
            elif self.strategy.linear:  # always so with secure aggregation (checked at start)
                w = self.strategy.aggregate_sum(rnd, w, update_sum, weight_sum)
            else:
                w = self.strategy.aggregate_updates(rnd, w, ups, ns)

            weights = unflatten(w, self.template)
            ev = self.strategy.configure_evaluate(rnd, pool, rng)
            if ev:
                er = channel.call("evaluate", {c: {"type": "evaluate", "round": rnd, "weights": weights} for c in ev})
                tot = sum(float(r["num_examples"]) for r in er.values())
                if tot:
                    keys = set.intersection(*(set(r["metrics"]) for r in er.values()))
                    for k in sorted(keys):
                        record[f"eval_{k}"] = sum(float(r["num_examples"]) * float(r["metrics"][k])
                                                  for r in er.values()) / tot
            if self.evaluate_fn is not None:
                for k, v in self.evaluate_fn(weights).items():
                    record[f"server_{k}"] = float(v)
            record["time_s"] = time.perf_counter() - t0
            history.rounds.append(record)
            log.info("round %d: %s", rnd, record)
        return unflatten(w, self.template), history
