"""Preparation (imputation, capping, encoding) against pandas / numpy, and PSI / CSI against the reference
formula, on real bundled rows (default_credit)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from atoll import datasets
from atoll.errors import DataError
from atoll.ml.feature.prepare import EncodeParams, ImputeParams, apply_encode, apply_impute, fit_encode, fit_impute
from atoll.ml.feature.stability import csi, psi, score_counts, score_edges


@pytest.fixture(scope="module")
def credit():
    g = datasets.load("default_credit", "hetero", "guest").drop(columns="y")
    rng = np.random.default_rng(0)
    g = g.iloc[rng.permutation(len(g))[:3000]].copy()
    for c in ("x0", "x5"):
        g.loc[rng.random(len(g)) < 0.15, c] = np.nan
    return g.iloc[:2000], g.iloc[2000:]


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent"])
def test_imputation_uses_training_statistics_only(credit, strategy):
    train, test = credit
    state = fit_impute(train, ImputeParams(strategy=strategy, columns=["x0", "x5", "x1"]))
    ref = {"mean": train.mean(), "median": train.median(), "most_frequent": train.mode().iloc[0]}[strategy]
    np.testing.assert_allclose(state["fill"], ref[["x0", "x5", "x1"]].to_numpy(), rtol=1e-12)
    out = apply_impute(test, state)
    assert not out[["x0", "x5"]].isna().any().any()
    filled = test["x0"].isna()
    assert (out.loc[filled, "x0"] == state["fill"][0]).all()
    pd.testing.assert_series_equal(out.loc[~filled, "x0"], test.loc[~filled, "x0"])
    pd.testing.assert_frame_equal(out.drop(columns=["x0", "x5", "x1"]), test.drop(columns=["x0", "x5", "x1"]))


def test_capping_and_constant_fill(credit):
    train, test = credit
    state = fit_impute(train, ImputeParams(strategy="constant", fill_value=-9, columns=["x2"], cap_lower=0.01,
                                           cap_upper=0.99))
    out = apply_impute(test, state)["x2"]
    lo, hi = np.quantile(train["x2"], [0.01, 0.99])
    np.testing.assert_allclose(out, np.clip(test["x2"], lo, hi))
    with pytest.raises(DataError, match="fill_value"):
        fit_impute(pd.DataFrame({"a": [np.nan, np.nan]}), ImputeParams())


def test_onehot_and_ordinal_against_pandas(credit):
    train, test = credit
    cat = "x0"  # 10 discrete codes (15 % of them made missing above)
    state = fit_encode(train, EncodeParams(method="onehot", columns=[cat]))
    out = apply_encode(test, state)
    cats = np.unique(train[cat].dropna())
    ref = pd.get_dummies(pd.Categorical(test[cat].where(test[cat].isin(cats)), categories=cats), dtype=np.float64)
    np.testing.assert_array_equal(out[[f"{cat}={v:g}" for v in cats]].to_numpy(), ref.to_numpy())
    assert cat not in out.columns and "x2" in out.columns
    state = fit_encode(train, EncodeParams(method="ordinal", columns=[cat]))
    codes = apply_encode(test, state)[cat].to_numpy()
    ref = pd.Categorical(test[cat].where(test[cat].isin(cats)), categories=cats).codes
    np.testing.assert_array_equal(codes, ref)
    with pytest.raises(DataError, match="max_categories"):
        fit_encode(train, EncodeParams(columns=["x2"], max_categories=64))


def test_psi_equals_the_reference_formula(credit):
    train, test = credit
    edges = score_edges(train["x3"].to_numpy(), 10)
    e, a = score_counts(train["x3"].to_numpy(), edges), score_counts(test["x3"].to_numpy(), edges)
    value, terms = psi(e, a)
    ref = 0.0
    for ei, ai in zip(e / e.sum(), a / a.sum()):
        ei, ai = max(ei, 1e-4), max(ai, 1e-4)
        ref += (ai - ei) * math.log(ai / ei)
    assert abs(value - ref) < 1e-12 and value < 0.1  # same population: stable
    assert psi(e, e)[0] == 0.0
    shifted = score_counts(test["x3"].to_numpy() + 1.0, edges)  # a shift of one standard deviation
    assert psi(e, shifted)[0] > 0.25
    assert csi(e, e, np.arange(len(e))) == 0.0
    assert abs(csi([1, 1], [0, 2], [10.0, 30.0]) - 10.0) < 1e-12
