"""Simulation engine: bounded memory, backends agree, secure aggregation with dropouts in simulate(),
the torch adapter (skipped without torch) and the Ray backend (skipped without Ray)."""

from __future__ import annotations

import functools
import weakref

import numpy as np
import pytest

from atoll import horizontal
from atoll.ml.horizontal import FedAvg, LogisticRegression


def _flat(ws):
    return np.concatenate([np.ravel(w) for w in ws])


def test_clients_are_materialised_only_while_they_train():
    alive, peak, made = [0], [0], [0]

    def dec():
        alive[0] -= 1

    def data_fn(i):
        rng = np.random.default_rng(i)
        x = rng.normal(size=(20, 8))
        made[0] += 1
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        weakref.finalize(x, dec)
        return x, rng.integers(0, 3, size=20)

    _, h = horizontal.simulate(lambda: LogisticRegression(8, 3), data_fn, FedAvg(fraction_fit=0.5), rounds=3,
                               num_clients=300)
    assert made[0] == 3 * 150
    assert peak[0] <= 2  # never more than the client in hand (plus one being released)
    assert len(h) == 3


def test_backends_give_the_same_model(digits_clients):
    model_fn = functools.partial(LogisticRegression, 64, 10)
    kw = dict(strategy=FedAvg(fraction_fit=0.5), rounds=3, seed=4)
    ref = horizontal.simulate(model_fn, digits_clients, **kw).weights
    for backend in ("threads", "processes"):
        got = horizontal.simulate(model_fn, digits_clients, backend=backend, workers=2, **kw).weights
        np.testing.assert_allclose(_flat(got), _flat(ref), atol=1e-12, err_msg=backend)


def test_secure_aggregation_in_simulate_equals_plain_fedavg_with_the_same_dropouts(digits_clients):
    model_fn = functools.partial(LogisticRegression, 64, 10)
    gone = {"client_3", "client_7"}
    plain = horizontal.simulate(model_fn, digits_clients, FedAvg(), rounds=3,
                                drop=lambda r, stage, c: c in gone and stage == "fit").weights
    # the same two clients vanish after sharing their keys, i.e. before uploading masked input
    sec, hist = horizontal.simulate(model_fn, digits_clients, FedAvg(), rounds=3, secure_aggregation=True,
                                    drop=lambda r, stage, c: c in gone and stage == "masked")
    np.testing.assert_allclose(_flat(sec.get_weights()), _flat(plain), atol=1e-6)
    assert hist.metric("dropped") == [2, 2, 2]


def test_secure_aggregation_aborts_instead_of_keeping_an_old_model(digits_clients):
    with pytest.raises(horizontal.SecAggAborted, match="aborted at stage"):
        horizontal.simulate(functools.partial(LogisticRegression, 64, 10), digits_clients, FedAvg(), rounds=2,
                            secure_aggregation=True, drop=lambda r, s, c: r == 1 and s == "share" and c < "client_6")


def test_torch_mlp_and_cnn(digits, digits_clients):
    torch = pytest.importorskip("torch", reason="torch is an optional extra (pip install 'atoll[torch]')")

    from atoll.ml.horizontal import torch_model

    _, xte, _, yte = digits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra intra-op threads only contend on a shared 2-core box
    try:
        _torch_models(torch, torch_model, digits_clients, xte, yte)
    finally:
        torch.set_num_threads(threads)


def _torch_models(torch, torch_model, digits_clients, xte, yte):
    def mlp():
        torch.manual_seed(0)
        return torch_model.TorchModel(torch_model.mlp(64, 10, hidden=(32,)))

    def cnn():
        torch.manual_seed(0)
        return torch_model.TorchModel(torch_model.cnn(8, 10, channels=8))

    for fn in (mlp, cnn):
        model, h = horizontal.simulate(fn, digits_clients, FedAvg(local={"epochs": 1, "batch_size": 10, "lr": 0.1}),
                                       rounds=8, test_data=(xte, yte))
        assert h.rounds[-1]["server_accuracy"] > 0.85, fn.__name__
        m2 = fn()
        m2.set_weights(model.get_weights())
        assert m2.evaluate(xte, yte)["accuracy"] == pytest.approx(h.rounds[-1]["server_accuracy"])


def test_ray_backend_small_simulation(digits_clients):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'atoll[ray]')")
    model_fn = functools.partial(LogisticRegression, 64, 10)
    kw = dict(strategy=FedAvg(fraction_fit=0.5), rounds=2, seed=4)
    try:
        got = horizontal.simulate(model_fn, digits_clients, backend="ray", workers=2, **kw).weights
    except Exception as e:  # noqa: BLE001 - Ray cannot start in some sandboxes
        if "ray" in type(e).__module__ or "Ray" in str(e):
            pytest.skip(f"Ray could not start here: {e}")
        raise
    finally:
        if ray.is_initialized():
            ray.shutdown()
    ref = horizontal.simulate(model_fn, digits_clients, **kw).weights
    np.testing.assert_allclose(_flat(got), _flat(ref), atol=1e-12)


def test_channel_reports_the_slowest_client_per_stage(digits_clients):
    from atoll.ml.horizontal import FedServer, SimulationChannel
    from atoll.secure.secagg import STAGES

    model_fn = functools.partial(LogisticRegression, 64, 10)
    channel = SimulationChannel(model_fn, digits_clients[:4])
    FedServer(model_fn().get_weights(), 2, FedAvg(), secure_aggregation=True).run(channel)
    for rnd in (0, 1):
        times = channel.slowest_client_s[rnd]
        assert set(times) == {"train", *STAGES} and all(t > 0 for t in times.values())
