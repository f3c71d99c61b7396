"""Hetero FTL (plain and HE) against its centralised twin (autograd on the pooled data) on bundled
default credit re-cut into a transfer set-up (little user overlap, no shared feature; held-out host
users with hidden labels), model parts, hostile peers and a wire audit."""

from __future__ import annotations

import io

import numpy as np
import pytest

from atoll.errors import ConfigError, CryptoError, DataError
from atoll.federation import Party, PartyFailed, launch
from atoll.ml import metrics
from atoll.ml.transfer import CentralFTL, FTLParams, load_part, save_part
from atoll.ml.transfer import _ftl
from atoll.ml.transfer.evaluation import transfer_split
from atoll.ml.transfer.hetero_ftl import FTLGuest, FTLHost
from tests.wire_audit import arrays


@pytest.fixture(scope="module")
def split():
    return transfer_split("default_credit", n_guest=300, n_host=240, n_overlap=30, seed=1)


def _fit(split, params, recorder=None, guest_cls=FTLGuest, host_cls=FTLHost):
    def g(ctx):
        return guest_cls(params).fit(ctx, split.guest.values, split.y, ids=list(split.guest.index))

    def h(ctx):
        return host_cls(params).fit(ctx, split.host.values, ids=list(split.host.index))

    out = launch({"guest": Party("guest", g), "host": Party("host", h)}, recorder=recorder)
    return out["guest"], out["host"]


def _predict(split, params, gm, hm, guest_cls=FTLGuest, host_cls=FTLHost, recorder=None):
    x = split.host_test().values
    out = launch({"guest": Party("guest", lambda ctx: guest_cls(params).predict(ctx, gm)),
                  "host": Party("host", lambda ctx: host_cls(params).predict(ctx, hm, x))}, recorder=recorder)
    return out["guest"] if params.predict_to == "guest" else out["host"]


def _twin(split, params):
    return CentralFTL(params).fit(split.guest.values, split.y, split.host.values, split.guest_overlap_rows(),
                                  split.host_overlap_rows())


def test_gradient_formulas_match_autograd(split):
    """The pure decomposition of the Taylor loss's gradients equals autograd on the same loss."""
    import torch

    p = FTLParams(mode="plain", random_state=0, gamma=0.7)
    xa = (split.guest.values - split.guest.values.mean(0)) / split.guest.values.std(0)
    xb = (split.host.values - split.host.values.mean(0)) / split.host.values.std(0)
    ys = 2 * split.y - 1
    oa, ob = split.guest_overlap_rows(), split.host_overlap_rows()
    na, nb = _ftl.network_for(p, "guest", xa.shape[1]), _ftl.network_for(p, "host", xb.shape[1])
    u_a = _ftl.forward(na, xa)
    u_b, j_b = _ftl.jacobian(nb, xb[ob])
    u_ao, j_ao = _ftl.jacobian(na, xa[oa])
    k = _ftl.weighted_jacobian(na, xa, ys)
    hp, gp, lp = _ftl.plain_exchange(u_a, ys, oa, u_b, j_b, j_ao, k, p.gamma)
    n, pa = oa.size, k.shape[1]
    g_b = _ftl.host_gradient(hp, j_b.reshape(-1, j_b.shape[-1]), u_b, p.gamma)
    g_a = _ftl.guest_gradient(gp, j_ao.reshape(-1, pa), u_ao, n, xa.shape[0], p.gamma, np.zeros(pa))
    comp = _ftl.guest_components(u_a, ys, oa, p.gamma)
    loss = _ftl.loss_value(lp, comp, n, p.gamma, 0.0)
    ta, tb, yt = torch.as_tensor(xa), torch.as_tensor(xb[ob]), torch.as_tensor(ys)
    ua, ub = na(ta), nb(tb)
    phi = (yt[:, None] * ua).mean(0)
    s = ub @ phi
    ref = ((np.log(2) - 0.5 * yt[oa] * s + 0.125 * s * s).sum() + p.gamma * ((ua[oa] - ub) ** 2).sum()) / n
    ga = torch.cat([t.reshape(-1) for t in torch.autograd.grad(ref, list(na.parameters()), retain_graph=True)])
    gb = torch.cat([t.reshape(-1) for t in torch.autograd.grad(ref, list(nb.parameters()))])
    np.testing.assert_allclose(g_a, ga.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_b, gb.numpy(), rtol=1e-10, atol=1e-12)
    assert loss == pytest.approx(float(ref.detach()), rel=1e-12)


def test_plain_ftl_equals_centralised_twin(split):
    """The plaintext oracle: federated plain mode = centralised transfer learning on the same data."""
    p = FTLParams(mode="plain", max_iter=15, random_state=3, guest_loss_weight=0.5, learning_rate=0.05)
    gm, hm = _fit(split, p)
    twin = _twin(split, p)
    np.testing.assert_allclose(gm.losses, twin.losses_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gm.phi, twin.phi_, rtol=1e-9, atol=1e-12)
    scores = _predict(split, p, gm, hm)
    np.testing.assert_allclose(scores, twin.decision_function(split.host_test().values), rtol=1e-9, atol=1e-12)
    # it learns: the loss falls and the held-out host users are ranked better than chance
    assert gm.losses[-1] < gm.losses[0] - 0.1
    assert metrics.auc(split.y_test, scores) > 0.6
    # the host receives the scores instead when the job says so
    to_host = p.model_copy(update={"predict_to": "host"})
    np.testing.assert_allclose(_predict(split, to_host, gm, hm), scores, atol=1e-12)


def test_model_parts_round_trip(split):
    p = FTLParams(mode="plain", max_iter=2, random_state=0)
    gm, hm = _fit(split, p)
    for part in (gm, hm):
        buf = io.BytesIO()
        save_part(part, buf)
        back = load_part(io.BytesIO(buf.getvalue()))
        x = split.guest.values if part.role == "guest" else split.host.values
        np.testing.assert_array_equal(back.represent(x), part.represent(x))
        assert (back.phi is None) == (part.phi is None)
    bad = gm.to_fields()
    bad["weights"] = bad["weights"][:-1]
    with pytest.raises(DataError):
        _ftl.FTLPartyModel.from_fields(bad)
    with pytest.raises(DataError):
        _ftl.FTLPartyModel.from_fields({"format": "something else"})


def test_params_validated():
    with pytest.raises(ValueError):
        FTLParams(scheme="rot13")
    with pytest.raises(ValueError):
        FTLParams(guest_hidden=[0])
    with pytest.raises(ValueError):
        FTLParams(mode="ss", unknown=1)
    with pytest.raises(ConfigError):
        FTLGuest(FTLParams(mode="ss"))


def test_mismatched_parameters_stop_both(split):
    pg, ph = FTLParams(mode="plain", max_iter=1), FTLParams(mode="plain", max_iter=2)
    with pytest.raises(PartyFailed, match="different parameters"):
        launch({"guest": Party("guest", lambda ctx: FTLGuest(pg).fit(ctx, split.guest.values, split.y,
                                                                      ids=list(split.guest.index))),
                "host": Party("host", lambda ctx: FTLHost(ph).fit(ctx, split.host.values,
                                                                   ids=list(split.host.index)))})


# ----------------------------------------------------------------------------- HE mode
# 1024-bit keys for speed (the default is 2048), a small slice and small networks
HE = dict(key_bits=1024, max_iter=3, latent_dim=2, guest_hidden=[4], host_hidden=[3], random_state=5,
          learning_rate=0.1, guest_loss_weight=0.3)


@pytest.fixture(scope="module")
def small():
    return transfer_split("default_credit", n_guest=120, n_host=100, n_overlap=12, seed=2)


@pytest.mark.parametrize("scheme", ["paillier", "ou"])
def test_he_equals_plain_seed_for_seed(small, scheme):
    """The paper's central claim, without its numbers: same seeds, same losses and predictions."""
    plain = FTLParams(mode="plain", **HE)
    enc = FTLParams(mode="he", scheme=scheme, **HE)
    gp, hp = _fit(small, plain)
    ge, he_ = _fit(small, enc)
    np.testing.assert_allclose(ge.losses, gp.losses, rtol=0, atol=1e-7)
    np.testing.assert_allclose(ge.phi, gp.phi, rtol=0, atol=1e-7)
    for a, b in zip(he_.weights, hp.weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
    s_plain = _predict(small, plain, gp, hp)
    s_he = _predict(small, enc, ge, he_)
    np.testing.assert_allclose(s_he, s_plain, rtol=0, atol=1e-6)
    # and the plain mode is the centralised twin
    np.testing.assert_allclose(_twin(small, plain).losses_, gp.losses, rtol=1e-10)


def test_he_communication_efficient_variant_matches_plain(small):
    p = dict(HE, max_iter=1, local_steps=2)
    gp, hp = _fit(small, FTLParams(mode="plain", **p))
    ge, he_ = _fit(small, FTLParams(mode="he", **p))
    np.testing.assert_allclose(ge.losses, gp.losses, rtol=0, atol=1e-7)
    for a, b in zip(he_.weights, hp.weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
    # the second local step reuses the peer's components of the first: not the twin's second iteration
    twin = _twin(small, FTLParams(mode="plain", **dict(p, max_iter=2, local_steps=1)))
    assert abs(gp.losses[0] - twin.losses_[1]) > 1e-6


def test_wire_audit_he_training_and_prediction(small):
    """No feature, representation, gradient or label of one party crosses in clear: in HE mode no
    message carries a float array at all, and no input value's bytes appear in any payload."""
    from atoll import wire

    p = FTLParams(mode="he", **dict(HE, max_iter=1))
    seen = []
    rec = lambda s, r, a, b: seen.append((s, r, a, bytes(b)))  # noqa: E731
    gm, hm = _fit(small, p, recorder=rec)
    _predict(small, p, gm, hm, recorder=rec)
    _predict(small, p.model_copy(update={"predict_to": "host"}), gm, hm, recorder=rec)
    xg, xh = small.guest.values.astype(float), small.host.values.astype(float)
    zg = (xg - xg.mean(0)) / xg.std(0)
    zh = (xh - xh.mean(0)) / np.where(xh.std(0) > 0, xh.std(0), 1)
    ua0 = _ftl.forward(_ftl.network_for(p, "guest", xg.shape[1]), zg)
    ub0 = _ftl.forward(_ftl.network_for(p, "host", xh.shape[1]), zh)
    pats = {"guest": [np.float64(v).tobytes() for v in np.concatenate([zg.ravel(), ua0.ravel()])
                      if not float(v).is_integer()]
            + [np.float64(v).tobytes() for v in xg.ravel() if not float(v).is_integer()][:300]
            + [small.y[i:i + 8].astype(dt).tobytes() for i in range(0, 120, 8) for dt in ("<f8", "<i8")],
            "host": [np.float64(v).tobytes() for v in np.concatenate([zh.ravel(), ub0.ravel(),
                                                                      hm.represent(xh).ravel()])
                     if not float(v).is_integer()]}
    pats["guest"] += [np.float64(v).tobytes() for v in gm.phi]
    assert len(seen) > 10
    for sender, receiver, address, payload in seen:
        for pat in pats[sender]:
            assert pat not in payload, f"{sender}->{receiver} {address} carries an input in clear"
        if "psi" in address:
            continue
        floats = [a for a in arrays(wire.loads(payload)) if a.dtype.kind == "f"]
        assert not floats, f"{sender}->{receiver} {address} carries a float array"


class _WrongKeyHost(FTLHost):
    def _keys(self, ctx, peer):
        from atoll.crypto import he

        pk, sk = he.generate_keypair("paillier", 512)
        ctx.send(peer, "ftl_pk", pk)
        return pk, sk, ctx.recv(peer, "ftl_pk")


class _WrongShapeHost(FTLHost):
    def _enc(self, pk, x):
        return super()._enc(pk, np.vstack([x, x[:1]]) if x.ndim == 2 and x.shape[0] == 12 else x)


@pytest.mark.parametrize("host_cls, err", [(_WrongKeyHost, "public key"), (_WrongShapeHost, "shape")])
def test_hostile_host_is_refused(small, host_cls, err):
    p = FTLParams(mode="he", **dict(HE, max_iter=1))
    with pytest.raises(PartyFailed, match=err) as info:
        _fit(small, p, host_cls=host_cls)
    assert isinstance(info.value.error, (CryptoError, DataError))
