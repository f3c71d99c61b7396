"""``homo_lr`` / ``homo_linr``: horizontal federated linear models (FedAvg family, optional secure aggregation).

Wraps the roles of :mod:`atoll.ml.horizontal.roles` (see that module for the
protocol and what each party sees): the ``server`` runs ``run_server`` with the
chosen strategy (and secure aggregation from :mod:`atoll.secure.secagg` if
``secure_aggregation: true``: the server then sees only the sum of the clients'
updates); each ``client`` runs ``run_client`` on its own training rows. Before
training, each client tells the server its feature count and a digest of its
column names (they must agree); after the last round the server sends the
final global weights to every client, so each keeps the model it will predict
with. Prediction is local to each client (its own rows, no messages).
``centralized_twin`` is scikit-learn's model of the same family and L2 penalty,
trained on every client's training rows stacked.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atoll.errors import DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, Slot, TaskContext, predicts, scores
from atoll.jobs.registry import register


class HomoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(10, ge=1)
    strategy: Literal["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedmedian",
                      "fedtrimmedmean", "krum"] = "fedavg"
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(0.1, gt=0.0)
    l2: float = Field(0.0, ge=0.0)
    proximal_mu: float = Field(0.01, ge=0.0)
    server_lr: float = Field(0.1, gt=0.0)  # FedOpt family (eta)
    fraction_fit: float = Field(1.0, gt=0.0, le=1.0)
    secure_aggregation: bool = False
    secagg_degree: int | None = Field(None, ge=2)
    secagg_bound: float = Field(2.0 ** 16, gt=0.0)
    secagg_threshold_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    secagg_frac_bits: int = Field(24, ge=8, le=40)
    trimmed_beta: float = Field(0.2, ge=0.0, lt=0.5)  # fedtrimmedmean
    krum_malicious: int = Field(1, ge=0)  # krum: attackers tolerated
    # client-level differential privacy (DP-FedAvg); off unless dp_noise_multiplier is set
    dp_noise_multiplier: float | None = Field(None, ge=0.0)
    dp_clip_norm: float = Field(1.0, gt=0.0)
    dp_delta: float = Field(1e-5, gt=0.0, lt=1.0)
    dp_adaptive: bool = False
    dp_noise_at: Literal["server", "clients"] = "server"


def _strategy(p: HomoParams) -> Any:
    from atoll.ml.horizontal import strategies as S

    local = {"epochs": p.local_epochs, "batch_size": p.batch_size, "lr": p.learning_rate}
    common = {"fraction_fit": p.fraction_fit, "min_fit_clients": 1, "local": local}
    cls = {"fedavg": S.FedAvg, "fedprox": S.FedProx, "fedadam": S.FedAdam, "fedyogi": S.FedYogi,
           "fedadagrad": S.FedAdagrad, "fedmedian": S.FedMedian, "fedtrimmedmean": S.FedTrimmedMean,
           "krum": S.Krum}[p.strategy]
    if p.strategy == "fedprox":
        common["proximal_mu"] = p.proximal_mu
    if p.strategy in ("fedadam", "fedyogi", "fedadagrad"):
        common["eta"] = p.server_lr
    if p.strategy == "fedtrimmedmean":
        common["beta"] = p.trimmed_beta
    if p.strategy == "krum":
        common["num_malicious"] = p.krum_malicious
    return cls(**common)


def _dp(p: HomoParams) -> Any:
    from atoll.ml.horizontal.roles import DPConfig

    if p.dp_noise_multiplier is None:
        return None
    return DPConfig(noise_multiplier=p.dp_noise_multiplier, clip_norm=p.dp_clip_norm, delta=p.dp_delta,
                    adaptive=p.dp_adaptive, noise_at=p.dp_noise_at)


def _digest(columns: list[str]) -> str:
    return hashlib.sha256("\x00".join(columns).encode()).hexdigest()[:16]


class _HomoComponent(Component):
    inputs = {"train": Slot("data")}
    outputs = {"model": "model"}
    Params = HomoParams
    layout = "horizontal"
    task: ClassVar[str] = ""

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        if len(job.parties_of("server")) != 1 or not job.parties_of("client"):
            raise job.error(f"{spec.id} ({cls.name}) needs one party with role server and clients",
                            "pipeline", index, "component")
        if spec.params.get("secure_aggregation") and len(job.parties_of("client")) < 3:
            raise job.error(f"{spec.id}: secure aggregation needs at least 3 clients (with 2, each "
                            "would learn the other's update from the sum); this job has "
                            f"{len(job.parties_of('client'))}", "pipeline", index, "params",
                            "secure_aggregation")
        robust = spec.params.get("strategy") in ("fedmedian", "fedtrimmedmean", "krum")
        for flag, what in (("secure_aggregation", "secure aggregation (the server sees only the sum)"),
                           ("dp_noise_multiplier", "differential privacy (DP-FedAvg)")):
            if robust and spec.params.get(flag) not in (None, False):
                raise job.error(f"{spec.id}: strategy {spec.params['strategy']!r} needs every client's own "
                                f"update, which {what} does not give; use fedavg, fedprox or a fedopt "
                                "strategy", "pipeline", index, "params", flag)

    def _model(self, n_features: int) -> Any:
        from atoll.ml.horizontal.models import LinearRegression, LogisticRegression

        if self.task == "binary":
            return LogisticRegression(n_features, 2, l2=self.params.l2)
        return LinearRegression(n_features, l2=self.params.l2)

    def run_server(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        from atoll.ml.horizontal.roles import run_server
        from atoll.secure.secagg import SecAggConfig

        with tc.fed.scope("setup"):
            shapes = tc.fed.gather("client", "shape")
        if len({(s["n_features"], s["columns"]) for s in shapes.values()}) != 1:
            raise DataError(f"{self.name}: the clients' columns differ: {shapes}; every client needs the "
                            "same features in the same order")
        n_features = int(next(iter(shapes.values()))["n_features"])
        p = self.params
        secagg = SecAggConfig(degree=p.secagg_degree, bound=p.secagg_bound, frac_bits=p.secagg_frac_bits,
                              threshold_fraction=p.secagg_threshold_fraction) if p.secure_aggregation else None
        weights, history = run_server(tc.fed, self._model(n_features).get_weights(), p.rounds,
                                      _strategy(p), secure_aggregation=secagg, dp=_dp(p), seed=tc.seed)
        with tc.fed.scope("final"):
            tc.fed.send("client", "weights", [np.asarray(w) for w in weights])
        losses = [r.get("train_loss") for r in history.rounds]
        tc.log.info("%s: %d rounds, last train loss %s", self.name, len(history), losses[-1] if losses else None)
        return {"model": {"component": self.name, "role": "server", "weights": [np.asarray(w) for w in weights],
                          "n_features": n_features,
                          "history": {"train_loss": [float(v) for v in losses if v is not None],
                                      "epsilon": [float(r["epsilon"]) for r in history.rounds
                                                  if r.get("epsilon") is not None]}}}

    def run_client(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        from atoll.ml.horizontal.roles import run_client

        train: Table | None = inputs.get("train")
        if train is None or train.y is None:
            raise DataError(f"{self.name}: client {tc.party!r} needs labelled training data")
        cols = list(train.x.columns)
        with tc.fed.scope("setup"):
            tc.fed.send("server", "shape", {"n_features": len(cols), "columns": _digest(cols)})
        model = self._model(len(cols))
        y = train.y.to_numpy()
        y = y.astype(np.int64) if self.task == "binary" else y.astype(np.float64)
        run_client(tc.fed, model, (train.values(), y))
        with tc.fed.scope("final"):
            weights = tc.fed.recv("server", "weights")
        return {"model": {"component": self.name, "role": "client", "weights": [np.asarray(w) for w in weights],
                          "columns": cols}}

    @classmethod
    def predict(cls, tc: TaskContext, model: dict | None, data: Table | None, params: dict) -> dict | None:
        if not predicts(cls.name, tc, model, data, ("client",)):
            return None
        m = cls(params)._model(len(model["columns"]))
        m.set_weights([np.asarray(w) for w in model["weights"]])
        return scores(data, cls._score(m, data.values()), cls.task)

    @classmethod
    def _score(cls, m: Any, x: np.ndarray) -> np.ndarray:
        return m.predict_proba(x)[:, 1] if cls.task == "binary" else m.predict(x)

    @classmethod
    def centralized_twin(cls, params: HomoParams, seed: int, task: str) -> tuple[Any, Any]:
        from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

        if cls.task == "binary":
            # the client model's penalty is l2/2 ||w||^2 on the mean loss: sklearn's C = 1 / (l2 n)
            class _LR:
                def fit(self, x: np.ndarray, y: np.ndarray) -> "_LR":
                    c = 1.0 / (params.l2 * len(y)) if params.l2 > 0 else 1e12
                    self.m = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(x, y)
                    self.name = "LogisticRegression"
                    return self
            return _LR(), lambda t, x: t.m.predict_proba(x)[:, 1]
        est = Ridge(alpha=params.l2) if params.l2 > 0 else LinearRegression()
        return est, lambda m, x: m.predict(x)


@register
class HomoLR(_HomoComponent):
    """Horizontal logistic regression (binary labels 0/1 at every client)."""

    name = "homo_lr"
    task = "binary"


@register
class HomoLinR(_HomoComponent):
    """Horizontal linear regression."""

    name = "homo_linr"
    task = "regression"


class HomoNNParams(HomoParams):
    hidden: list[int] = Field(default_factory=lambda: [32, 16])


@register
class HomoNN(_HomoComponent):
    """Horizontal neural network (PyTorch MLP, binary classification); needs the ``torch`` extra.

    The network is ``Linear -> ReLU`` per entry of ``hidden``, then ``Linear(., 2)``; weights
    travel as numpy arrays (:mod:`atoll.ml.horizontal.torch_model`). The centralised twin is
    scikit-learn's ``MLPClassifier`` with the same layers, trained by SGD on the stacked rows.
    """

    name = "homo_nn"
    task = "binary"
    Params = HomoNNParams

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        super().check(job, spec, index, check_data)
        try:
            import torch  # noqa: F401
        except ImportError:
            raise job.error(f"{spec.id} (homo_nn) needs PyTorch: pip install 'atoll[torch]'",
                            "pipeline", index, "component") from None

    def _model(self, n_features: int) -> Any:
        import torch
        from torch import nn

        from atoll.ml.horizontal.torch_model import TorchModel

        def build() -> nn.Module:
            torch.manual_seed(0)  # the server's initial weights are what every client starts from
            layers: list[nn.Module] = []
            width = n_features
            for h in self.params.hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            return nn.Sequential(*layers, nn.Linear(width, 2))

        return TorchModel(build, task="classification")

    @classmethod
    def _score(cls, m: Any, x: np.ndarray) -> np.ndarray:
        import torch

        m.module.eval()
        with torch.no_grad():
            logits = m.module(torch.as_tensor(x, dtype=torch.float32))
            return torch.softmax(logits, dim=1)[:, 1].double().numpy()

    @classmethod
    def centralized_twin(cls, params: HomoNNParams, seed: int, task: str) -> tuple[Any, Any]:
        from sklearn.neural_network import MLPClassifier

        est = MLPClassifier(hidden_layer_sizes=tuple(params.hidden), solver="sgd", momentum=0.0,
                            learning_rate_init=params.learning_rate, batch_size=params.batch_size,
                            max_iter=params.rounds * params.local_epochs, alpha=params.l2,
                            random_state=seed)
        return est, lambda m, x: m.predict_proba(x)[:, 1]
