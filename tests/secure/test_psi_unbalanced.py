"""Unbalanced PSI: the unblinding algebra against plain X25519, exactness, the offline cache, hostile peers."""

from __future__ import annotations

import os
import random
import stat

import numpy as np
import pytest
from nacl.bindings import crypto_scalarmult

from atoll import wire
from atoll.errors import ConfigError, CryptoError
from atoll.federation import Party, PartyFailed, launch
from atoll.secure import psi_group, psi_unbalanced
from atoll.secure.psi import PsiParams, psi, run_psi
from atoll.secure.psi_unbalanced import (MAX_CLIENT_IDS, blinding_scalar, build_server_cache, encoded_bytes,
                                         is_on_curve, unblinding_scalars)


def sets(n_small, n_big, shared, seed):
    rng = random.Random(seed)
    pool = [f"cust-{v:09d}" for v in rng.sample(range(10**9), n_small + n_big)]
    big = pool[:n_big]
    small = big[:shared] + pool[n_big:n_big + n_small - shared]
    rng.shuffle(small)
    rng.shuffle(big)
    return small, big


def run(small, big, tmp_path=None, recorder=None, **kw):
    def params(party):
        return PsiParams(protocol="unbalanced", cache_dir=str(tmp_path / party) if tmp_path else None, **kw)

    return launch({"guest": Party("guest", run_psi, {"ids": small, "params": params("guest")}),
                   "host_0": Party("host", run_psi, {"ids": big, "params": params("host")})}, recorder=recorder)


# ---------------------------------------------------------------------------- the algebra
def test_unblinding_inverts_the_client_blinding_on_curve_and_twist():
    """X25519(s, X25519(k, X25519(a, u))) == X25519(k, u) for hashed u on the curve and on the twist,
    computed with libsodium (an independent X25519)."""
    pts = psi_group.hash_to_points([f"id{i}".encode() for i in range(40)], os.urandom(32))
    curve = is_on_curve(pts)
    assert curve.any() and (~curve).any()
    k = psi_group.new_scalar()
    for _ in range(3):
        a, s_curve, s_twist = blinding_scalar()
        for u, on in zip(pts, curve):
            blinded = crypto_scalarmult(k, crypto_scalarmult(a, bytes(u)))
            assert crypto_scalarmult(s_curve if on else s_twist, blinded) == crypto_scalarmult(k, bytes(u))


def test_unblinding_scalars_exist_for_most_keys_and_sizes():
    found = [unblinding_scalars(os.urandom(32)) for _ in range(200)]
    assert 0.3 < np.mean([f is not None for f in found]) < 0.9
    assert encoded_bytes(1) == 8 and encoded_bytes(10**7) == 11 and encoded_bytes(2**40) <= 32


# ---------------------------------------------------------------------------- exactness and cache
@pytest.mark.parametrize("shared", [0, 90, 300])
def test_exact_against_set_intersection_and_kkrt(shared):
    small, big = sets(300, 5000, shared, seed=shared)
    out = run(small, big)
    want = sorted(set(small) & set(big))
    assert len(want) == shared
    assert out["guest"].ids == out["host_0"].ids == want
    kkrt = launch({"guest": Party("guest", psi, {"ids": small, "protocol": "kkrt"}),
                   "host_0": Party("host", psi, {"ids": big, "protocol": "kkrt"})})
    assert kkrt["guest"] == want


def test_offline_phase_runs_once_then_is_cached(tmp_path):
    small, big = sets(200, 3000, 50, seed=1)
    first = run(small, big, tmp_path)
    assert first["guest"].stats.get("offline_download") and first["host_0"].stats["seconds"]["offline"] > 0
    key = tmp_path / "host" / "server" / "key.bin"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600                 # the server's key: its user only
    small2, _ = sets(250, 3000, 120, seed=2)
    small2 = small2[:130] + big[:120]
    second = run(small2, big, tmp_path)
    assert "offline_download" not in second["guest"].stats and second["host_0"].stats["seconds"]["offline"] == 0
    assert second["guest"].ids == second["host_0"].ids == sorted(set(small2) & set(big))
    changed = big[:-1] + ["cust-new"]                                 # the server's set changed: rebuilt
    third = run(small + ["cust-new"], changed, tmp_path)
    assert third["guest"].stats.get("offline_download")
    assert third["guest"].ids == sorted(set(small + ["cust-new"]) & set(changed))


def test_result_to_guest_and_int_ids():
    out = run([3, 4, "5", 99], [str(i) for i in range(1000)], result_to="guest")
    assert out["guest"].ids == [3, 4, "5", 99] and out["host_0"].ids is None


def test_empty_sets():
    assert run([], ["a"])["guest"].ids == [] and run(["a"], [])["guest"].ids == []


def test_wire_audit_no_clear_ids_and_shuffled():
    small, big = sets(400, 2000, 200, seed=5)
    sent = []
    out = run(small, big, recorder=lambda s, r, a, p: sent.append((s, r, a, p)))
    assert out["guest"].ids == sorted(set(small) & set(big))
    blob = b"".join(p for *_, p in sent)
    for x in small + big:
        assert x.encode() not in blob and x.encode("utf-16-le") not in blob
    hello = wire.loads(next(p for s, _, a, p in sent if s == "host_0" and a.endswith("/hello")))
    hashed = psi_group.hash_to_points([x.encode() for x in small], hello["salt"])
    assert not any(bytes(r) in blob for r in hashed[:100])          # nor the unblinded hashes


# ---------------------------------------------------------------------------- hostile peers
def _greedy_client(ctx, n):
    with ctx.scope("psi"):
        ctx.send("host_0", "hello", {"protocol": "unbalanced", "version": 1, "result_to": "both", "strip": True,
                                     "unicode_form": "NFC", "n": n, "batch_size": 1000, "cache_id": None})
        ctx.recv("host_0", "hello", timeout=30)


def test_server_bounds_what_one_client_session_may_query():
    with pytest.raises(PartyFailed) as e:
        launch({"guest": Party("guest", _greedy_client, {"n": MAX_CLIENT_IDS + 1}),
                "host_0": Party("host", psi, {"ids": ["a", "b"], "protocol": "unbalanced"})})
    assert e.value.party == "host_0" and isinstance(e.value.error, CryptoError)


def _short_server(ctx):
    cache = build_server_cache([f"s{i}" for i in range(50)])
    with ctx.scope("psi"):
        hello = ctx.recv("guest", "hello")
        ctx.send("guest", "hello", {"n": cache.n, "cache_id": cache.cache_id, "salt": cache.salt,
                                    "bytes": encoded_bytes(cache.n)})
        with ctx.scope("setup", 0):
            ctx.send("guest", "encoded", cache.encoded)
        with ctx.scope("batch", 0):
            a = ctx.recv("guest", "a")
            ctx.send("guest", "b", a[: hello["n"] // 2])                # fewer values than asked for
        ctx.recv("guest", "result", timeout=30)


def test_client_refuses_a_server_answering_with_too_few_values():
    with pytest.raises(PartyFailed) as e:
        launch({"guest": Party("guest", psi, {"ids": ["s1", "s2", "x", "y"], "protocol": "unbalanced"}),
                "host_0": Party("host", _short_server, {})})
    assert e.value.party == "guest" and "announced sizes" in str(e.value.error)


def test_two_hosts_are_refused():
    with pytest.raises(PartyFailed) as e:
        launch({"guest": Party("guest", psi, {"ids": ["a"], "protocol": "unbalanced"}),
                "host_0": Party("host", psi, {"ids": ["a"], "protocol": "unbalanced"}),
                "host_1": Party("host", psi, {"ids": ["a"], "protocol": "unbalanced"})})
    assert isinstance(e.value.error, ConfigError)


def test_registered_by_name():
    from atoll.secure.psi import protocol_roles

    assert protocol_roles("unbalanced")["host"] is psi_unbalanced.UnbalancedPsiServer
    with pytest.raises(ConfigError, match="kkrt"):
        protocol_roles("rsa")
