"""The shared estimator machinery of the vertical GLMs (``atoll.ml.vertical._glm``): the public
API the job components and users rely on, input errors raised before any training, the
stopping rules against the plaintext twin, and which control messages a run sends.

Keys: 512-bit Paillier (speed; the checks here do not depend on the key size).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone

from atoll import datasets
from atoll.errors import AtollError, ConfigError, DataError
from atoll.federation import Party, PartyFailed, launch
from atoll.ml.vertical import (
    HeteroLinearRegression,
    HeteroLogisticRegression,
    HeteroPoissonRegression,
    _glm,
    hetero_linr,
    hetero_lr,
    hetero_poisson,
)
from atoll.ml.vertical._glm import GLMParams, fit_plaintext

KEY = 512
TWIN_TOL = 1e-6

ESTIMATORS = [(HeteroLogisticRegression, hetero_lr, "HeteroLR", "logistic"),
              (HeteroLinearRegression, hetero_linr, "HeteroLinR", "linear"),
              (HeteroPoissonRegression, hetero_poisson, "HeteroPoisson", "poisson")]


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    xg, xh = rng.normal(size=(60, 2)), rng.normal(size=(60, 3))
    y = (rng.random(60) < 0.5).astype(float)
    return xg, xh, y


# ------------------------------------------------------------------------------- public API
@pytest.mark.parametrize("cls,module,prefix,family", ESTIMATORS)
def test_role_classes_are_importable_by_name_and_pickle(cls, module, prefix, family):
    roles = [getattr(module, f"{prefix}{r}") for r in ("Guest", "Host", "Arbiter")]  # as job components do
    for role, base in zip(roles, (_glm.GLMGuest, _glm.GLMHost, _glm.GLMArbiter)):
        assert issubclass(role, base) and role.__module__ == module.__name__
        inst = role(GLMParams(key_bits=KEY))
        assert inst.params.family == family  # the class binds the family whatever params say
        assert type(pickle.loads(pickle.dumps(inst))) is role  # transport="processes" pickles role objects
    assert [type(r) for r in cls()._roles] == [type] * 3 and cls()._roles == tuple(roles)


def test_constructor_defaults_and_sklearn_plumbing():
    lr, linr, pois = HeteroLogisticRegression(), HeteroLinearRegression(), HeteroPoissonRegression()
    assert (lr.optimizer, lr.learning_rate, lr.precondition) == ("adam", 0.05, False)
    for est in (linr, pois):
        assert (est.optimizer, est.learning_rate, est.precondition) == ("sgd", 0.5, True)
    for est in (lr, linr, pois):
        params = est.get_params()
        assert {"penalty", "alpha", "max_iter", "tol", "random_state", "mode", "key_bits", "n_jobs",
                "transport", "timeout", "batch_size", "early_stopping"} <= set(params)
        again = clone(est.set_params(max_iter=7, random_state=3))
        assert again.get_params() == est.get_params() and type(again) is type(est)
    assert repr(HeteroPoissonRegression(max_iter=3)) == "HeteroPoissonRegression(max_iter=3)"
    assert HeteroLinearRegression(precondition=False)._params().precondition is False


# ------------------------------------------------------------------------------- input errors
BAD_INPUTS = [
    ("nan in host", HeteroLogisticRegression, lambda g, h, y: {"guest": (g, y), "host_0": np.where(h > 1.5, np.nan, h)},
     DataError, "NaN or infinity"),
    ("labels 1/2", HeteroLogisticRegression, lambda g, h, y: {"guest": (g, y + 1), "host_0": h},
     DataError, r"labels in \{0, 1\}"),
    ("one class", HeteroLogisticRegression, lambda g, h, y: {"guest": (g, 0 * y), "host_0": h},
     DataError, "both classes"),
    ("label count", HeteroLogisticRegression, lambda g, h, y: {"guest": (g, y[:50]), "host_0": h},
     DataError, "60 feature rows but 50 labels"),
    ("1-d host", HeteroLogisticRegression, lambda g, h, y: {"guest": (g, y), "host_0": h[:, 0]},
     DataError, "2-d table"),
    ("no host features", HeteroLinearRegression, lambda g, h, y: {"guest": (g, y), "host_0": h[:, :0]},
     DataError, "at least one feature"),
    ("no rows", HeteroLinearRegression, lambda g, h, y: {"guest": (g[:0], y[:0]), "host_0": h[:0]},
     DataError, "no rows"),
    ("negative counts", HeteroPoissonRegression, lambda g, h, y: {"guest": (g, -y), "host_0": h},
     DataError, "non-negative integer counts"),
    ("zero exposure", HeteroPoissonRegression, lambda g, h, y: {"guest": (g, y, 0 * y), "host_0": h},
     DataError, "finite positive"),
    ("exposure for LR", HeteroLogisticRegression, lambda g, h, y: {"guest": (g, y, 1 + y), "host_0": h},
     ConfigError, "only used by Poisson"),
    ("no guest", HeteroLogisticRegression, lambda g, h, y: {"host_0": h}, DataError, '"guest"'),
    ("guest without labels", HeteroLogisticRegression, lambda g, h, y: {"guest": g, "host_0": h},
     DataError, "holds the labels"),
    ("odd party name", HeteroLogisticRegression, lambda g, h, y: {"guest": (g, y), "shop": h},
     DataError, "host_0"),
    ("no host", HeteroLogisticRegression, lambda g, h, y: {"guest": (g, y)}, DataError, "at least one host"),
]


@pytest.mark.parametrize("name,cls,make,error,match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_a_clear_error_before_training(toy, name, cls, make, error, match):
    est = cls(key_bits=KEY, max_iter=1, timeout=30)
    with pytest.raises(error, match=match):
        est.fit(make(*toy))
    assert not hasattr(est, "coef_")


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": "64"}, "batch_size"), ({"batch_size": 64.5}, "batch_size"), ({"n_jobs": 0}, "n_jobs"),
    ({"max_iter": 0}, "max_iter"), ({"learning_rate": -1.0}, "learning_rate"), ({"tol": -1.0}, "tol"),
    ({"approximation": "exact"}, "approximation"), ({"early_stopping": "never"}, "early_stopping"),
    ({"key_bits": 256}, "key_bits"), ({"penalty": "elasticnet"}, "penalty"), ({"mode": "three_party"}, "mode"),
])
def test_bad_parameters_raise_config_error_at_once(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        HeteroLogisticRegression(**kwargs)._params()
    with pytest.raises(ConfigError, match="logistic regression only"):
        HeteroLinearRegression(approximation="guest_taylor")._params()


def test_scoring_errors(toy):
    xg, xh, y = toy
    with pytest.raises(AtollError, match="not fitted"):
        HeteroLogisticRegression().predict({"guest": xg, "host_0": xh})
    m = HeteroLogisticRegression(key_bits=KEY, max_iter=1).fit({"guest": (xg, y), "host_0": xh})
    with pytest.raises(DataError, match="host_0's model has 3 features, the data 2"):
        m.predict({"guest": xg, "host_0": xh[:, :2]})
    with pytest.raises(DataError, match="trained with hosts"):
        m.predict({"guest": xg, "host_1": xh})
    with pytest.raises(DataError, match="cannot score: host_0 has 50 rows but the guest has 60"):
        m.predict({"guest": xg, "host_0": xh[:50]})
    with pytest.raises(DataError, match="score\\(\\) needs labels"):
        m.score({"guest": xg, "host_0": xh})


@pytest.mark.parametrize("mode", ["arbiter", "two_party"])
def test_misaligned_host_is_refused_in_both_modes(mode):
    g, h, y = _breast_mini()
    est = HeteroLogisticRegression(mode=mode, key_bits=KEY, max_iter=1)
    with pytest.raises(DataError, match="not in the guest's order"):
        est.fit({"guest": (g, y), "host_0": h.iloc[::-1]})
    with pytest.raises(DataError, match="different parameters"):  # a host that runs another plan
        _run_mismatched_plan(g.values, y, h.values, mode)


def _run_mismatched_plan(xg, y, xh, mode):
    guest_p = GLMParams(mode=mode, key_bits=KEY, max_iter=2, optimizer="sgd", learning_rate=0.1)
    host_p = GLMParams(mode=mode, key_bits=KEY, max_iter=3, optimizer="sgd", learning_rate=0.1)
    parties = {"guest": Party("guest", _glm._fit_guest, {"role": hetero_lr.HeteroLRGuest(guest_p), "x": xg,
                                                         "y": y, "exposure": None, "ids": None}),
               "host_0": Party("host", _glm._fit_host, {"role": hetero_lr.HeteroLRHost(host_p), "x": xh,
                                                        "ids": None})}
    if mode == "arbiter":
        parties["arbiter"] = Party("arbiter", _glm._fit_arbiter, {"role": hetero_lr.HeteroLRArbiter(guest_p)})
    try:
        launch(parties, timeout=30)
    except PartyFailed as e:
        raise e.error from e


# ------------------------------------------------------------------------------- stopping rules
def _breast_mini():
    g = datasets.load("breast_mini", "hetero", "guest")
    h = datasets.load("breast_mini", "hetero", "host")
    return g, h, g.pop("y").to_numpy(dtype=float)


@pytest.mark.parametrize("mode", ["arbiter", "two_party"])
def test_early_stopping_on_loss_change_equals_the_twin(mode):
    g, h, y = _breast_mini()
    est = HeteroLogisticRegression(mode=mode, early_stopping="loss", tol=2e-3, max_iter=40, optimizer="sgd",
                                   learning_rate=0.5, key_bits=KEY)
    est.fit({"guest": (g, y), "host_0": h})
    ws, n_iter, losses = fit_plaintext([g.values, h.values], y, est.params_)
    assert est.converged_ and est.n_iter_ == n_iter < 40
    np.testing.assert_allclose(est.loss_history_, losses, atol=TWIN_TOL)
    assert abs(losses[-1] - losses[-2]) < 2e-3 <= abs(losses[-2] - losses[-3])
    np.testing.assert_allclose(est.coef_, np.concatenate([ws[0][1:], ws[1]]), atol=TWIN_TOL)


@pytest.mark.parametrize("mode", ["arbiter", "two_party"])
@pytest.mark.parametrize("rule", ["weight_diff", "loss", "none"])
def test_weight_change_norms_travel_only_when_the_rule_needs_them(mode, rule):
    g, h, y = _breast_mini()
    rows = np.arange(60)
    params = GLMParams(mode=mode, early_stopping=rule, tol=0.0, max_iter=2, key_bits=KEY, optimizer="sgd",
                       learning_rate=0.1)
    addresses: list[tuple[str, str, str]] = []
    parties = {"guest": Party("guest", _glm._fit_guest, {"role": hetero_lr.HeteroLRGuest(params),
                                                         "x": g.values[rows], "y": y[rows], "exposure": None,
                                                         "ids": None}),
               "host_0": Party("host", _glm._fit_host, {"role": hetero_lr.HeteroLRHost(params),
                                                        "x": h.values[rows], "ids": None})}
    if mode == "arbiter":
        parties["arbiter"] = Party("arbiter", _glm._fit_arbiter, {"role": hetero_lr.HeteroLRArbiter(params)})
    out = launch(parties, recorder=lambda s, r, a, p: addresses.append((s, r, a)))
    assert out["guest"].n_iter == 2
    norms = [(s, r) for s, r, a in addresses if a.endswith("weight_diff")]
    if rule != "weight_diff":
        assert norms == []
    elif mode == "two_party":
        assert norms == [("host_0", "guest")] * 2  # the guest coordinates: it gets the host's norm
    else:
        assert sorted(norms) == sorted([("guest", "arbiter"), ("host_0", "arbiter")] * 2)


def test_fixed_point_precision_is_configurable():
    g, h, y = _breast_mini()
    params = {"max_iter": 3, "early_stopping": "none", "optimizer": "sgd", "learning_rate": 0.5, "key_bits": KEY}
    coarse = HeteroLogisticRegression(precision_bits=20, mul_precision_bits=12, **params).fit(
        {"guest": (g, y), "host_0": h})
    ws, _, _ = fit_plaintext([g.values, h.values], y, coarse.params_)
    twin = np.concatenate([ws[0][1:], ws[1]])
    err = np.abs(coarse.coef_ - twin).max()
    assert 1e-7 < err < 1e-2  # 20 + 12 fractional bits: visible but small rounding


@pytest.mark.parametrize("mode", ["arbiter", "two_party"])
def test_okamoto_uchiyama_scheme_gives_the_twin_model(mode):
    """The protocol is scheme-agnostic: OU (faster, used by the benchmark) equals the twin too."""
    g, h, y = _breast_mini()
    est = HeteroLogisticRegression(scheme="ou", mode=mode, key_bits=1024, max_iter=2, early_stopping="none",
                                   optimizer="sgd", learning_rate=0.5, batch_size=200, random_state=5)
    est.fit({"guest": (g, y), "host_0": h})
    ws, _, losses = fit_plaintext([g.values, h.values], y, est.params_)
    np.testing.assert_allclose(est.coef_, np.concatenate([ws[0][1:], ws[1]]), atol=TWIN_TOL)
    np.testing.assert_allclose(est.loss_history_, losses, atol=TWIN_TOL)
