"""Vertical Poisson regression: dvisits against scikit-learn's PoissonRegressor (held-out
rows), exposure, the multiplicative chain through several hosts, two-party mode.

Keys: 512-bit Paillier (speed; same protocol and fixed point as at 2048 bits).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import PoissonRegressor

from atoll import datasets
from atoll.ml import metrics
from atoll.ml.vertical import HeteroPoissonRegression
from atoll.ml.vertical._glm import GLMParams, fit_plaintext, prepare

KEY = 512
TWIN_TOL = 1e-6


@pytest.fixture(scope="module")
def dvisits():
    g = datasets.load("dvisits", "hetero", "guest")
    y = g.pop("doctorco").to_numpy(dtype=float)
    h = datasets.load("dvisits", "hetero", "host")
    perm = np.random.default_rng(0).permutation(len(y))
    return g, h, y, np.sort(perm[:1000]), np.sort(perm[1000:])  # 1,000 training rows (speed)


def test_deviance_within_one_percent_of_sklearn(dvisits):
    g, h, y, tr, te = dvisits
    est = HeteroPoissonRegression(key_bits=KEY, random_state=0, penalty=None, early_stopping="none",
                                  compute_loss=False)
    est.fit({"guest": (g.iloc[tr], y[tr]), "host_0": h.iloc[tr]})
    mu = est.predict({"guest": g.iloc[te], "host_0": h.iloc[te]})
    X = np.hstack([g.values, h.values])
    sk = PoissonRegressor(alpha=0.0, max_iter=1000).fit(X[tr], y[tr])
    dev_fed = metrics.mean_poisson_deviance(y[te], mu)
    dev_sk = metrics.mean_poisson_deviance(y[te], sk.predict(X[te]))
    assert dev_fed <= dev_sk * 1.01, (dev_fed, dev_sk)
    d2 = est.score({"guest": (g.iloc[te], y[te]), "host_0": h.iloc[te]})
    assert 0.05 < d2 < 1.0


def test_exposure_chain_of_hosts_and_two_party_mode_equal_the_twin():
    rng = np.random.default_rng(5)
    n = 300
    xg, xh0, xh1 = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)), rng.normal(size=(n, 1))
    exposure = rng.uniform(0.5, 3.0, n)
    w = np.array([0.3, -0.2, 0.25, 0.1, -0.3])
    y = rng.poisson(exposure * np.exp(0.2 + np.hstack([xg, xh0, xh1]) @ w)).astype(float)
    params = dict(key_bits=KEY, max_iter=4, early_stopping="none", precondition=False, learning_rate=0.2,
                  random_state=1)
    two_hosts = HeteroPoissonRegression(**params).fit(
        {"guest": (xg, y, exposure), "host_0": xh0, "host_1": xh1})
    ws, _, losses = fit_plaintext([xg, xh0, xh1], y, two_hosts.params_, exposure=exposure)
    np.testing.assert_allclose(two_hosts.coef_, np.concatenate([ws[0][1:], ws[1], ws[2]]), atol=TWIN_TOL)
    np.testing.assert_allclose(two_hosts.loss_history_, losses, rtol=1e-7)
    one_host = HeteroPoissonRegression(**params).fit(
        {"guest": (xg, y, exposure), "host_0": np.hstack([xh0, xh1])})
    np.testing.assert_allclose(one_host.coef_, two_hosts.coef_, atol=TWIN_TOL)
    pair = HeteroPoissonRegression(mode="two_party", **params).fit(
        {"guest": (xg, y, exposure), "host_0": np.hstack([xh0, xh1])})
    np.testing.assert_allclose(pair.coef_, one_host.coef_, atol=TWIN_TOL)
    np.testing.assert_allclose(pair.loss_history_, one_host.loss_history_, rtol=1e-7)
    # prediction with exposure: e * exp(score)
    mu = pair.predict({"guest": xg, "host_0": np.hstack([xh0, xh1])}, exposure=exposure)
    np.testing.assert_allclose(mu, exposure * np.exp(pair.intercept_ + np.hstack([xg, xh0, xh1]) @ pair.coef_))


def test_exposure_twin_converges_to_sklearn_with_offset():
    """Poisson with exposure e == PoissonRegressor on y / e with sample weights e (same optimum).

    The federated run equals this plaintext twin (test above); here the twin runs long enough
    to converge, and is scored on held-out rows with their own exposure."""
    rng = np.random.default_rng(6)
    n = 2500
    x = rng.normal(size=(n, 4))
    e = rng.uniform(0.5, 3.0, n)
    y = rng.poisson(e * np.exp(0.1 + x @ np.array([0.3, -0.2, 0.25, 0.1]))).astype(float)
    tr, te = np.arange(2000), np.arange(2000, n)
    p = GLMParams(family="poisson", max_iter=300, early_stopping="none", precondition=True,
                  optimizer="sgd", learning_rate=0.3, penalty=None)
    ws, _, _ = fit_plaintext([x[tr, :2], x[tr, 2:]], y[tr], p, exposure=e[tr])
    sk = PoissonRegressor(alpha=0.0, max_iter=1000).fit(x[tr], y[tr] / e[tr], sample_weight=e[tr])
    m0, t0 = prepare(x[tr, :2], True)[1:]
    m1, t1 = prepare(x[tr, 2:], True)[1:]
    coef = np.concatenate([t0 @ ws[0][1:], t1 @ ws[1]])
    np.testing.assert_allclose(coef, sk.coef_, atol=1e-3)
    intercept = ws[0][0] - m0 @ t0 @ ws[0][1:] - m1 @ t1 @ ws[1]
    mu_twin = e[te] * np.exp(intercept + x[te] @ coef)
    mu_sk = e[te] * sk.predict(x[te])
    dev_twin = metrics.mean_poisson_deviance(y[te], mu_twin)
    dev_sk = metrics.mean_poisson_deviance(y[te], mu_sk)
    assert abs(dev_twin - dev_sk) <= 0.01 * dev_sk, (dev_twin, dev_sk)
    # ignoring the exposure would be clearly worse: the check above has teeth
    mu_no_e = PoissonRegressor(alpha=0.0, max_iter=1000).fit(x[tr], y[tr]).predict(x[te])
    assert metrics.mean_poisson_deviance(y[te], mu_no_e) > 1.05 * dev_sk
