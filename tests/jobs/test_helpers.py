"""Pure helpers of the built-in components and the artifact store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atoll.errors import DataError
from atoll.jobs.artifacts import Table, load_output, save_output
from atoll.jobs.components.scale import apply_scaler, fit_scaler
from atoll.jobs.components.split import SplitParams, split_positions


def test_split_positions_partition_and_stratify():
    y = np.array([0] * 80 + [1] * 20)
    parts = split_positions(100, y, SplitParams(test_size=0.2, validate_size=0.1), seed=1)
    allpos = np.concatenate(list(parts.values()))
    assert sorted(allpos.tolist()) == list(range(100))  # disjoint and complete
    assert len(parts["test"]) == 20 and len(parts["validate"]) == 10
    assert y[parts["test"]].sum() == 4 and y[parts["validate"]].sum() == 2  # class shares kept
    again = split_positions(100, y, SplitParams(test_size=0.2, validate_size=0.1), seed=1)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = split_positions(100, y, SplitParams(test_size=0.2, validate_size=0.1), seed=2)
    assert not np.array_equal(parts["test"], other["test"])
    with pytest.raises(ValueError):
        SplitParams(test_size=0.6, validate_size=0.5)


def test_scalers_against_sklearn():
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, (50, 3))
    x[:, 2] = 7.0  # a constant column stays finite
    test = rng.normal(3, 2, (10, 3))
    for method, sk in (("standard", StandardScaler()), ("minmax", MinMaxScaler())):
        a, b = fit_scaler(x, method)
        state = {"columns": ["a", "b", "c"], "offset": a, "divisor": b}
        t = Table(pd.DataFrame(test, columns=["a", "b", "c"]))
        got = apply_scaler(t, state).values()
        want = sk.fit(x).transform(test)
        np.testing.assert_allclose(got[:, :2], want[:, :2], rtol=1e-12)
        assert np.isfinite(got).all()


def test_table_round_trip_without_pickle(tmp_path):
    idx = pd.Index(["u1", "u2", "u3"], name="uid")
    t = Table(pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, -1.0, 2.0]}, index=idx),
              pd.Series([0, 1, 0], index=idx, name="y"))
    f = save_output(tmp_path, "data", t)
    back = load_output(tmp_path, f)
    pd.testing.assert_frame_equal(back.x, t.x)
    assert back.y.tolist() == [0, 1, 0] and back.y.name == "y" and back.ids.name == "uid"
    with np.load(tmp_path / f, allow_pickle=False) as z:  # plain arrays only
        assert set(z.files) >= {"ids", "x", "y"}
    m = save_output(tmp_path, "model", {"coef": np.arange(3.0), "history": {"loss": [1.0, 0.5]}})
    assert load_output(tmp_path, m)["history"]["loss"] == [1.0, 0.5]
    with pytest.raises(DataError):
        t.take(["u9"])
