"""Federated averaging over multi-round secure aggregation: the same model as plain FedAvg with the same
dropouts (simulation, a federation Context in threads, gRPC processes), and a multi-round wire audit of
the deployment path."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from atoll import horizontal, wire
from atoll.federation import Party, launch
from atoll.ml.horizontal import FedAvg, FedClient, LogisticRegression, run_client, run_server
from atoll.secure.secagg import SecAggConfig, encode_fixed
from wire_audit import arrays


def _flat(ws):
    return np.concatenate([np.ravel(w) for w in ws])


def test_simulate_multiround_equals_plain_fedavg_with_the_same_dropouts(digits_clients):
    model_fn = functools.partial(LogisticRegression, 64, 10)
    gone = {1: {"client_3"}, 2: {"client_5", "client_8"}, 4: {"client_0"}}

    def plain_drop(r, stage, c):
        return stage == "fit" and c in gone.get(r, ())

    def secure_drop(r, stage, c):  # the same clients vanish before their masked upload reaches the server
        return stage == "upload" and c in gone.get(r, ())

    plain = horizontal.simulate(model_fn, digits_clients, FedAvg(), rounds=5, drop=plain_drop).weights
    # epochs of 3 rounds: set-up in rounds 0 and 3, key reuse in between
    sec, hist = horizontal.simulate(model_fn, digits_clients, FedAvg(), rounds=5, drop=secure_drop,
                                    secure_aggregation=SecAggConfig(epoch_rounds=3))
    np.testing.assert_allclose(_flat(sec.get_weights()), _flat(plain), atol=1e-6)
    assert hist.metric("dropped") == [0, 1, 2, 0, 1]


def test_clients_dropping_after_upload_are_still_averaged(digits_clients):
    model_fn = functools.partial(LogisticRegression, 64, 10)
    plain = horizontal.simulate(model_fn, digits_clients, FedAvg(), rounds=3).weights
    sec = horizontal.simulate(model_fn, digits_clients, FedAvg(), rounds=3,
                              secure_aggregation=SecAggConfig(epoch_rounds=5),
                              drop=lambda r, s, c: s == "reveal" and c in ("client_2", "client_6")).weights
    np.testing.assert_allclose(_flat(sec), _flat(plain), atol=1e-6)


def _fed_data(n=6, d_feat=8, seed=0):
    rng = np.random.default_rng(seed)
    return {f"client_{i}": (rng.normal(size=(30, d_feat)), rng.integers(0, 3, size=30)) for i in range(n)}


def test_deployment_over_a_context_with_a_wire_audit_over_rounds(monkeypatch):
    """Server and 6 clients as parties of a federation (threads), 4 rounds, epoch of 4: one client vanishes
    at its masked upload in the last round and the round completes without it; the server's model equals the simulation's
    with the same dropout, and no message to the server carries any client's update of any round."""
    data = _fed_data()
    model_fn = functools.partial(LogisticRegression, 8, 3)
    local = {"epochs": 1, "batch_size": 5, "lr": 0.1}
    truth = []  # every update any client computed, as trained and as fed to secure aggregation
    real_train = FedClient.train

    def train(self, msg):
        out = real_train(self, msg)
        truth.append((out["update"], FedClient.secure_vector(out)))
        return out

    monkeypatch.setattr(FedClient, "train", train)
    records = []
    cfg = SecAggConfig(epoch_rounds=4, stage_timeout=2.0)
    parties = {"server": Party("server", run_server, dict(weights=model_fn().get_weights(), rounds=4,
                                                          strategy=FedAvg(local=local), secure_aggregation=cfg))}
    for name, d in data.items():
        parties[name] = Party("client", run_client, dict(model=model_fn(), data=d,
                                                          drop_at=(3, "upload") if name == "client_4" else None))
    out = launch(parties, mode="threads", timeout=120, recorder=lambda s, r, a, p: records.append((s, r, p)))
    weights, history = out["server"]
    assert out["client_4"] == "dropped" and history.metric("dropped") == [0, 0, 0, 1]
    monkeypatch.setattr(FedClient, "train", real_train)
    names = sorted(data)
    sim = horizontal.simulate(model_fn, [data[c] for c in names], FedAvg(local=local), rounds=4,
                              secure_aggregation=SecAggConfig(epoch_rounds=4),
                              drop=lambda r, s, c: c == "client_4" and r == 3 and s == "upload")
    np.testing.assert_allclose(_flat(weights), _flat(sim.weights), atol=1e-6)
    # the audit: nothing any client sent the server equals (or is close to) an update, in any round
    refs = [(a, b, encode_fixed(b, cfg.frac_bits, cfg.bound)) for a, b in truth]
    seen = 0
    for sender, receiver, payload in records:
        if receiver != "server":
            continue
        for a in arrays(wire.loads(payload)):
            seen += 1
            for ref in (x for trio in refs for x in trio):
                assert not (a.shape == ref.shape and (np.array_equal(a, ref) or
                                                      (a.dtype.kind == "f" and np.allclose(a, ref, atol=1e-6))))
    assert seen >= 4 * 5 and len(truth) >= 4 * 5  # the audit looked at every round's uploads


@pytest.mark.slow
def test_multiround_fedavg_over_grpc_processes_equals_plain_simulation():
    """The deployment path: one OS process per party, gRPC with mutual TLS, keys agreed once for 3 rounds."""
    rng = np.random.default_rng(0)
    data = [(rng.normal(size=(40, 8)), rng.integers(0, 3, size=40)) for _ in range(4)]
    parties = {"server": Party("server", run_server, dict(weights=LogisticRegression(8, 3).get_weights(), rounds=3,
                                                          strategy=FedAvg(),
                                                          secure_aggregation=SecAggConfig(epoch_rounds=3)))}
    for i, d in enumerate(data):
        parties[f"client_{i}"] = Party("client", run_client, dict(model=LogisticRegression(8, 3), data=d))
    weights, history = launch(parties, mode="processes", timeout=120)["server"]
    plain = horizontal.simulate(lambda: LogisticRegression(8, 3), data, FedAvg(), rounds=3).weights
    np.testing.assert_allclose(_flat(weights), _flat(plain), atol=1e-6)
    assert len(history) == 3
