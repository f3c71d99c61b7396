"""The guest's HTTP predict API: scores, errors with their status, metrics, admin calls behind a token."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from atoll.serving.features import TableSource
from atoll.serving.http import make_app


def test_predict_api_scores_errors_metrics_and_admin(lr_run, lr_run_v2, serving):
    guest = serving(lr_run, ["host_0", "host_1"], versions={"v1": lr_run, "v2": lr_run_v2})
    c = TestClient(make_app(guest, admin_token="t0ken"))
    ids = [int(i) for i in lr_run["predict"].index[:10]]
    want = lr_run["predict"].loc[ids, "score"].to_numpy()
    r = c.post("/api/v1/predict", json={"ids": ids})
    assert r.status_code == 200
    body = r.json()
    np.testing.assert_allclose(body["scores"], want, atol=1e-12)
    assert body["level"] == "plain-partial" and body["versions"] == ["v1"] * 10 and "v1" in body["sha256"]
    g = TableSource.from_file(lr_run["files"]["guest"]).lookup([str(i) for i in ids[:2]])
    r = c.post("/api/v1/predict", json={"ids": ids[:2], "features": {k: g[k].tolist() for k in g.columns}})
    np.testing.assert_allclose(r.json()["scores"], want[:2], atol=1e-12)
    r = c.post("/api/v1/predict", json={"ids": ["nobody"]})
    assert r.status_code == 404 and r.json()["error"] == "unknown_id"
    assert c.post("/api/v1/predict", json={"ids": []}).status_code == 422
    assert c.post("/api/v1/predict", content=b"not json").status_code == 422
    r = c.post("/api/v1/predict", json={"ids": ids[:2], "features": {"x0": [1.0]}})
    assert r.status_code == 422 and r.json()["error"] == "bad_request"
    m = c.get("/metrics").text
    assert 'atoll_serving_requests_total{outcome="ok"} 2' in m and "atoll_serving_latency_seconds_bucket" in m
    # admin calls need the token; publish, canary, rollback
    assert c.post("/api/v1/publish", json={"version": "v2"}).status_code == 403
    auth = {"Authorization": "Bearer t0ken"}
    assert c.post("/api/v1/canary", json={"version": "v2", "fraction": 0.5}, headers=auth).status_code == 409
    assert c.post("/api/v1/publish", json={"version": "v2"}, headers=auth).status_code == 200
    r = c.post("/api/v1/canary", json={"version": "v2", "fraction": 0.5}, headers=auth)
    assert r.json()["routes"]["canary"] == "v2"
    assert set(c.post("/api/v1/predict", json={"ids": ids}).json()["versions"]) == {"v1", "v2"}
    assert c.post("/api/v1/rollback", headers=auth).json()["routes"]["canary"] is None
    assert c.post("/api/v1/predict", json={"ids": ids}).json()["versions"] == ["v1"] * 10
    assert c.get("/api/v1/status").json()["hosts"]["host_0"][0]["healthy"] is True


def test_grpc_predict_api_over_mtls(lr_run, serving, tls_of):
    import pytest

    from atoll.serving.grpc_api import PredictClient, serve_predict
    from atoll.serving.protocol import ServingError

    guest = serving(lr_run, ["host_0", "host_1"])
    server, port = serve_predict(guest, "127.0.0.1:0", tls_of("guest"), clients=["host_1"])
    ok, stranger = PredictClient(f"127.0.0.1:{port}", tls_of("host_1")), PredictClient(f"127.0.0.1:{port}", tls_of("mallory"))
    try:
        ids = [int(i) for i in lr_run["predict"].index[:8]]
        ans = ok.predict(ids)
        np.testing.assert_allclose(ans["scores"], lr_run["predict"].loc[ids, "score"].to_numpy(), atol=1e-12)
        assert ans["level"] == "plain-partial" and ans["versions"] == ["v1"] * 8
        g = TableSource.from_file(lr_run["files"]["guest"]).lookup([str(i) for i in ids[:1]])
        one = ok.predict(ids[:1], {k: g[k].to_numpy() for k in g.columns})
        np.testing.assert_allclose(one["scores"], ans["scores"][:1], atol=1e-12)
        with pytest.raises(ServingError) as e:
            ok.predict(["nobody"])
        assert e.value.category == "unknown_id"
        with pytest.raises(Exception, match="PERMISSION_DENIED|not a client"):
            stranger.predict(ids[:1])
    finally:
        ok.close()
        stranger.close()
        server.stop(0)
