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
    # an exposure column travels with the rows it belongs to (take, rows, with_x, save/load)
    t = Table(t.x, t.y, pd.Series([1.0, 2.5, 0.5], index=idx, name="years"))
    assert t.take(["u3", "u1"]).exposure.tolist() == [0.5, 1.0] and t.rows([1]).exposure.tolist() == [2.5]
    assert t.with_x(t.x * 2).exposure.equals(t.exposure)
    back = load_output(tmp_path, save_output(tmp_path, "withexp", t))
    pd.testing.assert_series_equal(back.exposure, t.exposure)
    with pytest.raises(DataError):
        Table(t.x, None, pd.Series([1.0, 2.0, 3.0], index=["a", "b", "c"]))
    m = save_output(tmp_path, "model", {"coef": np.arange(3.0), "history": {"loss": [1.0, 0.5]}})
    assert load_output(tmp_path, m)["history"]["loss"] == [1.0, 0.5]
    with pytest.raises(DataError):
        t.take(["u9"])


def test_parquet_header_and_saved_index(tmp_path):
    """Load-time checks read only the Parquet schema; a saved pandas index reads as a column."""
    from atoll.jobs.components.reader import _columns, _read

    pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4]}, index=pd.Index([7, 8], name="uid")).to_parquet(tmp_path / "i.parquet")
    pd.DataFrame({"a": [1.0], "uid": [5]}).to_parquet(tmp_path / "n.parquet", index=False)
    assert _columns(tmp_path / "i.parquet", "parquet") == ["uid", "a", "b"]
    assert list(_read(tmp_path / "i.parquet", "parquet").columns) == ["uid", "a", "b"]
    assert _columns(tmp_path / "n.parquet", "parquet") == ["a", "uid"]
    assert list(_read(tmp_path / "n.parquet", "parquet").columns) == ["a", "uid"]
