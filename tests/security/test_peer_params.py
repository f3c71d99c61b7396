"""A peer cannot weaken keys or steer another party's protocol parameters (issue 19).

Each attack is a test double of the guest (or arbiter) that sends other parameters or a weak
key to a real host; the host must refuse with a message naming both values, and must not have
sent anything that depends on its data.
"""

from __future__ import annotations

import numpy as np
import pytest

from atoll import wire
from atoll.crypto import he
from atoll.errors import ConfigError, CryptoError, WireError
from atoll.federation import Party, PartyFailed, launch
from atoll.ml.vertical import _glm, hetero_lr
from atoll.ml.vertical._glm import GLMParams
from atoll.ml.vertical.secureboost import SecureBoostHost, SecureBoostParams

KEY = 1024  # tests use short keys where speed matters


def host_failure(parties, recorder=None):
    sent = []
    with pytest.raises(PartyFailed) as e:
        launch(parties, timeout=20, recorder=lambda s, r, a, p: sent.append((s, a.rsplit("/", 1)[-1])))
    assert e.value.party == "host_0", e.value
    return e.value.error, [key for s, key in sent if s == "host_0"]


# ------------------------------------------------------------------------------- SecureBoost
def sb_guest_double(ctx, setup):
    ctx.broadcast("host", "setup", setup)


def sb_setup(scheme="ou", max_bin=8, pk=None, **over):
    prm = {"max_bin": max_bin, "colsample_bytree": 1.0, "random_state": 3, "early_stopping_rounds": None}
    prm.update(over)
    return {"scheme": scheme, "pk": pk, "n_rows": 40, "n_outputs": 1, "outputs_per_chunk": 1,
            "has_eval": False, "params": prm}


def sb_fit_host(ctx, params, x):
    return SecureBoostHost(params).fit(ctx, x)


SB_HOST = SecureBoostParams(max_bin=8, scheme="ou", key_bits=KEY, random_state=3)
X = np.random.default_rng(0).normal(size=(40, 3))


@pytest.mark.parametrize("setup, says", [
    (sb_setup(scheme="plain", max_bin=65535), "scheme 'plain'; this host is configured for 'ou'"),
    (sb_setup(max_bin=65535), "max_bin=65535; this host is configured for max_bin=8"),
    (sb_setup(colsample_bytree=0.5), "colsample_bytree=0.5; this host is configured for colsample_bytree=1.0"),
])
def test_secureboost_host_refuses_a_guest_that_asks_for_another_resolution_or_scheme(setup, says):
    err, host_sent = host_failure({"guest": Party("guest", sb_guest_double, {"setup": setup}),
                                   "host_0": Party("host", sb_fit_host, {"params": SB_HOST, "x": X})})
    assert isinstance(err, ConfigError) and says in str(err), err
    assert host_sent == []  # no feature count, no histogram, nothing


def test_secureboost_host_refuses_a_key_weaker_than_its_own_key_bits():
    weak = he.generate_keypair("ou", 768).public_key
    err, host_sent = host_failure({"guest": Party("guest", sb_guest_double, {"setup": sb_setup(pk=weak)}),
                                   "host_0": Party("host", sb_fit_host, {"params": SB_HOST, "x": X})})
    assert isinstance(err, CryptoError) and "768 bits" in str(err) and f"key_bits={KEY}" in str(err), err
    assert host_sent == []


# ------------------------------------------------------------------------------- GLMs
def glm_guest_double(ctx, plan, key=None):
    with ctx.scope("fit"):
        ctx.recv("host", "rows")
        ctx.send("host", "aligned", {"ok": True, "reason": "", "plan": plan})
        if key is not None:
            ctx.send("host", "guest_key", key)


def glm_arbiter_double(ctx, key):
    with ctx.scope("fit"):
        ctx.send("host", "public_key", key)


def glm_parties(params, guest_kwargs, arbiter_key=None):
    xh = np.random.default_rng(1).normal(size=(30, 2))
    parties = {"guest": Party("guest", glm_guest_double, guest_kwargs),
               "host_0": Party("host", _glm._fit_host, {"role": hetero_lr.HeteroLRHost(params), "x": xh,
                                                        "ids": None})}
    if arbiter_key is not None:
        parties["arbiter"] = Party("arbiter", glm_arbiter_double, {"key": arbiter_key})
    return parties


def test_glm_host_refuses_a_guest_whose_plan_differs_even_if_it_says_aligned():
    params = GLMParams(mode="two_party", key_bits=KEY, max_iter=3)
    plan = {**params.plan(), "max_iter": 50, "scheme": "ou"}
    err, host_sent = host_failure(glm_parties(params, {"plan": plan}))
    assert isinstance(err, ConfigError) and "'max_iter': (50, 3)" in str(err) and "'scheme': ('ou', 'paillier')" \
        in str(err), err
    assert host_sent == ["rows"]


@pytest.mark.parametrize("mode", ["two_party", "arbiter"])
def test_glm_host_refuses_a_weak_key_from_the_guest_or_the_arbiter(mode):
    params = GLMParams(mode=mode, key_bits=KEY, max_iter=1)
    weak = he.generate_keypair("paillier", 512).public_key
    if mode == "two_party":
        parties = glm_parties(params, {"plan": params.plan(), "key": weak})
    else:
        parties = glm_parties(params, {"plan": params.plan()}, arbiter_key=weak)
    err, host_sent = host_failure(parties)
    assert isinstance(err, CryptoError) and "512 bits" in str(err) and f"key_bits={KEY}" in str(err), err
    assert set(host_sent) <= {"rows", "host_key"}  # its own public key at most: nothing encrypted


def test_glm_host_refuses_a_key_of_another_scheme_or_precision():
    params = GLMParams(mode="arbiter", key_bits=KEY, max_iter=1)
    for key, says in ((he.generate_keypair("ou", KEY).public_key, "ou public key"),
                      (he.generate_keypair("paillier", KEY, precision_bits=8).public_key, "8 fractional bits")):
        err, _ = host_failure(glm_parties(params, {"plan": params.plan()}, arbiter_key=key))
        assert isinstance(err, CryptoError) and says in str(err), err


# ------------------------------------------------------------------------------- the codec
def forged_paillier(n: int) -> bytes:
    """The wire form of a Paillier public key with modulus ``n`` (what a hostile peer can send)."""
    name = wire._BY_CLASS[he.PaillierPublicKey].name.encode()
    fields = {"n": n, "h_s": 2, "precision_bits": 40, "mul_precision_bits": 24}
    return bytes([wire.VERSION, wire._T_MESSAGE]) + wire._uvarint(len(name)) + name + wire.dumps(fields)[1:]


@pytest.mark.parametrize("n, what", [
    (2**1279 - 1, "prime"),                        # a Mersenne prime: no factorisation to hide
    (3 * (2**1279 - 1), "small factor"),
    ((2**607 - 1) ** 2, "square"),
], ids=["prime", "small_factor", "square"])
def test_a_received_key_whose_modulus_is_not_a_product_of_large_primes_is_refused(n, what):
    with pytest.raises(WireError, match="not a product of large primes"):
        wire.loads(forged_paillier(n))


def test_a_received_key_with_an_absurd_precision_is_refused():
    pk = he.generate_keypair("paillier", KEY).public_key
    pk.precision_bits = 1024
    with pytest.raises(WireError, match="precision_bits=1024 out of range"):
        wire.loads(wire.dumps(pk))
