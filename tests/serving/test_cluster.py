"""The enclave serving cluster on the simulated backend: key sync, re-sync, scaling, upgrade, rollback."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from atoll import datasets
from atoll.serving.cluster import ClusterClient, ClusterManager, EnclaveService, key_hash
from atoll.tee.base import SIMULATED_MARK, TeeError
from atoll.tee.channel import attested_connect
from atoll.tee.simulated import SimulatedPlatform, SimulatedRuntime
from atoll.tee.training import TeeTrainParams, model_payload

M1, M2 = "11" * 32, "22" * 32


def wait_until(cond, what, bound=20.0):
    deadline = time.monotonic() + bound
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {bound} s: {what}")
        time.sleep(0.05)


def _payload(algorithm, x, y, **kw):
    p = TeeTrainParams(algorithm=algorithm, **kw)
    est = p.estimator(0).fit(x, y)
    return model_payload(est, p, 0, [f"x{k}" for k in range(x.shape[1])]), est


@pytest.fixture(scope="module")
def data():
    df = datasets.load("breast", "hetero", "guest")
    x, y = df.drop(columns="y").to_numpy(float), df["y"].to_numpy()
    model, clf = _payload("logistic_regression", x[:400], y[:400], max_iter=500)
    return {"model": model, "x": x[400:], "clf": clf, "y": y}


@pytest.fixture
def cluster(tmp_path):
    platform = SimulatedPlatform(tmp_path / "platform")
    cm = ClusterManager(dead_after=1.0)
    services = []

    def enclave(measurement=M1, **kw):
        s = EnclaveService(SimulatedRuntime(measurement, platform), cm, interval=0.1, **kw).start()
        services.append(s)
        return s

    yield cm, platform, enclave
    for s in services:
        s.stop(deregister=False)


def in_sync(cm, *services):
    live = {m.id for m in cm.live_members(services[0].runtime.measurement)}
    return all(s.id in live for s in services)


def test_identical_enclaves_sync_keys_and_serve_the_oracles_scores(cluster, data):
    cm, platform, enclave = cluster
    first = enclave(model=data["model"])
    others = [enclave(model_blob=None) for _ in range(2)]
    wait_until(lambda: in_sync(cm, first, *others), "three enclaves in sync")
    assert len({s.key_hash for s in (first, *others)}) == 1 and first.key_hash == cm.group_key_hash()
    assert [e for e, _, _ in cm.log].count("genesis") == 1 and [e for e, _, _ in cm.log].count("sync") >= 2
    assert cm.status()["mark"] == SIMULATED_MARK
    client = ClusterClient(cm, platform.policy([M1]))
    try:
        want = data["clf"].predict_proba(data["x"])[:, 1]
        got = np.concatenate([client.predict(data["x"][k:k + 10]) for k in range(0, 60, 10)])
        np.testing.assert_allclose(got, want[:60], rtol=0, atol=1e-12)
        assert sum(s.served > 0 for s in (first, *others)) >= 2      # load spread over members
    finally:
        client.close()


def test_another_measurement_never_gets_the_key(cluster, data):
    cm, platform, enclave = cluster
    first = enclave(model=data["model"])
    wait_until(lambda: in_sync(cm, first), "genesis")
    stranger = enclave(M2, model=data["model"])
    wait_until(lambda: stranger.key_hash is not None, "the other measurement's own genesis")
    assert stranger.key_hash != first.key_hash                       # its own group, its own key
    assert ("sync", stranger.id, M2) not in cm.log                   # the CM never ordered a cross sync
    with pytest.raises(TeeError):                                    # the stranger will not take M1's key...
        stranger.sync_from(first.peer_server.address)
    with pytest.raises(TeeError, match="refused this client"):       # ...and M1's member refuses to give it
        attested_connect(first.peer_server.address, platform.policy([M1]), runtime=stranger.runtime, timeout=5)
    assert stranger.key_hash != first.key_hash


def test_a_member_with_a_wrong_key_hash_is_resynced(cluster, data):
    cm, platform, enclave = cluster
    a = enclave(model=data["model"])
    b = enclave()
    wait_until(lambda: in_sync(cm, a, b), "two in sync")
    good = a.key_hash
    b.corrupt_key_for_test()
    assert b.key_hash != good
    syncs = sum(1 for e, mid, _ in cm.log if e == "sync" and mid == b.id)
    wait_until(lambda: b.key_hash == good, "re-sync after the heartbeat showed the wrong hash")
    assert sum(1 for e, mid, _ in cm.log if e == "sync" and mid == b.id) > syncs


def test_scaling_1_to_3_and_back_and_a_dead_member_lose_no_request(cluster, data):
    cm, platform, enclave = cluster
    a = enclave(model=data["model"])
    wait_until(lambda: in_sync(cm, a), "genesis")
    client = ClusterClient(cm, platform.policy([M1]))
    want = data["clf"].predict_proba(data["x"][:5])[:, 1]
    results, errors, stop = [], [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                results.append(client.predict(data["x"][:5]))
            except Exception as e:  # noqa: BLE001 - counted, must stay zero
                errors.append(e)

    t = threading.Thread(target=load)
    t.start()
    try:
        b, c = enclave(), enclave()
        wait_until(lambda: in_sync(cm, a, b, c), "scaled to 3")
        wait_until(lambda: b.served > 0 and c.served > 0, "new members take traffic")
        b.stop()                                                     # scale down: leave, then stop
        a.stop()
        wait_until(lambda: len(cm.live_members()) == 1, "scaled back to 1")
        d = enclave()
        wait_until(lambda: in_sync(cm, c, d), "a fresh member")
        n = len(results)
        d.stop(deregister=False)                                     # dies without a word
        wait_until(lambda: len(results) > n + 20, "traffic goes on after a death")
    finally:
        stop.set()
        t.join(20)
        client.close()
    assert not errors and len(results) > 20
    for r in results:
        np.testing.assert_allclose(r, want, atol=1e-12)


def test_rolling_upgrade_to_a_new_measurement_and_rollback(cluster, data):
    cm, platform, enclave = cluster
    old = enclave(model=data["model"])
    wait_until(lambda: in_sync(cm, old), "old group")
    df = datasets.load("breast", "hetero", "guest")
    xgb_model, booster = _payload("xgboost", df.drop(columns="y").to_numpy(float)[:400], df["y"].to_numpy()[:400],
                                  n_estimators=20, max_depth=3)
    new = enclave(M2, model=xgb_model)                                   # the upgrade: another model kind too
    wait_until(lambda: new.key_hash is not None and cm.group_key_hash(M2) == new.key_hash, "new group")
    client = ClusterClient(cm, platform.policy([M1, M2]))
    try:
        x = data["x"][:4]
        before = client.predict(x)
        cm.activate(M2)
        upgraded = client.predict(x)
        assert new.served == 1 and not np.allclose(upgraded, before)
        np.testing.assert_allclose(upgraded, booster.predict_proba(x)[:, 1], rtol=0, atol=1e-6)
        cm.rollback()
        np.testing.assert_allclose(client.predict(x), before, atol=0)
        assert key_hash(old.public_key) == cm.group_key_hash()
    finally:
        client.close()


def test_cluster_manager_over_the_network(tmp_path, data):
    import socket

    from atoll.serving.cluster import ClusterManagerServer, RemoteClusterManager
    from atoll.tee.channel import Framed

    platform = SimulatedPlatform(tmp_path / "platform")
    server = ClusterManagerServer(ClusterManager(dead_after=1.0))
    remote = RemoteClusterManager(server.address)
    a = EnclaveService(SimulatedRuntime(M1, platform), RemoteClusterManager(server.address), model=data["model"],
                       interval=0.1).start()
    b = EnclaveService(SimulatedRuntime(M1, platform), RemoteClusterManager(server.address), interval=0.1).start()
    client = ClusterClient(remote, platform.policy([M1]))
    try:
        wait_until(lambda: {m.id for m in remote.live_members()} == {a.id, b.id}, "both members via the remote CM")
        np.testing.assert_allclose(client.predict(data["x"][:3]), data["clf"].predict_proba(data["x"][:3])[:, 1],
                                   atol=1e-12)
        with socket.create_connection(server.address) as raw:       # hostile requests: refused, server lives on
            chan = Framed(raw)
            for bad in ({"op": "register", "id": 1}, {"op": "nope"}, {"op": "heartbeat", "id": "x", "key_hash": 3,
                                                                       "load": "y"}, [1, 2]):
                chan.send(bad)
                assert "error" in chan.recv()
            raw.sendall(b"\xff\xff\xff\xff")                         # a frame far over the limit
        assert remote.group_key_hash() == a.key_hash
        assert {m.measurement for m in remote.live_members()} == {M1}
    finally:
        client.close()
        a.stop()
        b.stop()
        server.close()
