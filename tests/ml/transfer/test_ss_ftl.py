"""SS-FTL (Beaver triples from the arbiter as dealer, for speed) against the plain mode seed for seed,
within the fixed-point tolerance; a wire audit and a hostile peer. The HE triple provider gives the
same shares' semantics (tested in tests/secure/mpc); it is too slow for this suite."""

from __future__ import annotations

import numpy as np
import pytest

from atoll import wire
from atoll.errors import CryptoError
from atoll.federation import Party, PartyFailed, launch
from atoll.ml.transfer import FTLParams
from atoll.ml.transfer import _ftl
from atoll.ml.transfer.evaluation import transfer_split
from atoll.ml.transfer.hetero_ftl import FTLGuest, FTLHost
from atoll.ml.transfer.ss_ftl import SSFTLGuest, SSFTLHost, run_dealer_for
from tests.wire_audit import arrays

SMALL = dict(max_iter=4, latent_dim=2, guest_hidden=[4], host_hidden=[3], random_state=5, learning_rate=0.1,
             guest_loss_weight=0.3)


@pytest.fixture(scope="module")
def small():
    return transfer_split("default_credit", n_guest=120, n_host=100, n_overlap=12, seed=2)


def _run(split, params, guest_cls, host_cls, what="fit", models=None, recorder=None):
    x_test = split.host_test().values
    gids, hids = list(split.guest.index), list(split.host.index)
    if what == "fit":
        g = lambda ctx: guest_cls(params).fit(ctx, split.guest.values, split.y, ids=gids)  # noqa: E731
        h = lambda ctx: host_cls(params).fit(ctx, split.host.values, ids=hids)  # noqa: E731
    else:
        g = lambda ctx: guest_cls(params).predict(ctx, models[0])  # noqa: E731
        h = lambda ctx: host_cls(params).predict(ctx, models[1], x_test)  # noqa: E731
    parties = {"guest": Party("guest", g), "host": Party("host", h)}
    if params.mode == "ss":
        parties["arbiter"] = Party("arbiter", run_dealer_for)
    out = launch(parties, recorder=recorder)
    return out["guest"], out["host"]


@pytest.mark.parametrize("local_steps", [1, 2])
def test_ss_equals_plain_seed_for_seed(small, local_steps):
    p = dict(SMALL, local_steps=local_steps)
    plain, ss = FTLParams(mode="plain", **p), FTLParams(mode="ss", provider="dealer", **p)
    gp, hp = _run(small, plain, FTLGuest, FTLHost)
    gs, hs = _run(small, ss, SSFTLGuest, SSFTLHost)
    # 20 fractional bits: products lose ~1e-6, a few steps of Adam keep it below 1e-5
    np.testing.assert_allclose(gs.losses, gp.losses, rtol=0, atol=1e-5)
    np.testing.assert_allclose(gs.phi, gp.phi, rtol=0, atol=1e-5)
    for a, b in zip(hs.weights, hp.weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert gs.timing["rounds"] > 0 and hs.timing["bytes_sent"] > 0
    s_plain, _ = _run(small, plain, FTLGuest, FTLHost, "predict", (gp, hp))
    s_ss, none = _run(small, ss, SSFTLGuest, SSFTLHost, "predict", (gs, hs))
    assert none is None
    np.testing.assert_allclose(s_ss, s_plain, rtol=0, atol=1e-4)


def test_ss_scores_to_the_host_only(small):
    ss = FTLParams(mode="ss", provider="dealer", predict_to="host", **dict(SMALL, max_iter=1))
    gs, hs = _run(small, ss, SSFTLGuest, SSFTLHost)
    g_out, h_out = _run(small, ss, SSFTLGuest, SSFTLHost, "predict", (gs, hs))
    assert g_out is None
    np.testing.assert_allclose(h_out, hs.represent(small.host_test().values) @ gs.phi, atol=1e-4)


def test_wire_audit_ss(small):
    """Outside PSI only uint64 shares, masked openings and small metadata cross: no float array."""
    seen = []
    rec = lambda s, r, a, b: seen.append((s, r, a, bytes(b)))  # noqa: E731
    ss = FTLParams(mode="ss", provider="dealer", **dict(SMALL, max_iter=1))
    gs, hs = _run(small, ss, SSFTLGuest, SSFTLHost, recorder=rec)
    _run(small, ss, SSFTLGuest, SSFTLHost, "predict", (gs, hs), recorder=rec)
    xg = small.guest.values.astype(float)
    zg = (xg - xg.mean(0)) / xg.std(0)
    ua0 = _ftl.forward(_ftl.network_for(ss, "guest", xg.shape[1]), zg)
    pats = [np.float64(v).tobytes() for v in np.concatenate([zg.ravel(), ua0.ravel(), gs.phi])
            if not float(v).is_integer()]
    assert len(seen) > 20
    for sender, receiver, address, payload in seen:
        if "psi" in address:
            continue
        floats = [a for a in arrays(wire.loads(payload)) if a.dtype.kind == "f"]
        assert not floats, f"{sender}->{receiver} {address} carries a float array"
        if sender == "guest":
            assert not any(pat in payload for pat in pats), f"guest->{receiver} {address} carries an input"


class _WrongShapeHost(SSFTLHost):
    def _share(self, sess, x, owner, shape):
        if self.index == owner and shape[0] == 12:      # announce one user more than agreed
            shape = (13,) + tuple(shape[1:])
            x = np.vstack([np.asarray(x).reshape(12, -1), np.zeros((1, int(np.prod(shape[1:]))))]).reshape(shape)
        return super()._share(sess, x, owner, shape)


def test_hostile_share_shape_refused(small):
    ss = FTLParams(mode="ss", provider="dealer", **dict(SMALL, max_iter=1))
    with pytest.raises(PartyFailed, match="shape") as info:
        _run(small, ss, SSFTLGuest, _WrongShapeHost)
    assert isinstance(info.value.error, CryptoError)
