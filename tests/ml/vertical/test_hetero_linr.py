"""Vertical linear regression: federated vs plaintext twin vs scikit-learn (held-out rows),
several hosts (FATE's motor host_1/host_2 split), two-party mode.

Keys: 512-bit Paillier (speed; same protocol and fixed point as at 2048 bits).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split

from atoll import datasets
from atoll.ml import metrics
from atoll.ml.vertical import HeteroLinearRegression
from atoll.ml.vertical._glm import fit_plaintext, prepare

KEY = 512
TWIN_TOL = 1e-6


def _load(name: str, label: str, host: str = "host"):
    g = datasets.load(name, "hetero", "guest")
    y = g.pop(label).to_numpy(dtype=float)
    return g, datasets.load(name, "hetero", host), y


@pytest.mark.parametrize("name,label", [("motor", "motor_speed"), ("student", "y")])
def test_rmse_within_one_percent_of_centralised_fit(name, label):
    g, h, y = _load(name, label)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.3, random_state=0)
    # defaults: full batch SGD, lr 0.5, 30 epochs, each party whitens its own features locally
    est = HeteroLinearRegression(key_bits=KEY, random_state=0, penalty=None, early_stopping="none")
    est.fit({"guest": (g.iloc[tr], y[tr]), "host_0": h.iloc[tr]})
    # the same run in plaintext
    ws, n_iter, losses = fit_plaintext([g.values[tr], h.values[tr]], y[tr], est.params_)
    mg, tg = prepare(g.values[tr], True)[1:]
    mh, th = prepare(h.values[tr], True)[1:]
    twin_pred = ws[0][0] + (g.values[te] - mg) @ tg @ ws[0][1:] + (h.values[te] - mh) @ th @ ws[1]
    pred = est.predict({"guest": g.iloc[te], "host_0": h.iloc[te]})
    np.testing.assert_allclose(pred, twin_pred, atol=1e-5)
    np.testing.assert_allclose(est.loss_history_, losses, rtol=1e-7)
    X = np.hstack([g.values, h.values])
    central = LinearRegression().fit(X[tr], y[tr]).predict(X[te])
    rmse_fed, rmse_c = metrics.rmse(y[te], pred), metrics.rmse(y[te], central)
    assert rmse_fed <= rmse_c * 1.01, (rmse_fed, rmse_c)
    assert est.score({"guest": (g.iloc[te], y[te]), "host_0": h.iloc[te]}) == pytest.approx(
        metrics.r2(y[te], pred))


def test_two_hosts_equal_one_host_with_both_feature_sets():
    g, h, y = _load("motor", "motor_speed")
    h1, h2 = datasets.load("motor", "hetero", "host_1"), datasets.load("motor", "hetero", "host_2")
    params = dict(key_bits=KEY, max_iter=3, early_stopping="none", precondition=False, learning_rate=0.1)
    one = HeteroLinearRegression(**params).fit({"guest": (g, y), "host_0": h})
    two = HeteroLinearRegression(**params).fit({"guest": (g, y), "host_0": h1, "host_1": h2})
    np.testing.assert_allclose(two.coef_, one.coef_, atol=TWIN_TOL)
    np.testing.assert_allclose(two.loss_history_, one.loss_history_, rtol=1e-7)


def test_two_party_mode_equals_arbiter_mode():
    g, h, y = _load("student", "y")
    params = dict(key_bits=KEY, max_iter=3, early_stopping="none")
    a = HeteroLinearRegression(mode="arbiter", **params).fit({"guest": (g, y), "host_0": h})
    b = HeteroLinearRegression(mode="two_party", **params).fit({"guest": (g, y), "host_0": h})
    np.testing.assert_allclose(b.coef_, a.coef_, atol=TWIN_TOL)
    assert b.intercept_ == pytest.approx(a.intercept_, abs=TWIN_TOL)
