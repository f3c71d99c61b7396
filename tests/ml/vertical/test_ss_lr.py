"""Two-party SS logistic / linear regression and secure Pearson against scikit-learn / numpy on
bundled data (held-out rows), the shared-weights mode, and a wire audit of training.

Dealer provider (the arbiter) for speed; the HE provider's triples are checked equal to the
dealer's in tests/secure/mpc."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split

from atoll import datasets
from atoll.crypto import ring
from atoll.errors import DataError
from atoll.federation import Party, launch
from atoll.ml import metrics
from atoll.ml.vertical import ss_lr
from atoll.ml.vertical.pearson import hetero_pearson
from atoll.ml.vertical.ss_lr import SSLinearRegression, SSLogisticRegression


def _load(name, label):
    g = datasets.load(name, "hetero", "guest")
    h = datasets.load(name, "hetero", "host")
    return g.drop(columns=[label]), h, g[label].to_numpy(dtype=float)


@pytest.fixture(scope="module")
def credit():
    g, h, y = _load("default_credit", "y")
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    return g, h, y, tr, te


def test_ss_lr_matches_sklearn_auc_on_default_credit(credit):
    g, h, y, tr, te = credit
    est = SSLogisticRegression(max_iter=30, learning_rate=1.0).fit({"guest": (g.iloc[tr], y[tr]),
                                                                   "host_0": h.iloc[tr]})
    X = np.hstack([g.values, h.values])
    mu, sd = X[tr].mean(0), X[tr].std(0)
    sk = LogisticRegression(C=1e6, max_iter=5000).fit((X[tr] - mu) / sd, y[tr])
    auc_sk = metrics.auc(y[te], sk.decision_function((X[te] - mu) / sd))
    score = est.decision_function({"guest": g.iloc[te], "host_0": h.iloc[te]})
    auc = metrics.auc(y[te], score)
    assert abs(auc - auc_sk) <= 0.005, (auc, auc_sk)
    # the joint score is the raw-scale linear model each party holds its part of
    np.testing.assert_allclose(score, X[te] @ est.coef_ + est.intercept_, atol=1e-9)
    assert est.n_iter_ == 30 and len(est.epoch_seconds_) == 30
    assert est.timing_["offline_s"] > 0 and est.timing_["online_s"] > 0
    assert set(np.unique(est.predict({"guest": g.iloc[te], "host_0": h.iloc[te]}))) <= {0, 1}


def test_ss_linr_within_one_percent_rmse_on_motor():
    g, h, y = _load("motor", "motor_speed")
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, random_state=0)
    est = SSLinearRegression(max_iter=400, learning_rate=0.4).fit({"guest": (g.iloc[tr], y[tr]),
                                                                  "host_0": h.iloc[tr]})
    X = np.hstack([g.values, h.values])
    sk = LinearRegression().fit(X[tr], y[tr])
    rmse_sk = metrics.rmse(y[te], sk.predict(X[te])) if hasattr(metrics, "rmse") else \
        float(np.sqrt(np.mean((y[te] - sk.predict(X[te])) ** 2)))
    pred = est.predict({"guest": g.iloc[te], "host_0": h.iloc[te]})
    rmse = float(np.sqrt(np.mean((y[te] - pred) ** 2)))
    assert abs(rmse - rmse_sk) <= 0.01 * rmse_sk, (rmse, rmse_sk)


def test_shared_weights_mode_predicts_on_shares(credit):
    g, h, y, tr, te = credit
    rows, test = tr[:3000], te[:500]
    params = dict(max_iter=5, batch_size=1024, learning_rate=0.2, trunc="exact", shuffle=True, random_state=3)
    data = {"guest": (g.iloc[rows], y[rows]), "host_0": h.iloc[rows]}
    resp = SSLogisticRegression(**params).fit(data)
    shared = SSLogisticRegression(reveal="shared", **params).fit(data)
    assert not hasattr(shared, "coef_") and shared.guest_model_.shares is not None
    td = {"guest": g.iloc[test], "host_0": h.iloc[test]}
    np.testing.assert_allclose(shared.decision_function(td), resp.decision_function(td), atol=2e-3)


def test_misaligned_rows_are_refused(credit):
    g, h, y, tr, _ = credit
    with pytest.raises(DataError, match="same order"):
        SSLogisticRegression(max_iter=1).fit({"guest": (g.iloc[tr[:200]], y[tr[:200]]),
                                              "host_0": h.iloc[tr[200:400]]})


def test_pearson_matches_numpy_corrcoef_across_parties(credit):
    g, h, _, tr, _ = credit
    rg, rh = hetero_pearson(g.iloc[tr], h.iloc[tr])
    ref = np.corrcoef(np.hstack([g.values[tr], h.values[tr]]).T)
    assert np.abs(rg.corr - ref).max() <= 1e-4 and np.abs(rh.corr - ref).max() <= 1e-4
    np.testing.assert_allclose(rg.vif, np.diag(np.linalg.inv(ref)), rtol=1e-3)
    assert rg.columns == list(g.columns) + list(h.columns)
    # without exchanging local blocks each party only learns the cross block and its own
    rg2, rh2 = hetero_pearson(g.iloc[tr], h.iloc[tr], exchange_local=False)
    dg = g.shape[1]
    assert np.isnan(rg2.corr[dg:, dg:]).all() and np.isnan(rh2.corr[:dg, :dg]).all()
    assert np.abs(rg2.corr[:dg, dg:] - ref[:dg, dg:]).max() <= 1e-4


def test_wire_audit_training_sends_no_label_or_feature_in_clear(credit):
    g, h, y, tr, _ = credit
    rows = tr[:300]  # every label pattern is kept below; features are sampled (400 patterns a party)
    xg, xh, yy = g.values[rows].astype(float), h.values[rows].astype(float), y[rows]
    params = ss_lr.SSGLMParams(max_iter=2, batch_size=100)
    seen = []
    parties = {"guest": Party("guest", ss_lr._fit, {"role": ss_lr.SSLRGuest(params), "x": xg, "y": yy}),
               "host_0": Party("host", ss_lr._fit, {"role": ss_lr.SSLRHost(params), "x": xh}),
               "arbiter": Party("arbiter", ss_lr._dealer)}
    out = launch(parties, recorder=lambda s, r, a, p: seen.append((s, r, a, bytes(p))))
    assert out["guest"].coef is not None and len(seen) > 50
    zg = (xg - xg.mean(0)) / np.where(xg.std(0) > 0, xg.std(0), 1)
    zh = (xh - xh.mean(0)) / np.where(xh.std(0) > 0, xh.std(0), 1)
    pats = {"guest": [ring.encode(v, 16).tobytes() for v in zg.ravel() if abs(v) > 1e-3]
            + [np.float64(v).tobytes() for v in xg.ravel() if not float(v).is_integer()],
            "host_0": [ring.encode(v, 16).tobytes() for v in zh.ravel() if abs(v) > 1e-3]
            + [np.float64(v).tobytes() for v in xh.ravel() if not float(v).is_integer()]}
    pick = np.random.default_rng(0)
    labels = [yy[i:i + 8].astype(dt).tobytes() for i in range(0, 300, 8) for dt in ("<f8", "<i8")]
    labels += [ring.encode(yy[i:i + 4], 16).tobytes() for i in range(0, 300, 4)]
    pats = {k: [v[i] for i in pick.choice(len(v), min(len(v), 400), replace=False)] for k, v in pats.items()}
    pats["guest"] += labels
    for sender, receiver, address, payload in seen:
        for pat in pats.get(sender, []):
            assert pat not in payload, f"{sender}->{receiver} {address} carries an input in clear"
    assert {r for s, r, _, _ in seen if s == "arbiter"} == {"guest", "host_0"}
