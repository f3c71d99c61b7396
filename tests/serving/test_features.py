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


def test_host_metrics_endpoint(lr_run, host_for):
    import httpx

    from atoll import wire
    from atoll.serving.metrics import serve_metrics

    host = host_for(lr_run, "host_0")
    host.answer("guest", wire.dumps({"session": "s1", "version": "v1", "level": "plain-partial",
                                     "ids": [str(lr_run["predict"].index[0])]}))
    host.answer("guest", b"junk")
    server = serve_metrics(host.metrics, "127.0.0.1:0")
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_address[1]}/metrics").text
        assert 'outcome="ok"} 1' in text and 'outcome="bad_request"} 1' in text
        assert "atoll_serving_latency_seconds_count 2" in text
    finally:
        server.shutdown()
