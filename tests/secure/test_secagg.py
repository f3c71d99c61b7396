"""Secure aggregation (SecAgg / SecAgg+): exact sums under dropouts, clear aborts, wire audit."""

from __future__ import annotations

import numpy as np
import pytest

from atoll import wire
from atoll.federation import Party, PartyFailed, launch
from atoll.secure import secagg
from atoll.secure.secagg import SecAggAborted, SecAggConfig, simulate_secagg
from wire_audit import arrays

D = 650  # digits logistic regression: 64 x 10 + 10


def _inputs(n: int, seed: int = 0, d: int = D) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"client_{i:03d}": rng.normal(scale=3.0, size=d) for i in range(n)}


def _plain_sum(inputs, who, cfg):
    enc = sum(secagg.encode_fixed(inputs[u], cfg.frac_bits, cfg.bound) for u in who)
    return secagg.decode_fixed(enc, cfg.frac_bits)


def _spread_drops(names, k):
    """k dropped clients spread over the four stages."""
    dropped = names[:k]
    q = [dropped[i::4] for i in range(4)]
    return {stage: set(part) for stage, part in zip(secagg.STAGES, q)}


@pytest.mark.parametrize("frac", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("degree", [None, 60], ids=["secagg", "secagg+"])
def test_exact_sum_of_100_clients_with_dropouts_at_every_stage(frac, degree):
    inputs = _inputs(100, seed=int(frac * 10))
    cfg = SecAggConfig(degree=degree)
    names = sorted(inputs)
    drops = _spread_drops(names, int(frac * 100))
    res = simulate_secagg(inputs, cfg, drops)
    gone_before_upload = drops.get("advertise", set()) | drops.get("share", set()) | drops.get("masked", set())
    assert res.contributors == sorted(set(names) - gone_before_upload)
    # clients that dropped after uploading (unmask stage) are in the sum
    assert drops.get("unmask", set()) <= set(res.contributors)
    np.testing.assert_array_equal(res.sum, _plain_sum(inputs, res.contributors, cfg))  # exact after decoding
    np.testing.assert_allclose(res.sum, sum(inputs[u] for u in res.contributors), atol=1e-5)
    # the server learned the self-mask seeds of uploaders only and the mask keys of dropped sharers only
    assert res.revealed["b"] == set(res.contributors)
    assert res.revealed["s"] == drops.get("masked", set())


@pytest.mark.parametrize("stage", secagg.STAGES)
def test_dropouts_at_each_single_stage(stage):
    inputs = _inputs(12, seed=3, d=40)
    names = sorted(inputs)
    res = simulate_secagg(inputs, SecAggConfig(), {stage: set(names[:3])})
    expect = names if stage == "unmask" else names[3:]
    assert res.contributors == expect
    np.testing.assert_allclose(res.sum, sum(inputs[u] for u in expect), atol=1e-6)


@pytest.mark.parametrize("stage", secagg.STAGES)
def test_too_many_dropouts_abort_clearly(stage):
    inputs = _inputs(20, seed=4, d=30)
    names = sorted(inputs)
    with pytest.raises(SecAggAborted, match=r"aborted at stage|shares of"):
        simulate_secagg(inputs, SecAggConfig(), {stage: set(names[:11])})


def test_secagg_plus_graph_is_regular_and_symmetric():
    inputs = _inputs(30, seed=5, d=10)
    nbrs = secagg.harary_neighbours(sorted(inputs), 6, seed=1)
    assert all(len(v) == 6 for v in nbrs.values())
    assert all(u in nbrs[v] for u in nbrs for v in nbrs[u])  # symmetric graph


def test_secagg_plus_aborts_when_a_neighbourhood_dies(monkeypatch):
    """30 clients, degree 6, threshold 4: three of one client's neighbours vanish (10% of all clients,
    far below the full graph's limit) and the round stops, naming that client."""
    inputs = _inputs(30, seed=5, d=10)
    names = sorted(inputs)
    monkeypatch.setattr(secagg.secrets, "randbits", lambda bits: 1)  # fix the server's graph seed
    victim = names[0]
    gone = set(secagg.harary_neighbours(names, 6, seed=1)[victim][:3])
    with pytest.raises(SecAggAborted, match=rf"stage 'share': client '{victim}' has 3 live neighbours"):
        simulate_secagg(inputs, SecAggConfig(degree=6), {"share": gone})
    # the same three clients dropping from a full graph (threshold 15 of 29) is survivable
    res = simulate_secagg(inputs, SecAggConfig(), {"share": gone})
    np.testing.assert_allclose(res.sum, sum(inputs[u] for u in res.contributors), atol=1e-6)


def test_corrupted_share_is_detected(monkeypatch):
    inputs = _inputs(8, seed=6, d=10)
    original = secagg.SecAggClient._unmask

    def tampered(self, msg):
        out = original(self, msg)
        if self.name == "client_000":
            # flip one bit of each revealed share (a share is big-endian uint32 chunks of GF(2^31 - 1))
            out["b"] = {v: bytes([y[0]]) + bytes([y[1] ^ 1]) + y[2:] for v, y in out["b"].items()}
        return out

    monkeypatch.setattr(secagg.SecAggClient, "_unmask", tampered)
    # threshold 7 of 7 neighbours: the tampered share is always used
    with pytest.raises(SecAggAborted, match="corrupted share|could not reconstruct"):
        simulate_secagg(inputs, SecAggConfig(threshold_fraction=0.99))


def test_fixed_point_headroom_and_bounds():
    with pytest.raises(Exception, match="overflow"):
        secagg.check_headroom(1000, 2.0 ** 30, 30)
    assert secagg.check_headroom(100, 2.0 ** 16, 24) <= 63
    with pytest.raises(Exception, match="exceed the secure-aggregation bound"):
        secagg.encode_fixed(np.array([1e9]), 24, 2.0 ** 16)
    # worst case at the bound: n clients all at +bound and all at -bound decode exactly
    x = np.array([2.0 ** 16, -(2.0 ** 16)])
    s = sum(secagg.encode_fixed(x, 24, 2.0 ** 16) for _ in range(100))
    np.testing.assert_array_equal(secagg.decode_fixed(s, 24), 100 * x)


def test_client_refuses_out_of_order_and_double_unmask():
    c = secagg.SecAggClient("a", np.zeros(3), SecAggConfig())
    with pytest.raises(SecAggAborted, match="out of order"):
        c.handle({"stage": "masked"})
    # a second unmask request (a server fishing for both shares of one neighbour) is refused
    inputs = _inputs(5, seed=7, d=4)
    cfg = SecAggConfig()
    states = {u: secagg.SecAggClient(u, x, cfg) for u, x in inputs.items()}
    refused = []

    def call(stage, msgs):
        out = {u: states[u].handle(m) for u, m in msgs.items()}
        if stage == "unmask":
            u = next(iter(msgs))
            with pytest.raises(SecAggAborted, match="out of order|twice"):
                states[u].handle({**msgs[u], "u3": []})
            refused.append(u)
        return out

    res = secagg.SecAggServer(cfg).aggregate(call, sorted(inputs), 4)
    assert refused and np.allclose(res.sum, sum(inputs.values()), atol=1e-6)


# ------------------------------------------------------------------ deployment wire audit

def _fed_setup(n=6, d_feat=8, seed=0):
    from atoll.ml.horizontal import LogisticRegression

    rng = np.random.default_rng(seed)
    data = {f"client_{i}": (rng.normal(size=(30, d_feat)), rng.integers(0, 3, size=30)) for i in range(n)}
    return data, (lambda: LogisticRegression(d_feat, 3))


def _run_deployment(secure, drop=None, rounds=1):
    from atoll.ml.horizontal import FedAvg, run_client, run_server

    data, model_fn = _fed_setup()
    records = []

    def recorder(sender, receiver, address, payload):
        records.append((sender, receiver, address, payload))

    parties = {"server": Party("server", run_server, dict(
        weights=model_fn().get_weights(), rounds=rounds, strategy=FedAvg(local={"epochs": 1, "batch_size": 5, "lr": 0.1}),
        secure_aggregation=SecAggConfig(stage_timeout=2.0 if drop else 30.0) if secure else None,
        stage_timeout=None if secure else 30.0))}
    for name, d in data.items():
        parties[name] = Party("client", run_client, dict(model=model_fn(), data=d,
                                                          drop_at=drop.get(name) if drop else None))
    out = launch(parties, mode="threads", recorder=recorder, timeout=60)
    return out, records, data, model_fn


def _true_vectors(data, model_fn):
    """Each client's plaintext update and its secure-aggregation vector, recomputed offline."""
    from atoll.ml.horizontal import FedClient

    msg = {"type": "fit", "round": 0, "weights": model_fn().get_weights(),
           "config": {"epochs": 1, "batch_size": 5, "lr": 0.1, "seed": 0}}
    out = {}
    for name, d in data.items():
        t = FedClient(name, model_fn(), d).train(msg)
        out[name] = (t["update"], FedClient.secure_vector(t))
    return out


def _leaks(records, truth):
    found = set()
    for sender, receiver, _, payload in records:
        if receiver != "server":
            continue
        for a in arrays(wire.loads(payload)):
            for name, (upd, vec) in truth.items():
                for ref in (upd, vec, secagg.encode_fixed(vec, 24, 2.0 ** 16)):
                    if a.shape == ref.shape and (np.array_equal(a, ref) or
                                                 (a.dtype.kind == "f" and np.allclose(a, ref, atol=1e-6))):
                        found.add(name)
    return found


def test_wire_audit_server_never_holds_an_individual_update():
    out, records, data, model_fn = _run_deployment(secure=True, drop={"client_2": (0, "masked")})
    truth = _true_vectors(data, model_fn)
    assert _leaks(records, truth) == set()
    # the secure result equals plaintext FedAvg over the clients that uploaded (client_2 dropped)
    weights, history = out["server"]
    assert history.rounds[0]["dropped"] == 1
    w0 = np.concatenate([w.ravel() for w in model_fn().get_weights()])
    ns = {k: len(v[1]) for k, v in data.items() if k != "client_2"}
    expect = w0 + sum(ns[k] * truth[k][0] for k in ns) / sum(ns.values())
    got = np.concatenate([w.ravel() for w in weights])
    np.testing.assert_allclose(got, expect, atol=1e-6)
    assert out["client_2"] == "dropped"


def test_wire_audit_detects_updates_in_plain_mode():
    # positive control: without secure aggregation the same audit finds every client's update
    _, records, data, model_fn = _run_deployment(secure=False)
    assert _leaks(records, _true_vectors(data, model_fn)) == set(data)


def test_deployment_aborts_when_too_many_clients_vanish():
    drop = {f"client_{i}": (0, "share") for i in range(4)}
    with pytest.raises(PartyFailed) as e:
        _run_deployment(secure=True, drop=drop)
    assert e.value.party == "server" and isinstance(e.value.error, SecAggAborted)


def test_secure_fedavg_over_grpc_processes_equals_plain_simulation():
    """The deployment path: one OS process per party, gRPC with mutual TLS, secure aggregation on."""
    from atoll import horizontal
    from atoll.ml.horizontal import FedAvg, LogisticRegression, run_client, run_server

    rng = np.random.default_rng(0)
    data = [(rng.normal(size=(40, 8)), rng.integers(0, 3, size=40)) for _ in range(3)]
    parties = {"server": Party("server", run_server, dict(weights=LogisticRegression(8, 3).get_weights(), rounds=2,
                                                          strategy=FedAvg(), secure_aggregation=SecAggConfig()))}
    for i, d in enumerate(data):
        parties[f"client_{i}"] = Party("client", run_client, dict(model=LogisticRegression(8, 3), data=d))
    weights, history = launch(parties, mode="processes", timeout=120)["server"]
    plain = horizontal.simulate(lambda: LogisticRegression(8, 3), data, FedAvg(), rounds=2).weights
    for a, b in zip(weights, plain):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert len(history) == 2


def test_kdf_is_rfc5869_hkdf_sha256():
    import os

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    for _ in range(5):
        secret, info = os.urandom(32), b"atoll-secagg-mask|%d" % int.from_bytes(os.urandom(2), "big")
        want = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)
        assert secagg.kdf(secret, info) == want


def test_batched_key_agreement_equals_one_openssl_call_each():
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from atoll.errors import CryptoError
    from atoll.secure.secagg import agree, agree_many

    sk = X25519PrivateKey.generate()
    pubs = [X25519PrivateKey.generate().public_key().public_bytes_raw() for _ in range(13)]
    assert agree_many(sk, pubs) == [agree(sk, p) for p in pubs]
    # an independent oracle too (the comparison above is OpenSSL against OpenSSL where IPP is absent):
    # RFC 7748 section 5.2, first test vector
    rfc = X25519PrivateKey.from_private_bytes(bytes.fromhex(
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"))
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    assert agree_many(rfc, [u, u]) == [bytes.fromhex(
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")] * 2
    assert agree_many(sk, []) == []
    with pytest.raises(CryptoError, match="small order"):
        agree_many(sk, pubs[:3] + [bytes(32)])  # the all-zero u-coordinate: a small-order point
    with pytest.raises(CryptoError, match="not 32 bytes"):
        agree_many(sk, [b"short"])
