"""FedAvg with the numpy homo LR: accuracy vs centralised, equality with a plain reference loop,
deployment over Context equals simulation, per-round metrics."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from atoll import datasets, horizontal
from atoll.federation import Party, launch
from atoll.ml.horizontal import (FedAvg, LinearRegression, LogisticRegression, run_client,
                                 run_server)


def _central(model, x, y, local, epochs, seed=0):
    rng = np.random.default_rng(seed)
    model.fit(x, y, {**local, "epochs": epochs}, rng)
    return model


def test_digits_10_iid_clients_within_one_point_of_centralised(digits, digits_clients):
    xtr, xte, ytr, yte = digits
    local = {"epochs": 5, "batch_size": 10, "lr": 0.1}
    rounds = 100
    model, history = horizontal.simulate(lambda: LogisticRegression(64, 10), digits_clients,
                                         FedAvg(local=local), rounds=rounds, test_data=(xte, yte))
    fed = model.evaluate(xte, yte)["accuracy"]
    central = _central(LogisticRegression(64, 10), xtr, ytr, local, rounds * local["epochs"]).evaluate(xte, yte)["accuracy"]
    assert fed >= central - 0.01, (fed, central)
    assert history.rounds[-1]["server_accuracy"] == pytest.approx(fed)
    assert len(history) == rounds and all(r["clients"] == 10 for r in history.rounds)


def _homo(name, parties):
    frames = [datasets.load(name, "homo", p) for p in parties]
    return [(f.drop(columns="y").to_numpy(), f["y"].to_numpy().astype(int)) for f in frames]


@pytest.mark.parametrize("name,parties,local,rounds", [
    ("breast", ["guest", "host"], {"epochs": 1, "batch_size": 10, "lr": 0.05}, 30),
    ("default_credit", ["guest", "host_1", "host_2"], {"epochs": 1, "batch_size": 64, "lr": 0.05}, 5),
])
def test_bundled_homo_splits_within_one_point_of_centralised(name, parties, local, rounds):
    clients = _homo(name, parties)
    (xte, yte), = _homo(name, ["test"])
    d = clients[0][0].shape[1]
    model, history = horizontal.simulate(lambda: LogisticRegression(d, 2), clients, FedAvg(local=local),
                                         rounds=rounds, test_data=(xte, yte))
    fed = model.evaluate(xte, yte)["accuracy"]
    x = np.vstack([c[0] for c in clients])
    y = np.concatenate([c[1] for c in clients])
    central = _central(LogisticRegression(d, 2), x, y, local, rounds).evaluate(xte, yte)["accuracy"]
    assert fed >= central - 0.01, (fed, central)
    assert fed > 0.75  # both are real models, far above the majority class on breast, near it on credit


def _reference_fedavg(clients, rounds, local, fraction, seed):
    """A plain FedAvg loop written independently of atoll's roles and strategies."""
    names = [f"client_{i}" for i in range(len(clients))]
    coef, b = np.zeros((64, 10)), np.zeros(10)
    server_rng = np.random.default_rng(seed)
    per_round = []
    for rnd in range(rounds):
        k = int(np.ceil(fraction * len(names)))
        chosen = sorted(server_rng.choice(np.asarray(names), size=k, replace=False).tolist())
        new_c, new_b, ns = [], [], []
        for name in chosen:
            x, y = clients[names.index(name)]
            rng = np.random.default_rng([seed, rnd, zlib.crc32(name.encode())])
            c, bb = coef.copy(), b.copy()
            onehot = np.eye(10)[y]
            for _ in range(local["epochs"]):
                order = rng.permutation(len(x))
                for i in range(0, len(x), local["batch_size"]):
                    idx = order[i:i + local["batch_size"]]
                    z = x[idx] @ c + bb
                    p = np.exp(z - z.max(axis=1, keepdims=True))
                    p /= p.sum(axis=1, keepdims=True)
                    g = (p - onehot[idx]) / len(idx)
                    c = c - local["lr"] * (x[idx].T @ g)
                    bb = bb - local["lr"] * g.sum(axis=0)
            new_c.append(c)
            new_b.append(bb)
            ns.append(len(x))
        ns = np.asarray(ns, float)
        coef = np.tensordot(ns, np.stack(new_c), axes=1) / ns.sum()
        b = np.tensordot(ns, np.stack(new_b), axes=1) / ns.sum()
        per_round.append(np.concatenate([coef.ravel(), b]))
    return per_round


def test_per_round_model_equals_plain_reference_loop(digits_clients):
    local = {"epochs": 2, "batch_size": 10, "lr": 0.1}
    seen = []

    def record(weights):
        seen.append(np.concatenate([w.ravel() for w in weights]))
        return {}

    horizontal.simulate(lambda: LogisticRegression(64, 10), digits_clients,
                        FedAvg(fraction_fit=0.5, local=local), rounds=6, evaluate_fn=record, seed=7)
    ref = _reference_fedavg(digits_clients, 6, local, 0.5, seed=7)
    assert len(seen) == 6
    for got, want in zip(seen, ref):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_sampling_picks_fraction_of_clients_and_varies(digits_clients):
    chosen = []
    strat = FedAvg(fraction_fit=0.3, min_fit_clients=2)
    rng = np.random.default_rng(1)
    names = [f"client_{i}" for i in range(10)]
    for r in range(5):
        chosen.append(tuple(strat.configure_fit(r, names, rng)[0]))
    assert all(len(c) == 3 for c in chosen) and len(set(chosen)) > 1


def test_deployment_over_context_equals_simulation(digits_clients):
    clients = digits_clients[:3]
    local = {"epochs": 1, "batch_size": 10, "lr": 0.1}
    model_fn = lambda: LogisticRegression(64, 10)  # noqa: E731
    sim_model, sim_hist = horizontal.simulate(model_fn, clients, FedAvg(local=local, fraction_evaluate=1.0),
                                              rounds=3, seed=3)
    parties = {"server": Party("server", run_server, dict(weights=model_fn().get_weights(), rounds=3, seed=3,
                                                          strategy=FedAvg(local=local, fraction_evaluate=1.0)))}
    for i, d in enumerate(clients):
        parties[f"client_{i}"] = Party("client", run_client, dict(model=model_fn(), data=d))
    out = launch(parties, mode="threads")
    weights, hist = out["server"]
    for a, b in zip(weights, sim_model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert hist.metric("eval_accuracy") == pytest.approx(sim_hist.metric("eval_accuracy"))


def test_history_has_train_loss_and_client_evaluation(digits_clients, digits):
    _, xte, _, yte = digits
    clients = [(x, y, x[:10], y[:10]) for x, y in digits_clients]
    _, h = horizontal.simulate(lambda: LogisticRegression(64, 10), clients,
                               FedAvg(fraction_evaluate=0.5, min_evaluate_clients=2), rounds=4,
                               test_data=(xte, yte))
    losses = h.metric("train_loss")
    assert losses[-1] < losses[0]
    assert all(0 <= a <= 1 for a in h.metric("eval_accuracy"))
    assert all(r["server_accuracy"] > 0.5 for r in h.rounds[1:])


def test_linear_regression_fedavg_matches_sklearn_on_held_out():
    from sklearn.linear_model import LinearRegression as SkLR
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.7 + rng.normal(scale=0.3, size=1200)
    xtr, ytr, xte, yte = x[:1000], y[:1000], x[1000:], y[1000:]
    clients = [(xtr[i::5], ytr[i::5]) for i in range(5)]
    model, _ = horizontal.simulate(lambda: LinearRegression(5), clients,
                                   FedAvg(local={"epochs": 1, "batch_size": 20, "lr": 0.05}), rounds=20)
    sk = SkLR().fit(xtr, ytr)
    assert r2_score(yte, model.predict(xte)) == pytest.approx(r2_score(yte, sk.predict(xte)), abs=0.01)
