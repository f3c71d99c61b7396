"""The simulation facades as a scikit-learn user meets them: every facade is a ``BaseEstimator``
(``clone`` / ``get_params`` / ``set_params`` / ``repr`` round-trip), takes any party names with
``roles=``, keeps pandas column names per party, and refuses misaligned data — shuffled host
rows, reordered host columns, renamed parties — with a clear error at fit and at predict,
never a score. One transport vocabulary; the old names are refused naming the new ones.

Small slices of breast_mini (569 rows, 3 + 3 features), 512-bit Paillier for the GLMs (speed;
nothing here depends on the key size), SecureBoost in plaintext mode (same messages).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone

from atoll import datasets
from atoll.errors import ConfigError, DataError
from atoll.federation import PartyFailed, launch
from atoll.ml import registry
from atoll.ml.facade import FACADE_PARAMS, FederatedEstimator
from atoll.ml.vertical import (
    HeteroLinearRegression,
    HeteroLogisticRegression,
    HeteroPoissonRegression,
    HeteroSecureBoost,
    SSLinearRegression,
    SSLogisticRegression,
)
from atoll.ml.vertical.pearson import HeteroPearson

KEY = 512
FACADES = [HeteroLogisticRegression, HeteroLinearRegression, HeteroPoissonRegression, HeteroSecureBoost,
           SSLogisticRegression, SSLinearRegression, HeteroPearson]


@pytest.fixture(scope="module")
def breast():
    g = datasets.load("breast_mini", "hetero", "guest").iloc[:120]
    h = datasets.load("breast_mini", "hetero", "host").iloc[:120]
    y = g.pop("y").to_numpy(dtype=float)
    return g, h, y


# ------------------------------------------------------------------------------- sklearn plumbing
@pytest.mark.parametrize("cls", FACADES, ids=[c.__name__ for c in FACADES])
def test_every_facade_is_a_base_estimator_whose_params_round_trip(cls):
    est = cls()
    assert isinstance(est, BaseEstimator) and isinstance(est, FederatedEstimator)
    params = est.get_params()
    alg = cls.algorithm
    # the signature IS the algorithm's parameter model (settable fields) plus the facade's own
    assert set(params) == set(alg.params.settable()) | set(FACADE_PARAMS) | set(cls.extra_params)
    for name, default in alg.params.settable().items():
        assert params[name] == alg.facade_defaults.get(name, default), name
    changed = {"key_bits": 1024, "transport": "processes", "roles": {"bank": "guest", "shop": "host"}}
    est.set_params(**changed)
    again = clone(est)
    assert type(again) is cls and again.get_params() == est.get_params()
    assert again.get_params()["roles"] == {"bank": "guest", "shop": "host"}
    assert repr(cls(key_bits=1024)) == f"{cls.__name__}(key_bits=1024)"
    assert cls(key_bits=1024)._params().key_bits == 1024  # validated by the one model
    with pytest.raises(ConfigError, match="key_bits"):
        cls(key_bits=64)._params()
    with pytest.raises(TypeError, match="unknown parameters"):
        cls(no_such_parameter=1)
    # keyword-only, as scikit-learn recommends for many parameters
    kinds = {p.kind for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"}
    assert kinds == {inspect.Parameter.KEYWORD_ONLY}


@pytest.mark.parametrize("cls", FACADES, ids=[c.__name__ for c in FACADES])
def test_old_transport_names_are_refused_naming_the_new_ones(cls):
    for old, new in (("inprocess", "threads"), ("grpc", "processes")):
        with pytest.raises(ConfigError, match=f"use transport='{new}'.*'threads' \\| 'processes'"):
            cls(transport=old)._launch_mode()
    with pytest.raises(ConfigError, match="'threads'"):
        cls(transport="pigeon")._launch_mode()


def test_registry_lists_every_algorithm_once_and_components_derive_from_it():
    from atoll.jobs import registry as components

    names = registry.names()
    assert {"hetero_lr", "hetero_linr", "hetero_poisson", "secureboost", "ss_lr", "ss_linr", "hetero_pearson",
            "homo_lr", "homo_linr", "homo_nn"} <= set(names)
    for name in names:
        alg = registry.get(name)
        comp = components.get(name)  # the job component of the same name ...
        assert comp.Params is alg.params and comp.alg is alg and comp.layout == alg.layout  # ... is derived
        for role, cls in alg.roles.items():
            assert isinstance(cls, type) and cls.__module__.startswith("atoll.ml."), (name, role)
    with pytest.raises(KeyError, match="unknown algorithm"):
        registry.get("no_such_algorithm")


def test_scheme_choices_come_from_the_crypto_registry():
    from atoll.crypto import he

    for name in he.scheme_names():
        assert HeteroLogisticRegression(scheme=name)._params().scheme == name
        assert HeteroSecureBoost(scheme=name)._params().scheme == name
    assert HeteroSecureBoost(scheme="plain")._params().scheme == "plain"
    with pytest.raises(ConfigError, match="unknown HE scheme 'rsa'"):
        HeteroLogisticRegression(scheme="rsa")._params()
    with pytest.raises(ConfigError, match="unknown HE scheme"):
        SSLogisticRegression(scheme="plain")._params()  # plaintext mode is SecureBoost's only


# ------------------------------------------------------------------------------- names and alignment
GLM = dict(key_bits=KEY, max_iter=2, early_stopping="none", optimizer="sgd", learning_rate=0.5, random_state=0)
SB = dict(scheme="plain", n_estimators=2, max_depth=3, random_state=0)
CASES = [(HeteroLogisticRegression, GLM), (HeteroSecureBoost, SB)]


def _scores(est, data):
    return est.predict_proba(data)[:, 1]


@pytest.mark.parametrize("cls,kw", CASES, ids=["glm", "secureboost"])
def test_any_party_names_with_roles_give_the_same_model(breast, cls, kw):
    g, h, y = breast
    ref = cls(**kw).fit({"guest": (g, y), "host_0": h})
    est = cls(roles={"bank": "guest", "shop": "host"}, **kw).fit({"bank": (g, y), "shop": h})
    np.testing.assert_allclose(_scores(est, {"bank": g, "shop": h}), _scores(ref, {"guest": g, "host_0": h}),
                               rtol=0, atol=1e-12)
    assert list(est.feature_names_in_["bank"]) == list(g.columns)
    assert list(est.feature_names_in_["shop"]) == list(h.columns)
    assert est.parties_ == {"guest": "bank", "hosts": ["shop"]}


@pytest.mark.parametrize("cls,kw", CASES, ids=["glm", "secureboost"])
def test_shuffled_host_rows_are_refused_at_fit_and_at_predict(breast, cls, kw):
    g, h, y = breast
    shuffled = h.sample(frac=1.0, random_state=1)
    with pytest.raises(DataError, match="host_0's rows are not in the guest's order"):
        cls(**kw).fit({"guest": (g, y), "host_0": shuffled})
    est = cls(**kw).fit({"guest": (g, y), "host_0": h})
    with pytest.raises(DataError, match="cannot score: host_0's rows are not in the guest's order"):
        est.predict({"guest": g, "host_0": shuffled})
    with pytest.raises(DataError, match="host_0 has 119 rows but the guest has 120"):
        est.predict({"guest": g, "host_0": h.iloc[1:]})


@pytest.mark.parametrize("cls,kw", CASES, ids=["glm", "secureboost"])
def test_reordered_or_renamed_host_columns_are_refused_at_predict(breast, cls, kw):
    g, h, y = breast
    est = cls(**kw).fit({"guest": (g, y), "host_0": h})
    with pytest.raises(DataError, match=r"host_0's columns are in another order than at fit.*feature_names_in_"):
        est.predict({"guest": g, "host_0": h[list(h.columns[::-1])]})
    with pytest.raises(DataError, match=r"the guest's columns differ from those at fit: missing \['x0'\]"):
        est.predict({"guest": g.rename(columns={"x0": "age"}), "host_0": h})
    with pytest.raises(DataError, match="host_0's model has 3 features, the data 2"):
        est.predict({"guest": g.values, "host_0": h.values[:, :2]})
    # arrays carry no names: the same columns as arrays are scored as the DataFrames were
    np.testing.assert_allclose(_scores(est, {"guest": g.values, "host_0": h.values}),
                               _scores(est, {"guest": g, "host_0": h}), rtol=0, atol=1e-12)


def test_reordered_host_columns_of_an_eval_set_are_refused_at_fit(breast):
    g, h, y = breast
    ev = {"guest": (g.iloc[:40], y[:40]), "host_0": h.iloc[:40][list(h.columns[::-1])]}
    with pytest.raises(DataError, match="host_0's columns are in another order than at fit"):
        HeteroSecureBoost(**SB).fit({"guest": (g, y), "host_0": h}, eval_set=ev)


@pytest.mark.parametrize("cls,kw", CASES, ids=["glm", "secureboost"])
def test_renamed_parties_are_refused_at_fit_and_at_predict(breast, cls, kw):
    g, h, y = breast
    with pytest.raises(DataError, match="party names must be 'guest' and 'host_0'.*roles="):
        cls(**kw).fit({"guest": (g, y), "shop": h})
    with pytest.raises(DataError, match=r"parties \['insurer'\] have no role in roles="):
        cls(roles={"bank": "guest", "shop": "host"}, **kw).fit({"bank": (g, y), "insurer": h})
    est = cls(**kw).fit({"guest": (g, y), "host_0": h})
    with pytest.raises(DataError, match=r"trained with hosts \['host_0'\]; got \['host_1'\]"):
        est.predict({"guest": g, "host_1": h})
    named = cls(roles={"bank": "guest", "shop": "host", "ins": "host"}, **kw).fit({"bank": (g, y), "shop": h})
    with pytest.raises(DataError, match="trained with guest 'bank'; got 'ins'"):
        named.set_params(roles={"ins": "guest", "shop": "host"}).predict({"ins": g, "shop": h})


def test_secureboost_protocol_checks_the_row_ids_digest_itself(breast):
    """Without the facade (a deployment: each party passes its own ids), the host refuses rows whose
    ids are not the guest's, in training and in prediction."""
    from atoll.federation import Party
    from atoll.ml.vertical.secureboost import (SecureBoostGuest, SecureBoostHost, SecureBoostParams,
                                               _guest_fit, _host_fit)

    g, h, y = breast
    p = SecureBoostParams(**SB)
    ids = [str(i) for i in g.index]
    parties = {"guest": Party("guest", _guest_fit, {"params": p, "x": g.values, "y": y, "ids": ids}),
               "host_0": Party("host", _host_fit, {"params": p, "x": h.values, "ids": ids[::-1]})}
    with pytest.raises(PartyFailed) as e:
        launch(parties, timeout=30)
    assert isinstance(e.value.error, DataError) and "not in the guest's order" in str(e.value.error)
    assert SecureBoostGuest(p).params is p and SecureBoostHost(p).params is p
