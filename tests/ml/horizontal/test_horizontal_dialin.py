"""Horizontal FL over the dial-in transport: 20 client processes dial out over TLS and train what
the simulation trains (one of them crashing mid-round and rejoining), clients listen on no port,
secure aggregation and DP run unchanged, missing clients are dropouts, not failures."""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from atoll import horizontal
from atoll.errors import FederationError
from atoll.federation.certs import TlsConfig, init_certs
from atoll.federation.dialin import DialInServer
from atoll.federation.tokens import TokenStore
from atoll.hfl import HflClient, HflServer, ModelSpec
from atoll.ml.horizontal import DPConfig, FedAvg, LogisticRegression, partition
from atoll.secure.secagg import SecAggConfig

sys.path.insert(0, str(Path(__file__).parent))
import dialin_procs  # noqa: E402

LOCAL = {"epochs": 1, "batch_size": 10, "lr": 0.1}
SPEC = ModelSpec(kind="logistic_regression", n_features=64, n_classes=10)


def _flat(ws):
    return np.concatenate([np.ravel(w) for w in ws])


def _listening(pid):
    import psutil

    p = psutil.Process(pid)
    conns = p.net_connections("all")
    return ([c for c in conns if c.status == psutil.CONN_LISTEN or (c.type == 2 and c.laddr)],  # 2: SOCK_DGRAM
            [c for c in conns if c.status == psutil.CONN_ESTABLISHED])


def test_twenty_client_processes_dial_out_and_train_what_the_simulation_trains(digits, tmp_path):
    xtr, xte, ytr, yte = digits
    n, rounds, crasher = 20, 8, "client_07"
    names = [f"client_{i:02d}" for i in range(n)]
    data = {c: (xtr[p], ytr[p]) for c, p in zip(names, partition.iid(len(xtr), n, seed=0))}
    certdir = init_certs(["server", *names[:10]], tmp_path / "certs", days=1)  # 10 with certificates
    tokens = TokenStore(tmp_path / "tokens.json")
    issued = {c: tokens.issue(c) for c in names[10:]}                        # 10 with enrolment tokens
    endpoint = DialInServer(TlsConfig.load(certdir, "server"), listen="127.0.0.1:0",
                            token_listen="127.0.0.1:0", tokens=tokens).start()
    cert_addr, token_addr = f"127.0.0.1:{endpoint.port}", f"127.0.0.1:{endpoint.token_port}"

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["atoll.hfl", "atoll.ml.horizontal.roles", "dialin_procs"])
    out = ctx.Queue()

    def start(c, crash=None):
        kw = {"certdir": str(certdir), "crash_at_fit": crash}
        if c in issued:
            kw["token"] = issued[c]
        p = ctx.Process(target=dialin_procs.client, args=(token_addr if c in issued else cert_addr, c, data[c], out),
                        kwargs=kw, daemon=True)
        p.start()
        return p

    procs = {c: start(c, crash=3 if c == crasher else None) for c in names}  # dies in its 3rd fit: round 2
    server = HflServer(endpoint, SPEC, names, rounds, strategy=FedAvg(min_fit_clients=n, local=LOCAL),
                       test_data=(xte, yte), seed=0, round_timeout=30, wait_timeout=60)
    result = {}

    def serve():
        try:
            result.update(zip(("weights", "history"), server.run()))
        except BaseException as e:  # noqa: BLE001 - reported below, with what the clients said
            result["error"] = e

    th = threading.Thread(target=serve, daemon=True)
    try:
        th.start()
        # the server waits for all 20 before round 0; meanwhile: every client dialled out, none listens
        deadline = time.monotonic() + 60
        while len(endpoint.sessions("hfl")) < n and time.monotonic() < deadline and th.is_alive():
            time.sleep(0.05)
        if "error" in result:
            said = [out.get(timeout=5) for _ in range(sum(not p.is_alive() for p in procs.values()))]
            pytest.fail(f"the server failed: {result['error']}; clients said {said}")
        checked = 0
        for c, p in procs.items():
            try:
                listens, established = _listening(p.pid)
            except Exception:  # noqa: BLE001 - the crasher may already be gone
                assert c == crasher
                continue
            assert listens == [], (c, listens)
            ports = {conn.raddr.port for conn in established if conn.raddr}
            assert ports & {endpoint.port, endpoint.token_port}, (c, established)
            checked += 1
        assert checked >= n - 1
        # the crasher dies mid-round 2 (exit 17); a fresh process of the same client rejoins
        deadline = time.monotonic() + 60
        while procs[crasher].exitcode is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert procs[crasher].exitcode == 17
        procs[crasher] = start(crasher)
        th.join(timeout=120)
        assert not th.is_alive(), "the server did not finish"
        reports = {}
        for _ in range(n):
            name, status, sessions, trained, ended, flat = out.get(timeout=30)
            reports[name] = (status, sessions, trained, ended, flat)
    finally:
        endpoint.stop()
        for p in procs.values():
            p.join(timeout=10)
            if p.is_alive():
                p.kill()

    hist = result["history"]
    assert hist.metric("dropped") == [0, 0, 1] + [0] * (rounds - 3)  # the crash: a dropout of round 2
    assert hist.metric("clients") == [n] * rounds
    assert all(r.get("aggregated", True) for r in hist.rounds)
    # what the in-process simulation trains with the same seed and the same dropout, to the last bit
    sim = horizontal.simulate(lambda: LogisticRegression(64, 10), [data[c] for c in names],
                              FedAvg(min_fit_clients=n, local=LOCAL), rounds=rounds, test_data=(xte, yte), seed=0,
                              drop=lambda r, stage, c: r == 2 and stage == "fit" and c == crasher)
    np.testing.assert_allclose(_flat(result["weights"]), _flat(sim.weights), rtol=0, atol=1e-12)
    assert hist.metric("server_accuracy") == sim.history.metric("server_accuracy")
    assert hist.rounds[-1]["server_accuracy"] > 0.85
    for c in names:
        status, sessions, trained, ended, flat = reports[c]
        assert status == "ok" and ended == "the job finished", (c, reports[c])
        np.testing.assert_array_equal(flat, _flat(result["weights"]))  # every client got the final model
        # the rejoined process is in every round from round 3 on: the server waited for it
        assert (sessions, trained) == ((1, rounds - 3) if c == crasher else (1, rounds)), (c, reports[c])


@pytest.fixture(scope="module")
def five(tmp_path_factory, digits):
    xtr, _, ytr, _ = digits
    names = [f"client_{i}" for i in range(5)]
    certdir = init_certs(["server", *names], tmp_path_factory.mktemp("certs5"), days=1)
    data = {c: (xtr[p], ytr[p]) for c, p in zip(names, partition.iid(len(xtr), 5, seed=1))}
    return names, certdir, data


def _run_threads(five, server_kw, client_names=None, rounds=3, client_kw=None):
    """A dial-in server on loopback TLS and clients as threads of this process; (server result, clients')."""
    names, certdir, data = five
    endpoint = DialInServer(TlsConfig.load(certdir, "server"), listen="127.0.0.1:0").start()
    results, errors = {}, {}

    def client(c):
        try:
            results[c] = HflClient(f"127.0.0.1:{endpoint.port}", data[c], tls=TlsConfig.load(certdir, c),
                                   **(client_kw or {})).run()
        except Exception as e:  # noqa: BLE001
            errors[c] = e

    ts = [threading.Thread(target=client, args=(c,), daemon=True) for c in (client_names or names)]
    for t in ts:
        t.start()
    try:
        out = HflServer(endpoint, SPEC, names, rounds, **server_kw).run()
    finally:
        endpoint.stop()
        for t in ts:
            t.join(timeout=30)
    assert not errors, errors
    return out, results


def test_secure_aggregation_and_dp_run_unchanged_over_dial_in(five):
    names, _, data = five
    dp = DPConfig(noise_multiplier=0.5, clip_norm=5.0, noise_at="clients", seed=3)
    kw = dict(strategy=FedAvg(min_fit_clients=5, local=LOCAL), secure_aggregation=SecAggConfig(stage_timeout=20),
              dp=dp, seed=2)
    (weights, hist), _ = _run_threads(five, kw)
    sim = horizontal.simulate(lambda: LogisticRegression(64, 10), [data[c] for c in names],
                              FedAvg(min_fit_clients=5, local=LOCAL), rounds=3, secure_aggregation=True, dp=dp, seed=2)
    # the same masked protocol and the same seeded noise: the sums agree to the fixed-point encoding
    np.testing.assert_allclose(_flat(weights), _flat(sim.weights), atol=1e-6)
    assert hist.metric("epsilon") == sim.history.metric("epsilon")


def test_a_client_that_never_comes_is_a_dropout_and_min_clients_holds_the_round(five):
    names, _, data = five
    # four of five come; rounds start with four (min_clients=4) and every round is aggregated
    (weights, hist), res = _run_threads(five, dict(strategy=FedAvg(min_fit_clients=1, local=LOCAL), min_clients=4,
                                                   wait_timeout=30), client_names=names[:4])
    assert hist.metric("clients") == [4, 4, 4] and all(r.get("aggregated", True) for r in hist.rounds)
    sim = horizontal.simulate(lambda: LogisticRegression(64, 10), [data[c] for c in names[:4]],
                              FedAvg(min_fit_clients=1, local=LOCAL), rounds=3)
    np.testing.assert_allclose(_flat(weights), _flat(sim.weights), atol=1e-12)
    assert all(r.rounds_trained == 3 for r in res.values())
    # five are needed and only four come: the round waits wait_timeout, then says why
    with pytest.raises(FederationError, match="only 4 clients were connected after 1 s; a round needs 5"):
        _run_threads(five, dict(strategy=FedAvg(local=LOCAL), min_clients=5, wait_timeout=1),
                     client_names=names[:4], client_kw={"reconnect": False})
