"""Feature selection across parties: the same columns as a plain rule on the joined data, each party
learning only its own (wire audit), on default_credit with IVs from the plaintext twin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atoll import datasets, wire
from atoll.errors import ConfigError
from atoll.federation import Party, launch
from atoll.ml.feature.binning import BinningParams, plain_binning
from atoll.ml.feature.selection import HeteroSelectionGuest, HeteroSelectionHost, SelectionParams, combine, local_mask


@pytest.fixture(scope="module")
def credit():
    g = datasets.load("default_credit", "hetero", "guest").iloc[:4000].copy()
    h = datasets.load("default_credit", "hetero", "host").loc[g.index].copy()
    y = g.pop("y").to_numpy()
    h.loc[h.index[::3], "x4"] = np.nan  # a third missing
    h["x9"] = 1.0                        # constant
    pooled = pd.concat([g, h.add_prefix("host_0.")], axis=1)
    _, tables = plain_binning(pooled.to_numpy(np.float64), list(pooled.columns), y, BinningParams(max_bin=8))
    return g, h, tables


def federated(g, h, tables, p, recorder=None):
    def guest(ctx):
        return HeteroSelectionGuest(p).fit(ctx, g.to_numpy(), list(g.columns), tables, {"host_0": list(h.columns)})

    def host(ctx):
        return HeteroSelectionHost(p).fit(ctx, h.to_numpy(), list(h.columns))

    return launch({"guest": Party("guest", guest), "host_0": Party("host", host)}, recorder=recorder)


def test_selection_equals_the_plain_rule_on_the_joined_columns(credit):
    g, h, tables = credit
    p = SelectionParams(iv_threshold=0.03, top_k=9, max_missing_rate=0.2, keep=["x12"])
    seen = []
    out = federated(g, h, tables, p, recorder=lambda s, r, a, b: seen.append((r, wire.loads(b))))
    kept_g = [c for c, k in zip(g.columns, out["guest"]["guest"]) if k]
    kept_h = [c for c, k in zip(h.columns, out["host_0"]) if k]
    np.testing.assert_array_equal(out["guest"]["host_0"], out["host_0"])
    # the rule by hand: eligible = IV >= 0.03, <= 20 % missing, >= 2 values; the 8 best by IV plus x12 (forced)
    pooled = pd.concat([g, h.add_prefix("host_0.")], axis=1)
    ok = [c for c in pooled.columns if tables[c]["iv_rank"] >= 0.03 and pooled[c].isna().mean() <= 0.2
          and pooled[c].nunique() >= 2 and c != "x12"]
    best = sorted(ok, key=lambda c: -tables[c]["iv_rank"])[:8]
    assert set(kept_g) | {f"host_0.{c}" for c in kept_h} == set(best) | {"x12"}
    assert "x4" not in kept_h and "x9" not in kept_h and kept_h
    # what reaches the host: one boolean per own column, nothing else
    (to_host,) = [v for r, v in seen if r == "host_0"]
    assert to_host.dtype == bool and to_host.shape == (h.shape[1],)


def test_local_criteria_and_lists():
    x = np.array([[1.0, 5.0, np.nan], [2.0, 5.0, np.nan], [3.0, 5.0, 1.0]])
    ok, forced = local_mask(x, ["a", "b", "c"], SelectionParams(max_missing_rate=0.5, drop=["a"], keep=["b"]))
    assert ok.tolist() == [False, False, False] and forced.tolist() == [False, True, False]
    keep = combine({"guest": (["a", "b", "c"], ok, forced)}, None, SelectionParams(iv_threshold=None))
    assert keep["guest"].tolist() == [False, True, False]
    with pytest.raises(ConfigError, match="binning"):
        combine({"guest": (["a"], ok[:1], forced[:1])}, None, SelectionParams())
    with pytest.raises(ConfigError, match="both in keep and in drop"):
        local_mask(x, ["a", "b", "c"], SelectionParams(drop=["a"], keep=["a"]))
