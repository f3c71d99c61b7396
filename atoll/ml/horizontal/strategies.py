"""Aggregation strategies: FedAvg, FedProx, FedAdam / FedYogi / FedAdagrad, median, trimmed mean, Krum.

A strategy decides which clients train each round, what they are told, and how
their updates become the next global model. Updates are *deltas*
``w_client - w_global`` as flat float64 vectors (see :func:`models.flatten`).

Two kinds:

* **Linear** strategies (``linear = True``) need only the weighted *sum* of the
  updates and the sum of weights: ``aggregate_sum(w, sum_k n_k d_k, sum_k n_k)``.
  They run under secure aggregation and DP.
* **Robust** strategies need each update (``aggregate_updates``), so they cannot
  run under secure aggregation (the server never sees single updates there).

The math is in pure functions (``weighted_mean``, ``coordinate_median``,
``trimmed_mean``, ``krum``, ``fedopt_step``) tested without any network.
References: McMahan et al. 2017 (FedAvg), Li et al. 2020 (FedProx), Reddi et al.
2021 (Adaptive federated optimisation), Yin et al. 2018 (median, trimmed mean),
Blanchard et al. 2017 (Krum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from atoll.errors import ConfigError

# --------------------------------------------------------------------------- pure math


def weighted_mean(updates: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        raise ConfigError("the sum of client weights is zero: no client reported training samples")
    return np.tensordot(w, np.stack(updates), axes=1) / w.sum()


def coordinate_median(updates: Sequence[np.ndarray]) -> np.ndarray:
    return np.median(np.stack(updates), axis=0)


def trimmed_mean(updates: Sequence[np.ndarray], beta: float) -> np.ndarray:
    """Coordinate-wise mean after dropping the ``floor(beta n)`` largest and smallest values."""
    u = np.sort(np.stack(updates), axis=0)
    k = int(math.floor(beta * len(u)))
    if 2 * k >= len(u):
        raise ConfigError(f"trimmed mean with beta={beta} removes all {len(u)} updates")
    return u[k:len(u) - k].mean(axis=0)


def krum(updates: Sequence[np.ndarray], num_malicious: int, num_selected: int = 1) -> np.ndarray:
    """(Multi-)Krum: average of the ``num_selected`` updates with the smallest Krum scores.

    A score is the sum of squared distances to the ``n - f - 2`` nearest other updates.
    """
    u = np.stack(updates)
    n = len(u)
    m = n - num_malicious - 2
    if m < 1:
        raise ConfigError(f"Krum needs n > f + 2 clients (n={n}, f={num_malicious})")
    sq = (u * u).sum(axis=1)
    d = np.maximum(sq[:, None] + sq[None, :] - 2 * u @ u.T, 0)
    np.fill_diagonal(d, np.inf)
    scores = np.sort(d, axis=1)[:, :m].sum(axis=1)
    best = np.argsort(scores, kind="stable")[:num_selected]
    return u[best].mean(axis=0)


def fedopt_step(kind: str, w: np.ndarray, delta: np.ndarray, m: np.ndarray, v: np.ndarray,
                eta: float, beta1: float, beta2: float, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One server optimiser step on the pseudo-gradient ``delta`` (Reddi et al. 2021, Alg. 2)."""
    m = beta1 * m + (1 - beta1) * delta
    d2 = delta * delta
    if kind == "adagrad":
        v = v + d2
    elif kind == "adam":
        v = beta2 * v + (1 - beta2) * d2
    elif kind == "yogi":
        v = v - (1 - beta2) * d2 * np.sign(v - d2)
    else:
        raise ConfigError(f"unknown server optimiser {kind!r}")
    return w + eta * m / (np.sqrt(v) + tau), m, v


# --------------------------------------------------------------------------- strategies


@dataclass
class FedAvg:
    """Federated averaging weighted by each client's number of training samples.

    ``fraction_fit`` of the clients (at least ``min_fit_clients``) train each
    round; ``fraction_evaluate`` of them (at least ``min_evaluate_clients``, 0 =
    none) evaluate the new model on their local test data. ``local`` holds the
    client training config (``epochs``, ``batch_size``, ``lr``).
    """

    fraction_fit: float = 1.0
    min_fit_clients: int = 2
    fraction_evaluate: float = 0.0
    min_evaluate_clients: int = 0
    local: dict[str, Any] = field(default_factory=lambda: {"epochs": 1, "batch_size": 10, "lr": 0.1})

    linear = True

    def initialize(self, weights: np.ndarray) -> None:
        """Called once with the initial flat weights."""

    def _sample(self, clients: Sequence[str], fraction: float, minimum: int,
                rng: np.random.Generator) -> list[str]:
        n = len(clients)
        k = min(n, max(minimum, int(math.ceil(fraction * n))))
        if k >= n:
            return list(clients)
        return sorted(rng.choice(np.asarray(clients), size=k, replace=False).tolist())

    def configure_fit(self, rnd: int, clients: Sequence[str], rng: np.random.Generator) -> tuple[list[str], dict]:
        if len(clients) < self.min_fit_clients:
            raise ConfigError(f"{len(clients)} clients available, the strategy needs {self.min_fit_clients}")
        return self._sample(clients, self.fraction_fit, self.min_fit_clients, rng), dict(self.local)

    def configure_evaluate(self, rnd: int, clients: Sequence[str], rng: np.random.Generator) -> list[str]:
        if self.fraction_evaluate <= 0 and self.min_evaluate_clients <= 0:
            return []
        return self._sample(clients, self.fraction_evaluate, self.min_evaluate_clients, rng)

    def aggregate_sum(self, rnd: int, w: np.ndarray, update_sum: np.ndarray, weight_sum: float) -> np.ndarray:
        """New weights from ``sum_k n_k d_k`` and ``sum_k n_k``."""
        if weight_sum <= 0:
            raise ConfigError("the sum of client weights is zero: no client reported training samples")
        return w + update_sum / weight_sum

    def aggregate_updates(self, rnd: int, w: np.ndarray, updates: list[np.ndarray],
                          weights: list[float]) -> np.ndarray:
        return self.aggregate_sum(rnd, w, np.tensordot(np.asarray(weights, float), np.stack(updates), axes=1),
                                  float(np.sum(weights)))


@dataclass
class FedProx(FedAvg):
    """FedAvg whose clients add the proximal term ``mu/2 ||w - w_global||^2`` (Li et al. 2020)."""

    proximal_mu: float = 0.01

    def configure_fit(self, rnd, clients, rng):
        selected, cfg = super().configure_fit(rnd, clients, rng)
        cfg["proximal_mu"] = self.proximal_mu
        return selected, cfg


@dataclass
class FedOpt(FedAvg):
    """Server-side adaptive optimiser on the averaged update (Reddi et al. 2021)."""

    eta: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    kind = "adam"

    def initialize(self, weights: np.ndarray) -> None:
        self._m = np.zeros_like(weights)
        self._v = np.full_like(weights, self.tau ** 2)

    def aggregate_sum(self, rnd, w, update_sum, weight_sum):
        delta = super().aggregate_sum(rnd, w, update_sum, weight_sum) - w
        new, self._m, self._v = fedopt_step(self.kind, w, delta, self._m, self._v,
                                            self.eta, self.beta1, self.beta2, self.tau)
        return new


@dataclass
class FedAdam(FedOpt):
    kind = "adam"


@dataclass
class FedYogi(FedOpt):
    kind = "yogi"


@dataclass
class FedAdagrad(FedOpt):
    kind = "adagrad"


@dataclass
class FedMedian(FedAvg):
    """Coordinate-wise median of the updates (robust; not with secure aggregation)."""

    linear = False

    def aggregate_updates(self, rnd, w, updates, weights):
        return w + coordinate_median(updates)


@dataclass
class FedTrimmedMean(FedAvg):
    """Coordinate-wise ``beta``-trimmed mean of the updates (robust)."""

    beta: float = 0.2
    linear = False

    def aggregate_updates(self, rnd, w, updates, weights):
        return w + trimmed_mean(updates, self.beta)


@dataclass
class Krum(FedAvg):
    """(Multi-)Krum with ``num_malicious`` tolerated attackers (robust)."""

    num_malicious: int = 1
    num_selected: int = 1
    linear = False

    def aggregate_updates(self, rnd, w, updates, weights):
        return w + krum(updates, self.num_malicious, self.num_selected)
