"""KKRT-PSI: pure helpers, exact against set intersection and ECDH-PSI, several buckets, hostile peers, wire audit."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll import wire
from atoll.crypto import aes
from atoll.errors import ConfigError, CryptoError, DataError
from atoll.federation import Party, PartyFailed, launch
from atoll.secure import psi_kkrt
from atoll.secure.mpc.ot import OPRFBatch, OPRFSender
from atoll.secure.psi import normalize_ids, psi, run_psi, PsiParams
import psi_sets
from psi_sets import id_sets
from atoll.secure.psi_kkrt import (Buckets, bucket_cap, bucket_of, cuckoo_bins, cuckoo_candidates,
                                   cuckoo_insert, id_hashes, n_buckets, value_bytes)


def run(guest_ids, *host_ids, recorder=None, **kw):
    kw.setdefault("protocol", "kkrt")
    return psi_sets.run(guest_ids, *host_ids, recorder=recorder, **kw)


@pytest.fixture
def small_buckets(monkeypatch):
    """Buckets of 256 ids, so that small tests cross several buckets (threads share the module)."""
    monkeypatch.setattr(psi_kkrt, "BUCKET_TARGET", 256)


# ---------------------------------------------------------------------------- pure helpers
@pytest.mark.parametrize("m", [0, 1, 7, 300, 5000])
def test_cuckoo_places_every_item_in_a_candidate_bin(m):
    cap = bucket_cap(m, 1)
    bins = cuckoo_bins(cap)
    h = aes.random_blocks(m)
    cand = cuckoo_candidates(h, bytes(16), bins)
    assert cand.shape == (m, 3) and (cand >= 0).all() and (cand < bins).all()
    table, choice = cuckoo_insert(cand, bins)
    full = table >= 0
    assert sorted(table[full].tolist()) == list(range(m))          # each item exactly once
    assert (cand[table[full], choice[table[full]]] == np.flatnonzero(full)).all()


def test_cuckoo_reports_an_impossible_placement():
    cand = np.zeros((3, 3), dtype=np.int64)                         # three items, one bin
    assert cuckoo_insert(cand, 2, max_rounds=50) is None


def test_sizes_and_buckets():
    assert n_buckets(0) == n_buckets(1 << 18) == 1 and n_buckets((1 << 18) + 1) == 2
    assert n_buckets(10_000_000) == 64 and n_buckets(1 << 40) == 256
    assert bucket_cap(0, 4) == 64 and bucket_cap(1 << 20, 4) > (1 << 18) + 8 * 512
    assert 8 <= value_bytes(1, 1) <= value_bytes(10**6, 10**6) == 11 <= value_bytes(10**8, 10**8) <= 16
    keys, _ = normalize_ids([f"k{i}" for i in range(3000)])
    h = id_hashes(keys)
    assert np.array_equal(h, id_hashes(list(keys)))                 # deterministic, same at every party
    src = Buckets(h, np.arange(3000))
    parts = [src.get(b, 8) for b in range(8)]
    assert sum(len(r) for _, r in parts) == 3000
    assert sorted(np.concatenate([r for _, r in parts]).tolist()) == list(range(3000))
    for b, (hb, _) in enumerate(parts):
        assert (bucket_of(hb, 8) == b).all()


# ---------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("overlap", [0.0, 0.3, 1.0])
def test_exact_against_set_intersection_and_ecdh(overlap):
    g, h = id_sets(1500, 1200, overlap, seed=int(overlap * 10))
    out = run(g, h)
    want = sorted(set(g) & set(h))
    assert len(want) == int(overlap * 1200)
    assert out["guest"] == out["host_0"] == want
    assert run(g, h, protocol="ecdh") == out                       # the very same lists, same order


def test_several_buckets_and_unequal_sizes(small_buckets):
    g, h = id_sets(3000, 700, 0.5, seed=1)
    res = launch({"guest": Party("guest", run_psi, {"ids": g, "params": PsiParams(protocol="kkrt")}),
                  "host_0": Party("host", run_psi, {"ids": h, "params": PsiParams(protocol="kkrt")})})
    assert res["guest"].stats["buckets"] == 16
    want = sorted(set(g) & set(h))
    assert res["guest"].ids == res["host_0"].ids == want
    assert [g[i] for i in res["guest"].positions] == want and [h[i] for i in res["host_0"].positions] == want


def test_three_parties(small_buckets):
    rng = random.Random(5)
    universe = [f"id{i}" for i in range(3000)]
    g, h0, h1 = (rng.sample(universe, k) for k in (1800, 1500, 2000))
    out = run(g, h0, h1)
    want = sorted(set(g) & set(h0) & set(h1))
    assert len(want) > 100
    assert out["guest"] == out["host_0"] == out["host_1"] == want


def test_result_to_guest_only():
    g, h = id_sets(400, 500, 0.5, seed=4)
    out = run(g, h, result_to="guest")
    assert out["guest"] == sorted(set(g) & set(h)) and out["host_0"] is None


def test_int_and_str_ids_and_bad_input():
    out = run([7, 8, 9, np.int64(10), 11.0], ["7", "10", "11", "12", " 8 "])
    assert out["guest"] == [10, 11.0, 7, 8] and out["host_0"] == ["10", "11", "7", " 8 "]
    for bad in ([7, 7.5], [True], [None], ["a", "a"]):
        with pytest.raises(PartyFailed) as e:
            run(bad, ["7"])
        assert e.value.party == "guest" and isinstance(e.value.error, DataError)
    out = run(["a", "b", "a", "c"], ["c", "a", "x"], duplicates="drop")
    assert out["guest"] == out["host_0"] == ["a", "c"]


def test_empty_sets_and_empty_intersection():
    assert run([], ["a", "b"]) == {"guest": [], "host_0": []}
    assert run(["a"], []) == {"guest": [], "host_0": []}
    assert run(["a", "b"], ["c", "d"]) == {"guest": [], "host_0": []}


ids_strategy = st.lists(st.one_of(st.integers(-10**6, 10**6), st.text(min_size=1, max_size=6)),
                        max_size=40)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids_strategy, ids_strategy)
def test_property_equals_plaintext_intersection(g, h):
    """Any ids (integers, any Unicode text, duplicates, whitespace): the plaintext intersection of the
    normalised ids, or the same DataError as ECDH-PSI."""
    def norm(ids):
        try:
            keys, pos = normalize_ids(ids, duplicates="drop")
        except DataError:
            return None
        return dict(zip(keys, pos.tolist()))

    kg, kh = norm(g), norm(h)
    if kg is None or kh is None:
        with pytest.raises(PartyFailed) as e:
            run(g, h, duplicates="drop")
        assert isinstance(e.value.error, DataError)
        return
    out = run(g, h, duplicates="drop")
    common = sorted(set(kg) & set(kh))
    assert out["guest"] == [g[kg[k]] for k in common] and out["host_0"] == [h[kh[k]] for k in common]


# ---------------------------------------------------------------------------- hostile peers
def _lying_host(ctx, announced, actual):
    """Announces ``announced`` ids but sends values sized for ``actual``."""
    with ctx.scope("psi"):
        ctx.recv("guest", "hello")
        ctx.send("guest", "hello", {"n": announced})
        plan = ctx.recv("guest", "plan")
        sender = OPRFSender(ctx, "guest", "psi-kkrt")
        sender.ensure_setup()
        with ctx.scope("bucket", 0):
            ctx.recv("guest", "attempt")
            sender.expand(cuckoo_bins(bucket_cap(50, 1)))
            cap = bucket_cap(actual, plan["buckets"])
            ctx.send("guest", "values", np.zeros((3 * cap, plan["bytes"]), np.uint8))
        ctx.recv("guest", "result", timeout=30)


def test_host_lying_about_its_size_is_told_so():
    with pytest.raises(PartyFailed) as e:
        launch({"guest": Party("guest", psi, {"ids": [str(i) for i in range(50)], "protocol": "kkrt"}),
                "host_0": Party("host", _lying_host, {"announced": 10, "actual": 5000})})
    assert e.value.party == "guest" and isinstance(e.value.error, CryptoError)
    assert "announced set size" in str(e.value.error)


def _huge_host(ctx):
    with ctx.scope("psi"):
        ctx.recv("guest", "hello")
        ctx.send("guest", "hello", {"n": 1 << 40})
        ctx.recv("guest", "plan", timeout=30)


def test_announced_sizes_are_bounded():
    with pytest.raises(PartyFailed) as e:
        launch({"guest": Party("guest", psi, {"ids": ["a"], "protocol": "kkrt"}),
                "host_0": Party("host", _huge_host, {})})
    assert e.value.party == "guest" and "0 to" in str(e.value.error)


def _bad_plan_guest(ctx, plan):
    with ctx.scope("psi"):
        ctx.send("host_0", "hello", {"protocol": "kkrt", "version": 1, "result_to": "both", "strip": True,
                                     "unicode_form": "NFC", "n": 10})
        ctx.recv("host_0", "hello")
        ctx.send("host_0", "plan", plan)
        ctx.recv("host_0", "never", timeout=30)


@pytest.mark.parametrize("plan", [{"buckets": 3, "seed": bytes(16), "bytes": 8},
                                  {"buckets": 1, "seed": bytes(16), "bytes": 4},
                                  {"buckets": 1, "seed": b"short", "bytes": 8}, "junk"])
def test_host_refuses_a_plan_that_does_not_follow_from_the_sizes(plan):
    with pytest.raises(PartyFailed) as e:
        launch({"guest": Party("guest", _bad_plan_guest, {"plan": plan}),
                "host_0": Party("host", psi, {"ids": ["a", "b"], "protocol": "kkrt"})})
    assert e.value.party == "host_0" and isinstance(e.value.error, CryptoError)


def test_mismatched_protocols_and_settings_are_refused():
    with pytest.raises(PartyFailed) as e:
        launch({"guest": Party("guest", psi, {"ids": ["a"], "protocol": "ecdh"}),
                "host_0": Party("host", psi, {"ids": ["a"], "protocol": "kkrt"})})
    assert isinstance(e.value.error, ConfigError)
    with pytest.raises(PartyFailed) as e:
        launch({"guest": Party("guest", psi, {"ids": ["a"], "protocol": "kkrt", "result_to": "guest"}),
                "host_0": Party("host", psi, {"ids": ["a"], "protocol": "kkrt"})})
    assert e.value.party == "host_0" and isinstance(e.value.error, ConfigError)


# ---------------------------------------------------------------------------- wire audit
def test_wire_audit_no_clear_ids_and_shuffled(monkeypatch, small_buckets):
    g, h = id_sets(1500, 1500, 0.5, seed=6)
    evaluated: list[np.ndarray] = []
    real_eval = OPRFBatch.eval

    def spy(self, j, x, out_words=2):
        out = real_eval(self, j, x, out_words)
        evaluated.append(out)
        return out

    monkeypatch.setattr(OPRFBatch, "eval", spy)
    sent: list[tuple[str, str, str, bytes]] = []
    out = run(g, h, recorder=lambda s, r, a, p: sent.append((s, r, a, p)))
    assert out["guest"] == sorted(set(g) & set(h))
    blob = b"".join(p for *_, p in sent)
    for x in g + h:                                                # no id in the clear, in any encoding
        assert x.encode() not in blob and x.encode("utf-16-le") not in blob
    for hashes in (id_hashes([x.encode() for x in g[:200]]), id_hashes([x.encode() for x in h[:200]])):
        assert not any(r.tobytes()[:8] in blob for r in hashes)     # nor their 128-bit hashes
    values = [wire.loads(p) for s, _, a, p in sent if s == "host_0" and a.endswith("/values")]
    assert len(values) == len(evaluated) > 1
    for v, ev in zip(values, evaluated):                           # the host's PRF values, shuffled
        c = v.shape[1]
        plain = ev.view(np.uint8).reshape(len(ev), -1)[:, :c]
        index = {bytes(r): i for i, r in enumerate(plain)}
        perm = np.array([index.get(bytes(r), -1) for r in v])
        real = perm[perm >= 0]
        assert sorted(real.tolist()) == list(range(len(plain)))    # every value once, padding besides
        assert (perm < 0).sum() == len(v) - len(plain) > 0
        assert abs(np.corrcoef(real, np.arange(len(real)))[0, 1]) < 0.2


# ---------------------------------------------------------------------------- CLI
def test_cli_standalone_cardinality_only(tmp_path):
    """``atoll psi --cardinality`` prints the size and writes no ids (the kkrt CLI path is in test_psi_stream)."""
    from typer.testing import CliRunner

    from atoll.cli import app

    g, h = id_sets(500, 400, 0.5, seed=10)
    pd.DataFrame({"customer": g}).to_csv(tmp_path / "g.csv", index=False)
    pd.DataFrame({"customer": h}).to_csv(tmp_path / "h.csv", index=False)
    res = CliRunner().invoke(app, ["psi", "--standalone", "--cardinality", "--ids", str(tmp_path / "g.csv"),
                                   "--host-ids", str(tmp_path / "h.csv"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert f"{len(set(g) & set(h))} ids in common" in res.output and not (tmp_path / "out").exists()
