"""The horizontal algorithms of the registry: ``homo_lr``, ``homo_linr``, ``homo_nn`` (FedAvg family).

Each is declared once here (:mod:`atoll.ml.registry`): ONE parameter model
(:class:`HomoParams`, with :class:`HomoNNParams` adding the hidden layers), the roles
(:class:`~atoll.ml.horizontal.roles.FedServer` / :class:`~atoll.ml.horizontal.roles.FedClient`,
run over a federation context by :func:`~atoll.ml.horizontal.roles.run_server` /
:func:`~atoll.ml.horizontal.roles.run_client`; see :mod:`atoll.ml.horizontal.roles` for the
protocol and what each party sees), the model parts (the final global weights at every
party), the client model builder and the centralised twin. The job components
(:mod:`atoll.jobs.components.homo`) and ``atoll hfl server`` (:mod:`atoll.hfl`) read them.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
from pydantic import Field

from atoll.ml import registry
from atoll.ml.horizontal.roles import FedClient, FedServer
from atoll.ml.registry import Algorithm, AlgorithmParams, ModelPart, param_error

__all__ = ["HOMO_LINR", "HOMO_LR", "HOMO_NN", "HomoNNParams", "HomoParams", "build_model", "dp_config",
           "secagg_config", "strategy"]

ROBUST = ("fedmedian", "fedtrimmedmean", "krum")


class HomoParams(AlgorithmParams):
    """THE parameters of the horizontal linear models (job step, ``atoll hfl server``'s ``params``).

    ``strategy``: the server's aggregation (FedAvg, FedProx with ``proximal_mu``, the FedOpt
    family with ``server_lr``, or the robust median / trimmed mean (``trimmed_beta``) / Krum
    (``krum_malicious``)); ``local_epochs``, ``batch_size``, ``learning_rate``, ``l2``: each
    client's local SGD; ``fraction_fit``: the share of clients sampled per round.
    Secure aggregation (``secure_aggregation``, ``secagg_*``: :class:`~atoll.secure.secagg.SecAggConfig`)
    and client-level differential privacy (``dp_*``, off unless ``dp_noise_multiplier`` is set:
    :class:`~atoll.ml.horizontal.roles.DPConfig`) need a linear strategy.
    """

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


class HomoNNParams(HomoParams):
    """:class:`HomoParams` plus the MLP's hidden layer widths."""

    hidden: list[int] = Field(default_factory=lambda: [32, 16])


def strategy(p: HomoParams) -> Any:
    """The server's strategy object for ``p``."""
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


def dp_config(p: HomoParams) -> Any:
    """The DP configuration, or None when ``dp_noise_multiplier`` is unset."""
    from atoll.ml.horizontal.roles import DPConfig

    if p.dp_noise_multiplier is None:
        return None
    return DPConfig(noise_multiplier=p.dp_noise_multiplier, clip_norm=p.dp_clip_norm, delta=p.dp_delta,
                    adaptive=p.dp_adaptive, noise_at=p.dp_noise_at)


def secagg_config(p: HomoParams, **extra: Any) -> Any:
    """The secure aggregation configuration, or None when it is off."""
    from atoll.secure.secagg import SecAggConfig

    if not p.secure_aggregation:
        return None
    return SecAggConfig(degree=p.secagg_degree, bound=p.secagg_bound, frac_bits=p.secagg_frac_bits,
                        threshold_fraction=p.secagg_threshold_fraction, **extra)


def columns_digest(columns: list[str]) -> str:
    """What a client tells the server about its columns (they must agree): a short hash."""
    return hashlib.sha256("\x00".join(columns).encode()).hexdigest()[:16]


def build_model(name: str, p: HomoParams, n_features: int) -> Any:
    """The client model every party starts from: logistic / linear regression, or the MLP of ``homo_nn``."""
    from atoll.ml.horizontal.models import LinearRegression, LogisticRegression

    if name == "homo_lr":
        return LogisticRegression(n_features, 2, l2=p.l2)
    if name == "homo_linr":
        return LinearRegression(n_features, l2=p.l2)
    import torch
    from torch import nn

    from atoll.ml.horizontal.torch_model import TorchModel

    def build() -> nn.Module:
        torch.manual_seed(0)  # the server's initial weights are what every client starts from
        layers: list[nn.Module] = []
        width = n_features
        for h in p.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, 2))

    return TorchModel(build, task="classification")


def check_parties(params: HomoParams, parties: dict[str, list[str]]) -> None:
    """The registry's ``check`` hook: one server, clients; secure aggregation needs three clients."""
    if len(parties.get("server", [])) != 1 or not parties.get("client"):
        raise param_error("needs one party with role server and clients")
    if params.secure_aggregation and len(parties["client"]) < 3:
        raise param_error("secure aggregation needs at least 3 clients (with 2, each would learn the other's "
                          f"update from the sum); this job has {len(parties['client'])}", "secure_aggregation")
    if params.strategy in ROBUST:
        for field, on, what in (("secure_aggregation", params.secure_aggregation,
                                 "secure aggregation (the server sees only the sum)"),
                                ("dp_noise_multiplier", params.dp_noise_multiplier is not None,
                                 "differential privacy (DP-FedAvg)")):
            if on:
                raise param_error(f"strategy {params.strategy!r} needs every client's own update, which {what} "
                                  "does not give; use fedavg, fedprox or a fedopt strategy", field)


def _weights(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "weights": [np.asarray(w) for w in d["weights"]]}


PARTS = {"server": ModelPart(_weights, _weights), "client": ModelPart(_weights, _weights)}


class _LRTwin:
    """scikit-learn's logistic regression with the client model's penalty: ``l2/2 ||w||^2`` on the
    mean loss is ``C = 1 / (l2 n)``."""

    def __init__(self, params: HomoParams, seed: int):
        self.params, self.seed = params, seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> _LRTwin:
        from sklearn.linear_model import LogisticRegression

        c = 1.0 / (self.params.l2 * len(y)) if self.params.l2 > 0 else 1e12
        self.m = LogisticRegression(C=c, max_iter=5000, random_state=self.seed).fit(x, y)
        self.name = "LogisticRegression"
        return self


def _lr_twin(params: HomoParams, seed: int, task: str) -> tuple[Any, Any]:
    return _LRTwin(params, seed), lambda t, x: t.m.predict_proba(x)[:, 1]


def _linr_twin(params: HomoParams, seed: int, task: str) -> tuple[Any, Any]:
    from sklearn.linear_model import LinearRegression, Ridge

    est = Ridge(alpha=params.l2) if params.l2 > 0 else LinearRegression()
    return est, lambda m, x: m.predict(x)


def _nn_twin(params: HomoNNParams, seed: int, task: str) -> tuple[Any, Any]:
    """scikit-learn's ``MLPClassifier`` with the same layers, trained by SGD on the stacked rows."""
    from sklearn.neural_network import MLPClassifier

    est = MLPClassifier(hidden_layer_sizes=tuple(params.hidden), solver="sgd", momentum=0.0,
                        learning_rate_init=params.learning_rate, batch_size=params.batch_size,
                        max_iter=params.rounds * params.local_epochs, alpha=params.l2, random_state=seed)
    return est, lambda m, x: m.predict_proba(x)[:, 1]


_ROLES = {"server": FedServer, "client": FedClient}
HOMO_LR = registry.register(Algorithm(
    name="homo_lr", params=HomoParams, roles=_ROLES, layout="horizontal", task="binary", parts=PARTS,
    twin=_lr_twin, check=check_parties, summary="horizontal logistic regression (binary labels 0/1 at every client)"))
HOMO_LINR = registry.register(Algorithm(
    name="homo_linr", params=HomoParams, roles=_ROLES, layout="horizontal", task="regression", parts=PARTS,
    twin=_linr_twin, check=check_parties, summary="horizontal linear regression"))
HOMO_NN = registry.register(Algorithm(
    name="homo_nn", params=HomoNNParams, roles=_ROLES, layout="horizontal", task="binary", parts=PARTS,
    twin=_nn_twin, check=check_parties,
    summary="horizontal neural network (PyTorch MLP, binary classification); needs the torch extra"))
