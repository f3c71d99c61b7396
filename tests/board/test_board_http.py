"""The board over HTTP against two real nodes: the page, its headers, who may see and do what,
the DAG view and its live stream, the report's plots."""

from __future__ import annotations

import json

import httpx
import pytest

from boardfed import job_text

pytestmark = pytest.mark.timeout(300)

BOARD_ROUTES = ["/board/jobs", "/board/partners", "/jobs/{job}/dag", "/jobs/{job}/stream",
                "/jobs/{job}/plots/roc_evaluate_guest.png", "/jobs/{job}/steps/train"]


def test_page_and_assets_carry_a_strict_policy_and_no_data(board_fed):
    url = board_fed["bank"].url
    page = httpx.get(url + "/board/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp  # no inline script, nothing from elsewhere
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    assert "<script src=\"/board/static/board.js\"" in page.text and "bank" not in page.text
    js = httpx.get(url + "/board/static/board.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in js.text.replace("nothing here assigns innerHTML", "")
    for bad in ("/board/static/index.html", "/board/static/..%2Fviews.py", "/board/static/%2E%2E/routes.py"):
        assert httpx.get(url + bad).status_code == 404, bad
    api = httpx.get(url + "/api/v1/health")
    assert api.headers["content-security-policy"] == csp and api.headers["cache-control"] == "no-store"
    assert httpx.get(url + "/board", follow_redirects=False).headers["location"] == "/board/"


def test_no_board_data_without_this_nodes_token(board_fed, done_job):
    bank, shop = board_fed["bank"], board_fed["shop"]
    for route in BOARD_ROUTES:
        path = "/api/v1" + route.format(job=done_job["id"])
        assert httpx.get(bank.url + path).status_code == 401, path
        # shop's own admin token is not a token of bank: bank's board refuses it
        r = httpx.get(bank.url + path, headers={"Authorization": f"Bearer {shop.tokens['admin']}"})
        assert r.status_code == 401 and "wrong or revoked token" in r.json()["detail"], path
        r = httpx.get(bank.url + path, headers={"Authorization": f"Bearer {bank.tokens['admin']}"})
        assert r.status_code == 200, (path, r.text)


def test_a_viewer_reads_but_cannot_decide_or_change(board_fed):
    bank, shop = board_fed["bank"], board_fed["shop"]
    viewer = shop.client("viewer")
    assert viewer.get("/auth/whoami") == {"user": "vera", "role": "viewer", "node": "shop"}
    j = bank.client().post("/jobs", {"job_text": job_text("viewer_cannot_approve")})
    board_fed.pending_at("shop", j["id"])
    from atoll.node.client import NodeError

    for path, body in ((f"/jobs/{j['id']}/approve", {}), (f"/jobs/{j['id']}/reject", {"reason": "x"}),
                       ("/jobs", {"job_text": job_text("x")}), ("/grants", {"dataset": "purchases", "grantee": "bank"}),
                       ("/data", {"name": "n", "path": "/etc/hostname", "id": "id"}),
                       ("/users", {"name": "eve", "role": "admin"}), (f"/jobs/{j['id']}/cancel", {})):
        with pytest.raises(NodeError) as e:
            viewer.post(path, body)
        assert e.value.status == 403 and ("is a viewer" in str(e.value) or "not an admin" in str(e.value)), path
    assert viewer.get(f"/jobs/{j['id']}")["state"] == "pending"  # nothing happened
    assert any(a["id"] == j["id"] for a in viewer.get("/approvals"))
    shop.client().post(f"/jobs/{j['id']}/reject", {"reason": "tidy up"})
    assert board_fed.ended("bank", j["id"])["state"] == "rejected"


def _sse(org, job_id: str, timeout: float = 60) -> list[tuple[str, object]]:
    out = []
    with httpx.stream("GET", f"{org.url}/api/v1/jobs/{job_id}/stream",
                      headers={"Authorization": f"Bearer {org.tokens['admin']}"}, timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert "content-security-policy" in r.headers
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))
                if event == "end":
                    break
    return out


def test_dag_stream_and_plots_of_a_finished_job(board_fed, done_job):
    bank = board_fed["bank"]
    events = _sse(bank, done_job["id"])
    assert [e for e, _ in events][-1] == "end"
    dag = [d for e, d in events if e == "dag"][-1]
    assert dag["job"]["state"] == "done" and dag["ended"]
    assert [s["id"] for s in dag["steps"]] == ["read", "align", "split", "scale", "train", "predict", "evaluate"]
    assert [s["wave"] for s in dag["steps"]] == [0, 1, 2, 3, 4, 5, 6]
    assert all(t["state"] == "done" for s in dag["steps"] for t in s["tasks"].values())
    assert set(dag["steps"][0]["tasks"]) == {"guest", "host_0"}
    assert dag["data"] == {"guest": {"registered": "credit"}, "host_0": {"registered": "purchases"}}
    logs = [line for e, d in events if e == "log" for line in d]
    assert logs and all(set(x) == {"id", "t", "level", "message"} for x in logs)
    report = bank.client().get(f"/jobs/{done_job['id']}/report")["report"]
    plots = [p.removeprefix("plots/") for p in report["plots"]]
    assert "roc_evaluate_guest.png" in plots and "ks_evaluate_guest.png" in plots
    # the node's report holds its own party's model part only, from the same view as the step page
    (model,) = report["models"]
    assert set(model["parts"]) == {"guest"} and len(model["parts"]["guest"]["weights"]) == 13
    assert [(w["kind"], w["parties"]) for w in report["warnings"]] == [("not_converged", ["guest"])]
    png = httpx.get(f"{bank.url}/api/v1/jobs/{done_job['id']}/plots/roc_evaluate_guest.png",
                    headers={"Authorization": f"Bearer {bank.tokens['admin']}"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    for name in ("nope.png", "..%2Fnode.db", "roc_evaluate_guest.svg"):
        r = httpx.get(f"{bank.url}/api/v1/jobs/{done_job['id']}/plots/{name}",
                      headers={"Authorization": f"Bearer {bank.tokens['admin']}"})
        assert r.status_code == 404, name
    # the host's node streams its own party's view of the same job
    shop_dag = [d for e, d in _sse(board_fed["shop"], done_job["id"]) if e == "dag"][-1]
    assert shop_dag["job"]["own_party"] == "host_0" and shop_dag["job"]["state"] == "done"


def test_job_list_filters(board_fed, done_job):
    c = board_fed["bank"].client()
    rows = c.get("/board/jobs")
    mine = next(r for r in rows if r["id"] == done_job["id"])
    assert mine["nodes"] == ["bank", "shop"] and "hetero_lr" in mine["components"]
    assert done_job["id"] in {r["id"] for r in c.get("/board/jobs", params={"component": "hetero_lr"})}
    assert done_job["id"] not in {r["id"] for r in c.get("/board/jobs", params={"component": "secureboost"})}
    assert done_job["id"] in {r["id"] for r in c.get("/board/jobs", params={"partner": "shop", "state": "done"})}
    assert c.get("/board/jobs", params={"partner": "nobody"}) == []
    assert done_job["id"] not in {r["id"] for r in c.get("/board/jobs", params={"since": done_job["created"] + 1})}
    partners = c.get("/board/partners")
    assert [p["name"] for p in partners] == ["shop"] and partners[0]["days_left"] > 300
    assert partners[0]["warning"] == ""


def test_an_unknown_job_is_404_before_any_stream(board_fed):
    r = httpx.get(f"{board_fed['bank'].url}/api/v1/jobs/nope-123/stream",
                  headers={"Authorization": f"Bearer {board_fed['bank'].tokens['admin']}"})
    assert r.status_code == 404 and "no job" in r.json()["detail"]


def test_atoll_user_add_makes_a_viewer_whose_token_reads(board_fed):
    from typer.testing import CliRunner

    from atoll.cli import app

    bank = board_fed["bank"]
    r = CliRunner().invoke(app, ["user", "add", "olga", "--role", "viewer", "--node", bank.url,
                                 "--token", bank.tokens["admin"]])
    assert r.exit_code == 0, r.output
    token = r.output.strip().splitlines()[-1]
    assert "user 'olga' (viewer) made" in r.output and token.startswith("atoll-")
    who = httpx.get(bank.url + "/api/v1/auth/whoami", headers={"Authorization": f"Bearer {token}"}).json()
    assert who == {"user": "olga", "role": "viewer", "node": "bank"}
    r = CliRunner().invoke(app, ["user", "list", "--node", bank.url, "--token", token])
    assert r.exit_code == 1 and "not an admin" in r.output
    r = CliRunner().invoke(app, ["user", "list", "--node", bank.url, "--token", bank.tokens["admin"]])
    assert "olga" in r.output and "viewer" in r.output and "admin" in r.output


def test_a_long_log_streams_its_tail_in_bounded_messages(board_fed):
    from atoll.board.routes import LOG_LINES, LOG_TAIL
    from atoll.node.store import LogLine

    bank, shop = board_fed["bank"], board_fed["shop"]
    j = bank.client().post("/jobs", {"job_text": job_text("long_log")})
    board_fed.pending_at("shop", j["id"])
    shop.client().post(f"/jobs/{j['id']}/reject", {"reason": "only its log matters"})
    board_fed.ended("bank", j["id"])
    with bank.node.db.session.begin() as s:  # a chatty party: 5,000 lines (what a long job's log holds)
        s.add_all([LogLine(run_id=j["id"], party="guest", t=1.0 + i, level="INFO", message=f"line {i}")
                   for i in range(5000)])
    events = _sse(bank, j["id"])
    chunks = [d for e, d in events if e == "log"]
    lines = [x["message"] for c in chunks for x in c]
    assert lines == [f"line {i}" for i in range(5000 - LOG_TAIL, 5000)]  # the tail, in order, nothing twice
    assert max(len(c) for c in chunks) <= LOG_LINES
    assert events[-1][0] == "end"


def test_each_node_shows_its_own_model_part_and_the_convergence_warning(board_fed, done_job):
    bank = board_fed["bank"].client().get(f"/jobs/{done_job['id']}/steps/train")
    shop = board_fed["shop"].client().get(f"/jobs/{done_job['id']}/steps/train")
    assert bank["done"] and "model" in bank["outputs"] and bank["seconds"] > 0
    assert bank["model"]["role"] == "guest" and len(bank["model"]["weights"]) == 13  # the guest's 13 columns
    assert shop["model"]["role"] == "host" and len(shop["model"]["weights"]) == 10   # the host's 10, at shop only
    assert bank["model"]["weight_kind"] == "coefficient" and "intercept" in bank["model"]["facts"]
    assert bank["model"]["facts"]["n_iter"] == 2 and bank["model"]["facts"]["converged"] is False
    assert bank["model"]["warnings"] and "did not converge in 2 iterations" in bank["model"]["warnings"][0]
    read = board_fed["bank"].client().get(f"/jobs/{done_job['id']}/steps/read")
    assert read["done"] and read["model"] is None
    from atoll.node.client import NodeError

    with pytest.raises(NodeError) as e:
        board_fed["bank"].client().get(f"/jobs/{done_job['id']}/steps/nope")
    assert e.value.status == 404
