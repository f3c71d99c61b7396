"""Client-level DP-FedAvg: epsilon per round from the accountant, graceful accuracy loss, adaptive clipping,
and client-side noise under secure aggregation."""

from __future__ import annotations

import pytest

from atoll import horizontal
from atoll.crypto.dp import PrivacyAccountant
from atoll.ml.horizontal import DPConfig, FedAvg, LogisticRegression, partition


@pytest.fixture(scope="module")
def many_clients(digits):
    xtr, _, ytr, _ = digits
    return [(xtr[p], ytr[p]) for p in partition.iid(len(xtr), 100, seed=0)]


def _run(clients, digits, dp, rounds=30, **kw):
    _, xte, _, yte = digits
    return horizontal.simulate(lambda: LogisticRegression(64, 10), clients,
                               FedAvg(fraction_fit=0.5, local={"epochs": 1, "batch_size": 10, "lr": 0.1}),
                               rounds=rounds, test_data=(xte, yte), dp=dp, **kw)


def test_epsilon_reported_each_round_and_accuracy_degrades_gracefully(many_clients, digits):
    results = {}
    for z in (None, 0.5, 2.0):
        dp = None if z is None else DPConfig(noise_multiplier=z, clip_norm=1.0, seed=1)
        _, h = _run(many_clients, digits, dp)
        results[z] = h
    acc = {z: h.rounds[-1]["server_accuracy"] for z, h in results.items()}
    eps = results[0.5].metric("epsilon")
    assert all(a < b for a, b in zip(eps, eps[1:]))  # epsilon grows every round
    ref = PrivacyAccountant(1e-5)
    ref.step(0.5, 0.5, count=30)
    assert eps[-1] == pytest.approx(ref.epsilon())
    assert results[2.0].rounds[-1]["epsilon"] < eps[-1]  # more noise, less privacy spent
    # graceful: more noise costs accuracy, but the model still learns
    assert acc[None] >= acc[0.5] - 0.01 and acc[0.5] >= acc[2.0] - 0.01
    assert acc[None] > 0.85 and acc[0.5] > 0.8 and acc[2.0] > 0.5, acc


def test_adaptive_clipping_tracks_the_median_norm(many_clients, digits):
    fixed = _run(many_clients, digits, DPConfig(noise_multiplier=2.0, clip_norm=1.0, seed=1), rounds=20)[1]
    adaptive = _run(many_clients, digits, DPConfig(noise_multiplier=2.0, clip_norm=1.0, adaptive=True,
                                                   target_quantile=0.5, seed=1), rounds=20)[1]
    clips = adaptive.metric("clip_norm")
    assert clips[-1] < 0.5 * clips[0]  # update norms are well below 1: the clip comes down to them
    assert adaptive.rounds[-1]["server_accuracy"] > fixed.rounds[-1]["server_accuracy"]
    assert adaptive.rounds[-1]["epsilon"] == pytest.approx(fixed.rounds[-1]["epsilon"])


def test_client_side_noise_under_secure_aggregation(digits_clients, digits):
    _, xte, _, yte = digits
    model, h = horizontal.simulate(lambda: LogisticRegression(64, 10), digits_clients, FedAvg(), rounds=8,
                                   secure_aggregation=True, test_data=(xte, yte),
                                   dp=DPConfig(noise_multiplier=0.3, clip_norm=2.0, noise_at="clients", seed=2))
    assert h.rounds[-1]["epsilon"] > 0
    assert h.rounds[-1]["server_accuracy"] > 0.7


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secagg"])
def test_client_side_noise_keeps_its_variance_when_clients_drop(secure):
    """Clients that drop take their noise share with them; the server adds it back, so the released
    model carries the accounted noise N(0, (z C)^2) / m. Updates are zero here (lr 0): the model is the noise."""
    import numpy as np

    from atoll.ml.horizontal import LinearRegression

    rng = np.random.default_rng(0)
    m, d = 12, 3000
    clients = [(rng.normal(size=(5, d)), rng.normal(size=5)) for _ in range(m)]
    gone = {f"client_{i:02d}" for i in range(4)}  # a third of the clients
    stage = "masked" if secure else "fit"
    model, h = horizontal.simulate(lambda: LinearRegression(d), clients,
                                   FedAvg(local={"epochs": 1, "batch_size": 5, "lr": 0.0}), rounds=1,
                                   secure_aggregation=secure or None,
                                   dp=DPConfig(noise_multiplier=1.5, clip_norm=2.0, noise_at="clients", seed=5),
                                   drop=lambda r, s, c: c in gone and s == stage)
    assert h.rounds[0]["dropped"] == 4 and h.rounds[0]["dp_noise_topped_up"] == pytest.approx(4 / 12)
    w = np.concatenate([np.ravel(x) for x in model.get_weights()])
    want_std = 1.5 * 2.0 / m
    # d = 3000 draws: the sample std is within 5% of the truth with overwhelming probability;
    # without the top-up it would be sqrt(8/12) = 0.82 of it
    assert np.std(w) == pytest.approx(want_std, rel=0.05)
