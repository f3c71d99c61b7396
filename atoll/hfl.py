"""Horizontal FL across machines: one server that clients dial out to (cross-device, cross-silo).

    # the server's side (or `atoll hfl server --config server.yaml`)
    from atoll.federation.certs import TlsConfig
    from atoll.federation.dialin import DialInServer
    from atoll.hfl import HflServer, ModelSpec
    from atoll.ml.horizontal import FedAvg

    endpoint = DialInServer(TlsConfig.load("certs", "server"), listen="0.0.0.0:7100").start()
    server = HflServer(endpoint, ModelSpec(kind="logistic_regression", n_features=64, n_classes=10),
                       clients=[f"client_{i:02d}" for i in range(20)], rounds=20, strategy=FedAvg())
    weights, history = server.run()
    endpoint.stop()

    # each client (or `atoll hfl client --server HOST:7100 --data mine.csv --certs certs --name client_07`)
    from atoll.hfl import HflClient
    result = HflClient("10.0.0.1:7100", (x, y), tls=TlsConfig.load("certs", "client_07")).run()

The server runs :class:`~atoll.ml.horizontal.roles.FedServer` and each client
:func:`~atoll.ml.horizontal.roles.run_client`, unchanged, over the dial-in transport
(:mod:`atoll.federation.dialin`: what crosses the wire and what each party sees is stated
there and in :mod:`atoll.ml.horizontal.roles`). The job's ``info`` tells a joining client the
model to build — a kind from the closed list :data:`MODELS`, never code. The roster is fixed when
the job starts (a token issued later lets its client into the next job). A client that drops
or loses its connection reconnects and rejoins at a later round; after the last round the
server sends the final weights to the clients still connected.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from atoll.errors import AuthError, ConfigError, DataError, FederationError, FederationTimeout, PeerFailed
from atoll.federation import Context, failure_summary
from atoll.federation.certs import TlsConfig
from atoll.federation.dialin import DialInClient, DialInServer, JobEnded

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the model a job trains

class ModelSpec(BaseModel):
    """The model of a job, as the server tells it to clients (``info["model"]``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["logistic_regression", "linear_regression", "mlp"]
    n_features: int = Field(ge=1, le=1_000_000)
    n_classes: int = Field(2, ge=2, le=100_000)  # classification; an mlp with n_classes=1 is not offered
    hidden: list[int] = Field(default_factory=lambda: [32], max_length=16)
    l2: float = Field(0.0, ge=0.0)
    task: Literal["classification", "regression"] = "classification"
    #: the feature columns, in order (clients select them from their files); None = all but the label
    features: list[str] | None = Field(None, max_length=100_000)

    def build(self) -> Any:
        """A fresh model of this spec (see :data:`MODELS`)."""
        return MODELS[self.kind](self)


def _mlp(spec: ModelSpec) -> Any:
    try:
        from atoll.ml.horizontal.torch_model import TorchModel, mlp
    except ImportError as e:
        raise ConfigError(f"an mlp needs PyTorch ({e}): pip install 'atoll[torch]'") from None
    outputs = spec.n_classes if spec.task == "classification" else 1
    return TorchModel(lambda: mlp(spec.n_features, outputs, tuple(spec.hidden)), task=spec.task)


def _logistic(spec: ModelSpec) -> Any:
    from atoll.ml.horizontal.models import LogisticRegression

    return LogisticRegression(spec.n_features, spec.n_classes, l2=spec.l2)


def _linear(spec: ModelSpec) -> Any:
    from atoll.ml.horizontal.models import LinearRegression

    return LinearRegression(spec.n_features, l2=spec.l2)


#: the models a dial-in job may name (a closed list: a client builds only these)
MODELS: dict[str, Callable[[ModelSpec], Any]] = {"logistic_regression": _logistic, "linear_regression": _linear,
                                                  "mlp": _mlp}


def load_xy(path: str | Path, label: str = "y", features: list[str] | None = None,
            drop: Iterable[str] = (), classification: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A client's rows from a CSV or Parquet file: ``(x, y)``; ``features`` picks and orders the columns."""
    import pandas as pd

    f = Path(path)
    if not f.is_file():
        raise DataError(f"data file {str(f)!r} does not exist")
    try:
        df = pd.read_parquet(f) if f.suffix in (".parquet", ".pq") else pd.read_csv(f)
    except ImportError as e:
        raise ConfigError(f"reading Parquet needs pyarrow ({e}); pip install pyarrow") from None
    if label not in df.columns:
        raise DataError(f"label column {label!r} is not in {f.name} (columns: {list(df.columns)[:10]}...)")
    y = df.pop(label).to_numpy()
    if features is not None:
        missing = [c for c in features if c not in df.columns]
        if missing:
            raise DataError(f"{f.name} lacks the job's feature columns {missing[:10]}")
        df = df[features]
    else:
        df = df.drop(columns=[c for c in drop if c in df.columns])
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise DataError(f"columns {bad[:10]} of {f.name} are not numeric; encode them first or drop them (--drop)")
    return df.to_numpy(np.float64), (y.astype(np.int64) if classification else y.astype(np.float64))


# --------------------------------------------------------------------------- server

class HflServer:
    """The horizontal server of one dial-in job, on a :class:`DialInServer` it is given (a node's,
    or one made by :func:`serve`).

    ``clients``: the job's roster (who may join). ``min_clients``: a round waits for that many to
    be connected and aggregates only if that many answered (see
    :class:`~atoll.ml.horizontal.roles.FedServer`); ``round_timeout``: seconds a round (a stage,
    with secure aggregation) waits for answers; ``wait_timeout``: seconds a round waits for
    ``min_clients`` to be connected before the job fails.
    """

    def __init__(self, endpoint: DialInServer, model: ModelSpec | Mapping[str, Any], clients: Iterable[str],
                 rounds: int, *, strategy: Any = None, secure_aggregation: Any = None, dp: Any = None,
                 job_id: str = "hfl", min_clients: int = 1, round_timeout: float = 120.0,
                 wait_timeout: float = 600.0, test_data: tuple[np.ndarray, np.ndarray] | None = None,
                 evaluate_fn: Callable[[list[np.ndarray]], dict] | None = None, seed: int = 0):
        from atoll.ml.horizontal.roles import FedServer

        self.endpoint = endpoint
        self.spec = model if isinstance(model, ModelSpec) else ModelSpec(**model)
        self.clients = sorted(set(clients))
        if not self.clients:
            raise ConfigError("a dial-in job needs a roster of clients (names from their certificates or tokens)")
        self.job_id = job_id
        self.round_timeout = round_timeout
        if evaluate_fn is None and test_data is not None:
            xt, yt = test_data

            def evaluate_fn(weights: list[np.ndarray]) -> dict:
                m = self.spec.build()
                m.set_weights(weights)
                return m.evaluate(xt, yt)

        self.server = FedServer(self.spec.build().get_weights(), rounds, strategy, secure_aggregation, dp,
                                evaluate_fn, seed, min_clients=min_clients, wait_timeout=wait_timeout)

    def run(self, on_stage: Callable[[dict], None] | None = None) -> tuple[list[np.ndarray], Any]:
        """Open the job, train every round, send the final weights, close the job:
        ``(weights, history)``. ``on_stage({round, stage, asked, answered, seconds})`` is
        called after each stage of each round."""
        from atoll.ml.horizontal.roles import ContextChannel

        parties = {self.endpoint.party: "server", **{c: "client" for c in self.clients}}
        transport = self.endpoint.open_job(self.job_id, parties, info={"model": self.spec.model_dump()})
        ctx = Context(self.endpoint.party, parties, transport, timeout=self.round_timeout)
        channel = ContextChannel(ctx, self.round_timeout)
        if on_stage is not None:
            channel = _Reporting(channel, on_stage)
        try:
            weights, history = self.server.run(channel)
            with ctx.scope("final"):
                for c in self.clients:
                    try:
                        ctx.send(c, "weights", [np.asarray(w) for w in weights])
                    except PeerFailed:
                        pass  # not connected now: it keeps what it had
            return weights, history
        except BaseException as e:
            transport.abort(failure_summary(e))
            raise
        finally:
            try:
                channel.close()
            finally:
                self.endpoint.close_job(self.job_id)


class _Reporting:
    """A channel that reports each stage it ran (the CLI's progress lines)."""

    def __init__(self, inner: Any, on_stage: Callable[[dict], None]):
        self.inner, self.on_stage = inner, on_stage
        self.clients = inner.clients

    def available(self, minimum: int, timeout: float) -> list[str]:
        return self.inner.available(minimum, timeout)

    def call(self, stage: str, msgs: dict[str, dict]) -> dict[str, dict]:
        t0 = time.perf_counter()
        out = self.inner.call(stage, msgs)
        rnd = next((int(m["round"]) for m in msgs.values() if "round" in m), None)
        self.on_stage({"round": rnd, "stage": stage, "asked": len(msgs), "answered": len(out),
                       "seconds": time.perf_counter() - t0})
        return out

    def close(self) -> None:
        self.inner.close()


@dataclass
class HflResult:
    """What a client did: sessions it had, rounds it trained, the final weights (if it got them)."""

    sessions: int = 0
    rounds_trained: int = 0
    weights: list[np.ndarray] | None = None
    ended: str = ""
    per_session: list[int] = field(default_factory=list)


class _Counting:
    """The client's model, counting local training runs (rounds this client trained)."""

    def __init__(self, model: Any):
        self.model, self.fits = model, 0

    def get_weights(self) -> list[np.ndarray]:
        return self.model.get_weights()

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.model.set_weights(weights)

    def fit(self, x: np.ndarray, y: np.ndarray, config: Mapping[str, Any], rng: np.random.Generator) -> dict:
        out = self.model.fit(x, y, config, rng)
        self.fits += 1
        return out

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict:
        return self.model.evaluate(x, y)


class HflClient:
    """A client of a dial-in job: connects, trains when asked, reconnects after a lost connection.

    ``data``: ``(x, y)`` / ``(x, y, x_test, y_test)`` / a ``ClientData``, or a function
    ``ModelSpec -> data`` (to pick the columns the job names). ``model_fn(spec)`` builds the
    model (default: ``spec.build()``). With ``reconnect`` a lost connection is retried for up
    to ``retry_for`` s; the job's end, or a refusal (bad certificate or token), ends the run.
    """

    def __init__(self, server: str, data: Any, *, tls: TlsConfig | None = None, token: str | None = None,
                 ca_cert: bytes | None = None, server_name: str = "server", job_id: str = "hfl",
                 model_fn: Callable[[ModelSpec], Any] | None = None, reconnect: bool = True,
                 retry_for: float = 600.0, connect_timeout: float = 60.0, idle_timeout: float = 86_400.0,
                 buffer_bytes: int = 64 << 20):
        self.endpoint = DialInClient(server, tls=tls, token=token, ca_cert=ca_cert, server_name=server_name,
                                     buffer_bytes=buffer_bytes, connect_timeout=connect_timeout)
        self.party = self.endpoint.party
        self.data, self.job_id = data, job_id
        self.model_fn = model_fn or (lambda spec: spec.build())
        self.reconnect, self.retry_for, self.idle_timeout = reconnect, retry_for, idle_timeout

    def _spec(self, info: Mapping[str, Any]) -> ModelSpec:
        try:
            return ModelSpec(**dict(info.get("model") or {}))
        except (ValidationError, TypeError) as e:
            raise ConfigError(f"the server named a model this client does not build: {e}") from None

    def run(self) -> HflResult:
        from atoll.ml.horizontal.roles import ClientData, run_client

        result = HflResult()
        lost_since = time.monotonic()  # also before the first session: the server may start later
        delay = 0.2
        try:
            while True:
                try:
                    transport = self.endpoint.open_job(self.job_id)
                except JobEnded as e:
                    result.ended = str(e)
                    return result
                except AuthError:
                    raise
                except FederationError:
                    if not self.reconnect or time.monotonic() - lost_since > self.retry_for:
                        raise
                    time.sleep(delay)
                    delay = min(2 * delay, 5.0)
                    continue
                result.sessions += 1
                delay = 0.2
                ctx = Context(self.party, transport.parties_map, transport, timeout=self.idle_timeout)
                try:
                    spec = self._spec(transport.info)
                    data = ClientData.of(self.data(spec) if callable(self.data) else self.data)
                    shape = np.shape(data.x)
                    if len(shape) != 2 or shape[1] != spec.n_features:
                        raise DataError(f"the job's model takes {spec.n_features} features; this client's data "
                                        f"has shape {shape}")
                    model = _Counting(self.model_fn(spec))
                    try:
                        run_client(ctx, model, data)
                        with ctx.scope("final"):
                            result.weights = [np.asarray(w) for w in ctx.recv("server", "weights", timeout=30.0)]
                        result.ended = "the job finished"
                        return result
                    finally:
                        result.rounds_trained += model.fits
                        result.per_session.append(model.fits)
                except JobEnded as e:
                    result.ended = str(e)
                    return result
                except (PeerFailed, FederationTimeout) as e:
                    if transport.ended:
                        result.ended = "the server ended the job"
                        return result
                    if not self.reconnect:
                        raise
                    log.info("%s lost the server (%s); reconnecting", self.party, e)
                    lost_since = time.monotonic()
                except BaseException as e:
                    transport.abort(failure_summary(e))  # the server learns the category, not the text
                    raise
                finally:
                    transport.close()
        finally:
            self.endpoint.close()


# --------------------------------------------------------------------------- the CLI's server config

class DataFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path
    label: str = "y"
    drop: list[str] = []


class ServerConfig(BaseModel):
    """``atoll hfl server --config FILE``: a YAML file of these fields (paths relative to it).

    ``params`` are the ``homo_lr`` job component's parameters (rounds, strategy, local epochs,
    learning rate, secure aggregation, DP, ...): one schema for both.
    """

    model_config = ConfigDict(extra="forbid")

    job: str = "hfl"
    certs: Path
    name: str = "server"
    listen: str | None = "0.0.0.0:7100"
    token_listen: str | None = None
    tokens: Path | None = None
    clients: list[str] = []
    model: ModelSpec
    params: dict[str, Any] = {}
    min_clients: int = Field(1, ge=1)
    round_timeout: float = Field(120.0, gt=0)
    wait_timeout: float = Field(600.0, gt=0)
    client_buffer_mb: int = Field(64, ge=1)
    test_data: DataFile | None = None
    out: Path | None = None
    seed: int = 0

    @classmethod
    def load(cls, path: str | Path) -> "ServerConfig":
        import yaml

        f = Path(path)
        try:
            body = yaml.safe_load(f.read_text())
            cfg = cls(**(body or {}))
        except FileNotFoundError:
            raise ConfigError(f"config file {f} does not exist") from None
        except (yaml.YAMLError, ValidationError, TypeError) as e:
            raise ConfigError(f"{f}: {e}") from None
        base = f.resolve().parent
        for name in ("certs", "tokens", "out"):
            v = getattr(cfg, name)
            if v is not None and not v.is_absolute():
                setattr(cfg, name, base / v)
        if cfg.test_data is not None and not cfg.test_data.path.is_absolute():
            cfg.test_data.path = base / cfg.test_data.path
        return cfg


def _training(cfg: ServerConfig) -> tuple[Any, Any, Any, int]:
    """(strategy, secure aggregation, DP, rounds) from the config's ``params`` (the homo_lr schema)."""
    from atoll.ml.horizontal.algorithms import HomoParams, dp_config, secagg_config, strategy

    try:
        p = HomoParams.model_validate(cfg.params)
    except ValidationError as e:
        raise ConfigError(f"params: {e}") from None
    strat = strategy(p)
    strat.min_fit_clients = cfg.min_clients
    return strat, secagg_config(p, stage_timeout=cfg.round_timeout), dp_config(p), p.rounds


def serve(cfg: ServerConfig, on_stage: Callable[[dict], None] | None = None,
          on_start: Callable[[DialInServer], None] | None = None) -> tuple[list[np.ndarray], Any]:
    """Run a dial-in job from a config: start the endpoint, train, save ``out``, stop."""
    from atoll.federation.tokens import TokenStore

    strategy, secagg, dp, rounds = _training(cfg)
    tokens = TokenStore(cfg.tokens) if cfg.tokens is not None else None
    roster = set(cfg.clients) | set(tokens.clients() if tokens is not None else [])
    test = None
    if cfg.test_data is not None:
        test = load_xy(cfg.test_data.path, cfg.test_data.label, cfg.model.features, cfg.test_data.drop,
                       cfg.model.task == "classification")
    endpoint = DialInServer(TlsConfig.load(cfg.certs, cfg.name), listen=cfg.listen, token_listen=cfg.token_listen,
                            tokens=tokens, client_buffer_bytes=cfg.client_buffer_mb << 20).start()
    try:
        if on_start is not None:
            on_start(endpoint)
        server = HflServer(endpoint, cfg.model, roster, rounds, strategy=strategy, secure_aggregation=secagg,
                           dp=dp, job_id=cfg.job, min_clients=cfg.min_clients, round_timeout=cfg.round_timeout,
                           wait_timeout=cfg.wait_timeout, test_data=test, seed=cfg.seed)
        weights, history = server.run(on_stage)
    finally:
        endpoint.stop()
    if cfg.out is not None:
        save_model(cfg.out, weights, history, cfg.model)
    return weights, history


def save_model(path: Path, weights: list[np.ndarray], history: Any, spec: ModelSpec) -> None:
    """The trained weights (``.npz``, ``w0``, ``w1``, ...) and a JSON file beside it with the history."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"w{i}": np.asarray(w) for i, w in enumerate(weights)})
    meta = {"model": spec.model_dump(), "history": getattr(history, "rounds", [])}
    Path(str(path) + ".json").write_text(json.dumps(meta, indent=1, default=float))
