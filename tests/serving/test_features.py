"""Feature sources: CSV in memory and SQL through SQLAlchemy give the same rows; unknown ids say only how many."""

import pandas as pd
import pytest
import sqlalchemy as sa

from atoll.serving.features import SqlSource, TableSource, UnknownIds, open_source


def test_sql_source_matches_csv_and_is_parameterised(lr_run, tmp_path):
    csv = TableSource.from_file(lr_run["files"]["host_0"])
    db = tmp_path / "f.db"
    eng = sa.create_engine(f"sqlite:///{db}")
    csv.frame.reset_index().to_sql("features", eng, index=False)
    sql = open_source({"url": f"sqlite:///{db}", "table": "features", "id": "id"})
    ids = list(csv.frame.index[[5, 1, 9]])
    pd.testing.assert_frame_equal(sql.lookup(ids).astype(float), csv.lookup(ids).astype(float), check_names=False)
    with pytest.raises(UnknownIds) as e:
        sql.lookup([ids[0], "1' OR '1'='1"])
    assert e.value.missing == 1 and "OR" not in str(e.value)
    with pytest.raises(Exception, match="identifier"):
        SqlSource(f"sqlite:///{db}", "features; DROP TABLE features", "id")
