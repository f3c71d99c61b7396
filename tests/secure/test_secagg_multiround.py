"""Multi-round secure aggregation: exact sums over many rounds with dropouts at every stage, keys agreed
once per epoch and rotated when a client re-keys, client-side refusals, and a wire audit over 20 rounds
(linear algebra over everything the server holds: no combination of it is one client's update)."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from atoll import wire
from atoll.secure import secagg_multiround as mr
from atoll.secure.secagg import SecAggAborted, SecAggConfig, decode_fixed, encode_fixed

L = 40


@pytest.fixture(autouse=True)
def fixed_graph(monkeypatch):
    """Fix the server's SecAgg+ graph seed (OS entropy otherwise) so that which clients neighbour which,
    and hence whether a small graph survives a given dropout plan, is the same on every run."""
    monkeypatch.setattr(mr.secrets, "randbits", lambda bits: 12345)


def _inputs(names, rounds, seed=0, d=L):
    rng = np.random.default_rng(seed)
    return [{u: rng.normal(scale=3.0, size=d) for u in names} for _ in range(rounds)]


def _names(n):
    return [f"client_{i:03d}" for i in range(n)]


def _plan(names, rounds, frac, seed):
    """``frac`` of the clients drop each round, each at a random stage (round 0: set-up stages too)."""
    plans = []
    for r in range(rounds):
        g = np.random.default_rng([seed, r])
        gone = g.choice(len(names), size=int(round(frac * len(names))), replace=False)
        stages = mr.STAGES if r == 0 else mr.STAGES[2:]
        plans.append({names[i]: stages[s] for i, s in zip(gone, g.integers(0, len(stages), size=len(gone)))})
    return plans


def _plain(inputs, who, cfg):
    return decode_fixed(sum(encode_fixed(inputs[u], cfg.frac_bits, cfg.bound) for u in who), cfg.frac_bits)


def _check_rounds(results, rounds, plans, cfg):
    for r, (res, inputs, plan) in enumerate(zip(results, rounds, plans)):
        np.testing.assert_array_equal(res.sum, _plain(inputs, res.contributors, cfg))  # exact after decoding
        np.testing.assert_allclose(res.sum, sum(inputs[u] for u in res.contributors), atol=1e-5)
        d = res.dropped
        for stage in mr.STAGES:  # the server reports exactly the clients that vanished at each stage
            assert set(d.get(stage, ())) <= {u for u, s in plan.items() if s == stage}, (r, stage)
        out = set().union(*(d.get(s, ()) for s in ("keys", "shares", "upload", "correct", "waiting", "excluded")))
        assert not out & set(res.contributors), r  # gone before the seeds were revealed: not in the sum
        assert set(d.get("reveal", ())) <= set(res.contributors), r  # gone after: in the sum, seed recovered
        assert set(res.contributors) | out == set(inputs), r  # everyone is accounted for
        assert {u for u, s in plan.items() if s == "upload"} <= out, r  # (every client is asked to upload)


def test_mask_streams_are_aes_ctr_from_the_rounds_counter_block():
    keys = [bytes(range(i, i + 16)) for i in range(3)]
    ecbs = [Cipher(algorithms.AES(k), modes.ECB()).encryptor() for k in keys]
    for rnd, length in ((0, 7), (5, 653), (2 ** 40, 10)):
        got = mr.mask_streams(ecbs, rnd, length)
        for k, row in zip(keys, got):
            ctr = Cipher(algorithms.AES(k), modes.CTR((rnd << 64).to_bytes(16, "big"))).encryptor()
            np.testing.assert_array_equal(row, np.frombuffer(ctr.update(bytes(8 * length)), dtype=np.uint64))
    # rounds use disjoint counter blocks: a stream revealed in one round says nothing about the next
    assert not np.array_equal(mr.mask_streams(ecbs[:1], 3, 50).copy(), mr.mask_streams(ecbs[:1], 4, 50))


def test_pair_keys_are_rfc5869_hkdf():
    import os

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    z = os.urandom(32)
    k_mask, k_enc = mr.derive_pair_keys(z, 3, "b", "a")
    info = b"3|a|b"
    assert k_mask == HKDF(hashes.SHA256(), 32, None, b"atoll-secagg-mr-mask|" + info).derive(z)[:16]
    assert k_enc == HKDF(hashes.SHA256(), 32, None, b"atoll-secagg-mr-enc|" + info).derive(z)
    assert mr.derive_pair_keys(z, 3, "a", "b") == (k_mask, k_enc)  # both ends derive the same keys
    assert mr.derive_pair_keys(z, 4, "a", "b")[0] != k_mask  # another epoch, another key


@pytest.mark.parametrize("frac", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("degree", [None, 30], ids=["secagg", "secagg+"])
def test_exact_sums_over_rounds_with_dropouts_at_every_stage(frac, degree):
    names = _names(40)
    rounds = _inputs(names, 6, seed=int(frac * 10))
    plans = _plan(names, 6, frac, seed=1)
    cfg = SecAggConfig(degree=degree, epoch_rounds=6)
    results = mr.simulate_multiround(rounds, cfg, lambda r, s, u: plans[r].get(u) == s)
    _check_rounds(results, rounds, plans, cfg)
    if frac == 0:
        assert all(res.contributors == names for res in results)


@pytest.mark.slow
def test_exact_sums_100_clients_20_rounds_30_percent_dropping():
    """The full graph here; SecAgg+ (degree 60) at the same size is the 100-client wire audit below."""
    names = _names(100)
    rounds = _inputs(names, 20, seed=2, d=650)
    plans = _plan(names, 20, 0.3, seed=3)
    cfg = SecAggConfig(epoch_rounds=20)
    results = mr.simulate_multiround(rounds, cfg, lambda r, s, u: plans[r].get(u) == s)
    _check_rounds(results, rounds, plans, cfg)
    assert np.mean([len(r.contributors) for r in results]) > 75  # 30 drop, 7-8 of them after uploading


def test_keys_are_agreed_once_per_epoch_and_rotated_with_it(monkeypatch):
    names = _names(10)
    counted = []
    real = mr.agree_many
    monkeypatch.setattr(mr, "agree_many", lambda sk, pubs: counted.append(len(pubs)) or real(sk, pubs))
    pks = {}

    def rec(rnd, stage, sender, receiver, payload):
        if stage == "keys" and receiver == "server":
            pks.setdefault(rnd, {})[sender] = wire.loads(payload)["pk"]

    rounds = _inputs(names, 6)
    results = mr.simulate_multiround(rounds, SecAggConfig(epoch_rounds=3), recorder=rec)
    assert [len(r.contributors) for r in results] == [10] * 6
    # epochs [0, 3) and [3, 6): one X25519 agreement per client and neighbour per epoch, none in between
    assert sum(counted) == 2 * 10 * 9
    assert sorted(pks) == [0, 3] and not set(pks[0].values()) & set(pks[3].values())


def _harness(names, cfg):
    server = mr.MultiRoundSecAggServer(cfg)
    states = {u: mr.MultiRoundSecAggClient(u) for u in names}

    def run(rnd, inputs, drop=lambda s, u: False, tamper=None):
        fed: set[str] = set()

        def call(stage, msgs):
            out = {}
            for u, m in msgs.items():
                if drop(stage, u):
                    continue
                reply = states[u].handle(wire.loads(wire.dumps(m)), inputs[u] if u not in fed else None)
                fed.add(u)
                out[u] = tamper(stage, u, reply) if tamper else reply
            return out

        return server.aggregate(call, names, L, rnd)

    return server, states, run


def test_a_client_that_lost_its_state_re_keys_and_its_pairs_rotate():
    names = _names(8)
    cfg = SecAggConfig(epoch_rounds=10)
    _, states, run = _harness(names, cfg)
    rounds = _inputs(names, 5, seed=4)
    for r in range(2):
        np.testing.assert_allclose(run(r, rounds[r]).sum, sum(rounds[r].values()), atol=1e-6)
    victim, other = names[3], names[5]
    old_pk = states[other]._peer_pk[victim]
    old_cipher = states[other]._pairs[victim][0]
    states[victim] = mr.MultiRoundSecAggClient(victim)  # a restart: keys, seeds and held shares are gone
    res = run(2, rounds[2])
    assert victim not in res.contributors  # it asked to re-key: a dropout this round, the sum is exact
    np.testing.assert_allclose(res.sum, sum(rounds[2][u] for u in res.contributors), atol=1e-6)
    res = run(3, rounds[3])  # it re-keyed (new X25519 key, new seeds) and takes part again
    assert res.contributors == names
    np.testing.assert_allclose(res.sum, sum(rounds[3].values()), atol=1e-6)
    assert states[other]._peer_pk[victim] != old_pk  # its pairs were rotated: new agreement, new mask key
    assert states[other]._pairs[victim][0] is not old_cipher
    assert victim not in states[other]._held or states[other]._held[victim][0] == 3  # old shares dropped


def test_a_client_that_missed_the_set_up_joins_later_in_the_epoch():
    names = _names(12)
    _, states, run = _harness(names, SecAggConfig(epoch_rounds=6))
    rounds = _inputs(names, 4, seed=5)
    late = names[2]
    res = run(0, rounds[0], drop=lambda s, u: u == late and s == "keys")
    assert late not in res.contributors
    for r in (1, 2, 3):
        res = run(r, rounds[r])
        assert res.contributors == names
        np.testing.assert_allclose(res.sum, sum(rounds[r].values()), atol=1e-6)
    # the neighbours dealt it shares of their seeds once they had its key (holder from round 2 on)
    assert all(states[late]._held[v][0] == 2 for v in names if v != late)


def test_clients_refuse_what_would_leak():
    names = _names(8)
    cfg = SecAggConfig(epoch_rounds=10)
    _, states, run = _harness(names, cfg)
    rounds = _inputs(names, 3, seed=6)
    run(0, rounds[0], drop=lambda s, u: u == names[0] and s == "upload")  # others corrected for names[0]
    c = states[names[1]]
    assert names[0] in c._corrected
    # never both: a client that corrected for a neighbour will not reveal its seed share
    with pytest.raises(SecAggAborted, match="out of order"):
        c.handle({"stage": "reveal", "round": 0, "epoch": c.epoch, "alive": [names[0]]})
    c._done.discard("reveal")
    with pytest.raises(SecAggAborted, match="corrected for"):
        c.handle({"stage": "reveal", "round": 0, "epoch": c.epoch, "alive": [names[0]]})
    # nothing goes back to an earlier round, and correct/reveal cannot open a round
    with pytest.raises(SecAggAborted, match="after round"):
        c.handle({"stage": "upload", "round": -1 + 0, "epoch": c.epoch, "mask": []})
    with pytest.raises(SecAggAborted, match="cannot open round"):
        c.handle({"stage": "reveal", "round": 1, "epoch": c.epoch, "alive": []})
    # an upload with fewer mask partners than the threshold would expose the input: refused
    with pytest.raises(SecAggAborted, match="mask partners"):
        c.handle({"stage": "upload", "round": 1, "epoch": c.epoch, "mask": names[2:4], "keys": {}, "payloads": {}},
                 rounds[1][names[1]])
    # with a low threshold a client needs more partners (k - t + 1): then the neighbours left to reveal
    # its seed are too few, even if every partner was told it dropped
    assert mr.min_mask_set(9, 5) == 5 and mr.min_mask_set(9, 3) == 7
    fresh = mr.MultiRoundSecAggClient("a")
    keys = {"stage": "keys", "round": 0, "epoch": 0, "epoch_start": 0, "epoch_end": 5, "clients": list("abcdefghij"),
            "degree": None, "graph_seed": 1, "threshold": 3, "frac_bits": 24, "bound": 2.0 ** 16, "length": L}
    fresh.handle(keys)
    assert fresh.min_mask == 7
    with pytest.raises(SecAggAborted, match="does not fit"):
        mr.MultiRoundSecAggClient("a").handle({**keys, "threshold": 10})
    # a message for an epoch it does not know is a re-key request, not an error
    assert mr.MultiRoundSecAggClient("a").handle({"stage": "upload", "round": 0, "epoch": 7, "mask": []}) == \
        {"rekey": True}


def test_too_many_dropouts_abort_clearly():
    names = _names(12)
    rounds = _inputs(names, 2, seed=7)
    with pytest.raises(SecAggAborted, match="aborted at stage 'correct'"):
        mr.simulate_multiround(rounds, SecAggConfig(epoch_rounds=2),
                               lambda r, s, u: r == 1 and s == "upload" and u < names[7])
    with pytest.raises(SecAggAborted, match="aborted at stage 'reveal'"):
        mr.simulate_multiround(rounds, SecAggConfig(epoch_rounds=2),
                               lambda r, s, u: r == 1 and s == "reveal" and u < names[7])


def test_corrupted_share_is_detected():
    names = _names(8)
    _, _, run = _harness(names, SecAggConfig(epoch_rounds=3, threshold_fraction=0.99))
    rounds = _inputs(names, 1, seed=8)

    def tamper(stage, u, reply):
        if stage == "reveal" and u == names[0]:
            b = bytearray(reply["shares"])
            b[3] ^= 1
            return {"shares": bytes(b)}
        return reply

    with pytest.raises(SecAggAborted, match="corrupted share|could not reconstruct"):
        run(0, rounds[0], tamper=tamper)


# ------------------------------------------------------------------ wire audit over many rounds

def _audit(n, rounds_n, degree, frac, seed):
    names = _names(n)
    rounds = _inputs(names, rounds_n, seed=seed, d=L)
    plans = _plan(names, rounds_n, frac, seed=seed + 1)
    log = _Log()
    states: dict = {}
    cfg = SecAggConfig(degree=degree, epoch_rounds=rounds_n)
    results = mr.simulate_multiround(rounds, cfg, lambda r, s, u: plans[r].get(u) == s,
                                     recorder=lambda *a: log.append(a), states=states)
    _check_rounds(results, rounds, plans, cfg)
    return names, rounds, results, log, states, cfg


def _server_view(log, rnd):
    """What the server said and received in round ``rnd``, decoded (once per log)."""
    if not hasattr(log, "views"):
        log.views = {}
        for r, st, snd, rcv, p in log:
            sent, got = log.views.setdefault(r, ([], []))
            (sent if snd == "server" else got).append((st, rcv if snd == "server" else snd, wire.loads(p)))
    return log.views.get(rnd, ([], []))


class _Log(list):
    """The recorded messages (a list that can carry its decoded per-round views)."""


def _in_rowspace(rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """For each column ``v`` of ``vectors``: ``|P v|^2`` where ``P`` projects onto the row space of ``rows``
    (``P v = R^T (R R^T)^+ R v``; the Gram matrix is small: one row per message the server got)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small products; extra BLAS threads only contend on a shared box
        rv = rows @ vectors
        w, q = np.linalg.eigh(rows @ rows.T)
        keep = w > 1e-9 * max(w.max(), 1.0)
        z = q[:, keep].T @ rv
        return (z * z / w[keep, None]).sum(axis=0)


def _linear_audit(names, results, log, rnd, extra_known=()):
    """Per-round linear algebra over the server's knowledge: each input ``x_u``, self-mask ``s_u`` and pair
    mask ``m_uv`` of the round is one unknown (masks of different rounds come from disjoint AES-CTR counter
    blocks and seeds are drawn per round, so rounds share no unknown; checked separately). Rows: every
    masked upload, every correction, and the self-masks the server reconstructed. Returns the clients
    whose ``x_u`` the server can isolate, and whether it can form the sum."""
    sent, got = _server_view(log, rnd)
    mask = {rcv: m["mask"] for st, rcv, m in sent if st == "upload"}
    asked = [(rcv, m["dropped"]) for st, rcv, m in sent if st == "correct"]
    answered = {(st, snd) for st, snd, _ in got}
    uploaded = [u for st, u, m in got if st == "upload" and "y" in m]
    pairs = sorted({tuple(sorted((u, v))) for u in uploaded for v in mask[u]})
    col = {("x", u): i for i, u in enumerate(names)}
    col.update({("s", u): len(names) + i for i, u in enumerate(names)})
    col.update({("m", p): 2 * len(names) + i for i, p in enumerate(pairs)})
    rows = []

    def pair_row(u, vs):
        row = np.zeros(len(col))
        for v in vs:
            row[col[("m", tuple(sorted((u, v))))]] += 1.0 if u < v else -1.0
        return row

    for u in uploaded:
        row = pair_row(u, mask[u])
        row[col[("x", u)]] = row[col[("s", u)]] = 1.0
        rows.append(row)
    for u, d in asked:
        if ("correct", u) in answered:
            rows.append(pair_row(u, d))
    for u in results[rnd].revealed["b"]:
        row = np.zeros(len(col))
        row[col[("s", u)]] = 1.0
        rows.append(row)
    for key in extra_known:
        row = np.zeros(len(col))
        row[col[key]] = 1.0
        rows.append(row)
    probes = np.zeros((len(col), len(uploaded) + 1))
    for j, u in enumerate(uploaded):
        probes[col[("x", u)], j] = 1.0  # x_u alone
    for u in results[rnd].contributors:
        probes[col[("x", u)], -1] = 1.0  # the sum over the contributors
    norms = _in_rowspace(np.array(rows), probes)
    isolated = [u for u, n in zip(uploaded, norms) if n > 1 - 1e-6]
    can_sum = norms[-1] > len(results[rnd].contributors) - 1e-6
    return isolated, can_sum, mask, uploaded


def _find_any(payload: bytes, needles: np.ndarray) -> bool:
    """Whether any 16-byte needle (rows of ``needles``, sorted by their first 8 bytes) occurs in
    ``payload`` at any offset: sliding 8-byte windows, a sorted search, then a full compare."""
    if len(payload) < 16:
        return False
    buf = np.frombuffer(payload, dtype=np.uint8)
    heads = np.lib.stride_tricks.sliding_window_view(buf, 8)[: len(buf) - 15].copy().view("<u8").ravel()
    keys = needles[:, :8].copy().view("<u8").ravel()
    pos = np.searchsorted(keys, heads)
    hit = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == heads)
    return any(bytes(needles[j]) in payload for j in set(pos[hit].tolist()))


def _check_wire(names, rounds, results, log, states, cfg, scan_keys=True):
    from atoll.secure.secagg import agree

    pks = {}
    for _, st, snd, rcv, p in log:
        if st == "keys" and rcv == "server":
            pks[snd] = wire.loads(p)["pk"]
    # no pairwise key (mask or share encryption) ever reaches the server, at any offset of any message
    ep = states[names[0]].epoch
    secrets_ = set()
    for u in names if scan_keys else ():
        for v in states[u]._pairs:
            k_mask, k_enc = mr.derive_pair_keys(agree(states[u]._sk, pks[v]), ep, u, v)
            secrets_ |= {k_mask, k_enc[:16], k_enc[16:]}
    needles = np.frombuffer(b"".join(sorted(secrets_, key=lambda b: int.from_bytes(b[:8], "little"))),
                            dtype=np.uint8).reshape(-1, 16) if secrets_ else None
    assert not scan_keys or not any(_find_any(p, needles) for _, _, _, rcv, p in log if rcv == "server")
    # no received array is a client's update, raw or encoded, in any round (and no float crosses at all)
    plain = {encode_fixed(x, cfg.frac_bits, cfg.bound).tobytes() for inputs in rounds for x in inputs.values()}
    for rnd in range(len(rounds)):
        for _, _, m in _server_view(log, rnd)[1]:
            for a in (v for v in m.values() if isinstance(v, np.ndarray)):
                assert a.dtype == np.uint64 and a.tobytes() not in plain
    # the seeds the server reconstructs: one per client and round, each bound by its hash to that round only
    seeds: dict[str, list[bytes]] = {}
    for rnd, res in enumerate(results):
        sent, got = _server_view(log, rnd)
        ask = {rcv: m["alive"] for st, rcv, m in sent if st == "reveal"}
        shares: dict[str, list] = {}
        for st, h, m in got:
            if st == "reveal":
                blob = np.frombuffer(m["shares"], dtype=">u4").reshape(len(ask[h]), -1)
                for v, sh in zip(ask[h], blob):
                    shares.setdefault(v, []).append((names.index(h) + 1, sh.astype(np.uint64)))
        t = states[names[0]].t
        got = mr.reconstruct_seeds(np.array([[x for x, _ in shares[v][:t]] for v in res.contributors], dtype=np.uint64),
                                   np.array([[y for _, y in shares[v][:t]] for v in res.contributors]))
        for v, seed in zip(res.contributors, got):
            seeds.setdefault(v, []).append(seed)
    for v, ss in seeds.items():
        assert len(set(ss)) == len(ss)  # never the same seed twice: a reconstructed seed is dead next round


def test_wire_audit_over_20_rounds_the_server_never_holds_one_update():
    names, rounds, results, log, states, cfg = _audit(24, 20, 16, 0.2, seed=11)
    _check_wire(names, rounds, results, log, states, cfg)
    for rnd in range(20):
        isolated, can_sum, mask, uploaded = _linear_audit(names, results, log, rnd)
        assert isolated == [], rnd
        assert can_sum, rnd  # the audit sees what the server can compute: the sum
    # positive control: had the server kept a pair secret from an earlier round and used it now (the
    # cross-round attack of a protocol that reconstructs long-lived pair keys), the victim's update opens
    rnd = 7
    victim = results[rnd].contributors[0]
    _, _, mask, _ = _linear_audit(names, results, log, rnd)
    isolated, _, _, _ = _linear_audit(names, results, log, rnd,
                                      [("m", tuple(sorted((victim, v)))) for v in mask[victim]])
    assert victim in isolated


@pytest.mark.slow
def test_wire_audit_100_clients_20_rounds_30_percent_dropping():
    names, rounds, results, log, states, cfg = _audit(100, 20, 60, 0.3, seed=12)
    _check_wire(names, rounds, results, log, states, cfg, scan_keys=False)  # (key scan: the 24-client audit)
    for rnd in range(20):
        isolated, can_sum, _, _ = _linear_audit(names, results, log, rnd)
        assert isolated == [] and can_sum, rnd
