"""Strategies: robust aggregation against a client sending huge updates, FedProx, server optimisers."""

from __future__ import annotations

import numpy as np
import pytest

from atoll import horizontal
from atoll.errors import ConfigError
from atoll.ml.horizontal import (FedAdagrad, FedAdam, FedAvg, FedMedian, FedProx, FedTrimmedMean, FedYogi, Krum,
                                 LogisticRegression)
from atoll.ml.horizontal import strategies as S


def test_pure_aggregators_match_numpy():
    rng = np.random.default_rng(0)
    ups = [rng.normal(size=7) for _ in range(9)]
    np.testing.assert_allclose(S.coordinate_median(ups), np.median(ups, axis=0))
    srt = np.sort(ups, axis=0)
    np.testing.assert_allclose(S.trimmed_mean(ups, 0.2), srt[1:8].mean(axis=0))
    np.testing.assert_allclose(S.weighted_mean(ups, range(1, 10)),
                               np.average(ups, axis=0, weights=range(1, 10)))
    # Krum by brute force
    f = 2
    scores = [sum(sorted(np.sum((u - v) ** 2) for j, v in enumerate(ups) if j != i)[:9 - f - 2])
              for i, u in enumerate(ups)]
    np.testing.assert_allclose(S.krum(ups, f), ups[int(np.argmin(scores))])
    with pytest.raises(ConfigError):
        S.krum(ups[:3], 1)


def test_fedopt_step_matches_reddi_formulas():
    w, d = np.array([1.0, -1.0]), np.array([0.5, 0.2])
    m0, v0 = np.zeros(2), np.full(2, 1e-6)
    new, m, v = S.fedopt_step("adam", w, d, m0, v0, eta=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    np.testing.assert_allclose(m, 0.1 * d)
    np.testing.assert_allclose(v, 0.99 * v0 + 0.01 * d * d)
    np.testing.assert_allclose(new, w + 0.1 * m / (np.sqrt(v) + 1e-3))
    _, _, vy = S.fedopt_step("yogi", w, d, m0, v0, 0.1, 0.9, 0.99, 1e-3)
    np.testing.assert_allclose(vy, v0 - 0.01 * d * d * np.sign(v0 - d * d))
    _, _, va = S.fedopt_step("adagrad", w, d, m0, v0, 0.1, 0.9, 0.99, 1e-3)
    np.testing.assert_allclose(va, v0 + d * d)


def _with_attacker(digits_clients, strategy, rounds=15):
    """client_0 is poisoned: whatever it trains, it sends a huge random update."""
    from atoll.ml.horizontal import FedServer, SimulationChannel

    attack = np.random.default_rng(99).normal(scale=1e4, size=650)

    class PoisonChannel(SimulationChannel):
        def _map(self, names, msgs, train_only):
            out = super()._map(names, msgs, train_only)
            for n, r in zip(names, out):
                if n == "client_0" and "update" in r:
                    r["update"] = attack
            return out

    def model_fn():
        return LogisticRegression(64, 10)

    w, _ = FedServer(model_fn().get_weights(), rounds, strategy).run(PoisonChannel(model_fn, digits_clients))
    m = model_fn()
    m.set_weights(w)
    return m


@pytest.mark.parametrize("strategy", [FedMedian(), FedTrimmedMean(beta=0.2), Krum(num_malicious=1)],
                         ids=["median", "trimmed", "krum"])
def test_robust_aggregation_resists_a_huge_update(digits, digits_clients, strategy):
    _, xte, _, yte = digits
    robust = _with_attacker(digits_clients, strategy).evaluate(xte, yte)["accuracy"]
    naive = _with_attacker(digits_clients, FedAvg(), rounds=3).evaluate(xte, yte)["accuracy"]
    assert robust > 0.85, robust
    assert naive < 0.5, naive  # plain averaging is destroyed by the same attacker


def test_robust_strategies_refuse_secure_aggregation(digits_clients):
    with pytest.raises(ConfigError, match="secure"):
        horizontal.simulate(lambda: LogisticRegression(64, 10), digits_clients, FedMedian(), rounds=1,
                            secure_aggregation=True)


def test_fedprox_keeps_clients_close_to_global(digits_clients):
    msg_w = LogisticRegression(64, 10).get_weights()
    from atoll.ml.horizontal import FedClient

    def drift(mu):
        c = FedClient("client_0", LogisticRegression(64, 10), digits_clients[0])
        cfg = {"epochs": 5, "batch_size": 10, "lr": 0.1, "proximal_mu": mu, "seed": 0}
        return np.linalg.norm(c.train({"round": 0, "weights": msg_w, "config": cfg})["update"])

    assert drift(1.0) < 0.8 * drift(0.0)
    _, cfg = FedProx(proximal_mu=0.3).configure_fit(0, ["a", "b"], np.random.default_rng(0))
    assert cfg["proximal_mu"] == 0.3


@pytest.mark.parametrize("strategy", [FedProx(proximal_mu=0.01), FedAdam(eta=0.02), FedYogi(eta=0.02),
                                      FedAdagrad(eta=0.05)], ids=["prox", "adam", "yogi", "adagrad"])
def test_strategies_learn_digits(digits, digits_clients, strategy):
    _, xte, _, yte = digits
    model, h = horizontal.simulate(lambda: LogisticRegression(64, 10), digits_clients, strategy, rounds=15,
                                   test_data=(xte, yte))
    assert h.rounds[-1]["server_accuracy"] > 0.85  # FedAvg reaches ~0.9 in 15 rounds here
