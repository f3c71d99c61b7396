"""Three nodes (bank = guest, shop = host, arbiter) as separate OS processes, each with its own
store, certificate and data folder, on 127.0.0.1: the README walkthrough run verbatim, the
result equal to ``atoll run``, every refusal with its message and no task started, cancel, a
node started late, a node killed mid-job and restarted.

The nodes are shared by the whole module (starting three nodes takes ~10 s on a loaded
2-core machine); the jobs that run use 600 rows, and 1024-bit keys except the walkthrough's.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml

from harness import (README_PORTS, ROOT, Terminal, env_for, free_ports, map_ports, start_node, stop_node,
                     wait_for, walkthrough_blocks)

pytestmark = pytest.mark.timeout(900)
NODES = ("bank", "shop", "arbiter")


class Federation:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.env = env_for(tmp)
        self.ports = dict(zip(README_PORTS, free_ports(len(README_PORTS))))
        self.terminals = {n: Terminal(n, tmp, self.env) for n in NODES}
        self.job_id: str | None = None
        self.outputs: list[tuple[str, str, int, str]] = []

    def api(self, node: str) -> str:
        return f"http://127.0.0.1:{self.ports[8001 + NODES.index(node)]}"

    def fed(self, node: str) -> str:
        return f"127.0.0.1:{self.ports[7001 + NODES.index(node)]}"

    def client(self, node: str, token: str | None = None):
        import os

        from atoll.node.client import NodeClient

        os.environ["ATOLL_CREDENTIALS"] = self.env["ATOLL_CREDENTIALS"]
        return NodeClient(self.api(node), token)

    def close(self) -> None:
        for n in NODES:
            stop_node(self.tmp / n)
        for t in self.terminals.values():
            t.close()


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("orgs")
    (tmp / "examples" / "nodes").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "nodes" / "credit_scoring.yaml", tmp / "examples" / "nodes")
    f = Federation(tmp)
    try:
        for terminal, commands in walkthrough_blocks():
            for command in commands:
                rc, out = f.terminals[terminal].run(map_ports(command, f.ports))
                f.outputs.append((terminal, command, rc, out))
                if rc != 0:
                    logs = "\n".join((tmp / n / "node.log").read_text()[-3000:] for n in NODES
                                     if (tmp / n / "node.log").exists())
                    pytest.fail(f"[{terminal}] {command!r} exited {rc}:\n{out}\n--- node logs ---\n{logs}")
        f.job_id = f.terminals["bank"].run("echo $JOB")[1].strip()
        yield f
    finally:
        f.close()


def _output(fed, terminal: str, startswith: str) -> str:
    return next(o for t, c, rc, o in fed.outputs if t == terminal and c.startswith(startswith))


def test_readme_walkthrough_runs_the_job_across_three_nodes(fed):
    assert len(walkthrough_blocks()) >= 10
    status = _output(fed, "bank", "atoll job status $JOB --wait")
    assert f"job {fed.job_id} (credit_scoring_hetero_lr): done" in status
    assert "metrics evaluate@guest:" in status and "auc=" in status
    for party in ("guest", "host_0", "arbiter"):
        assert all(f"{party:<8} {step}" in status for step in ("read", "train", "evaluate"))
    assert "credit_scoring_hetero_lr.train v1  party=guest" in _output(fed, "bank", "atoll model list")
    assert "audit chain OK" in _output(fed, "bank", "atoll audit verify --partners")
    for n in ("shop", "arbiter"):  # every node's chain verifies, with the heads the others hold
        rc, out = fed.terminals[n].run("atoll audit verify --partners")
        assert rc == 0 and "audit chain OK" in out, out
    # the audit trail: one event id shared by the proposal's records at bank and at shop
    bank = fed.client("bank").get("/audit", params={"job_id": fed.job_id})
    shop = fed.client("shop").get("/audit", params={"job_id": fed.job_id})
    created = next(r for r in bank if r["kind"] == "proposal.created")
    received = next(r for r in shop if r["kind"] == "proposal.received")
    assert created["event_id"] == received["event_id"]
    kinds = {r["kind"] for r in shop}
    assert {"grant.used", "task.started", "task.finished", "audit.head_received", "job.finished"} <= kinds
    used = [r["body"] for r in shop if r["kind"] == "grant.used"]
    assert {u["component"] for u in used} == {"reader", "psi", "split", "scale", "hetero_lr", "predict", "evaluate"}
    assert all(u["dataset"] == "purchases" and u["version"] == 1 for u in used)
    finished = next(r["body"] for r in shop if r["kind"] == "task.finished")
    assert finished["bytes_sent"]["bank"] > 0 and finished["bytes_sent"]["arbiter"] > 0


def _node_outputs(fed, node: str, party: str, step: str):
    from atoll.node.store import Database, SqlRunStore

    db = Database(f"sqlite:///{fed.tmp / node / 'node.db'}")
    try:
        out = SqlRunStore(db, fed.job_id, fed.tmp / node / "work").party(party).outputs(step)
        return {k: out[k] for k in out}
    finally:
        db.close()


def _assert_same(a, b, path="") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)) and a and isinstance(a[0], str):
        assert list(a) == list(b), path
    elif isinstance(a, (list, tuple)) and a and not isinstance(a[0], (int, float)):
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, (np.ndarray, list, tuple, float)) and not isinstance(a, str):
        np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-9, atol=1e-12,
                                   err_msg=path)
    else:
        assert a == b, path


def test_model_and_metrics_equal_atoll_run(fed, tmp_path):
    from atoll.jobs import run_job

    raw = yaml.safe_load((ROOT / "examples" / "nodes" / "credit_scoring.yaml").read_text())
    raw["parties"]["guest"] = {"role": "guest", "data": {"path": str(fed.tmp / "bank" / "credit.csv"), "id": "id",
                                                         "label": "y"}}
    raw["parties"]["host_0"] = {"role": "host", "data": {"path": str(fed.tmp / "shop" / "purchases.csv"), "id": "id"}}
    raw["parties"]["arbiter"] = {"role": "arbiter"}
    job = tmp_path / "local.yaml"
    job.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = run_job(job, run_dir=tmp_path / "run", mode="threads", data_dirs=[fed.tmp])  # the nodes' files
    from atoll.jobs.store import RunFolder

    local = RunFolder(result.run_dir)
    for node, party in (("bank", "guest"), ("shop", "host_0")):
        _assert_same(_node_outputs(fed, node, party, "train")["model"], dict(local.party(party).outputs("train"))["model"])
    node_metrics = _node_outputs(fed, "bank", "guest", "evaluate")["metrics"]["metrics"]
    local_metrics = local.party("guest").outputs("evaluate")["metrics"]["metrics"]
    for k in ("auc", "ks", "accuracy", "log_loss"):
        assert node_metrics[k] == pytest.approx(local_metrics[k], rel=1e-9), k


# ====================================================================== refusals
def _job(name: str, host_data: str = "purchases", **train) -> str:
    raw = yaml.safe_load((ROOT / "examples" / "nodes" / "credit_scoring.yaml").read_text())
    raw["name"] = name
    raw["parties"]["host_0"]["data"] = {"registered": host_data}
    params = raw["pipeline"][4]["params"]
    params.update({"key_bits": 1024, "max_iter": 1, **train})
    return yaml.safe_dump(raw, sort_keys=False)


def _ended(fed, job_id: str, node: str = "bank", timeout: float = 60) -> dict:
    c = fed.client(node)
    return wait_for(lambda: (j := c.get(f"/jobs/{job_id}"))["state"] in ("rejected", "failed", "done", "cancelled")
                    and j, timeout, f"job {job_id} ending at {node}")


def _no_task_started(fed, job_id: str) -> None:
    for n in NODES:
        try:
            j = fed.client(n).get(f"/jobs/{job_id}")
        except Exception:  # noqa: BLE001 - a node that never recorded the job ran nothing for it
            continue
        assert j["tasks"] == [], (n, j["tasks"])
        assert fed.client(n).get(f"/jobs/{job_id}/report")["report"] is None


@pytest.fixture(scope="module")
def shop_sets(fed):
    """Data sets at shop with grants that each fail one check."""
    shop = fed.client("shop")
    path = str(fed.tmp / "shop" / "purchases.csv")
    for name in ("nogrant", "expired", "usedup", "revoked", "forged", "bounded", "bankonly"):
        shop.post("/data", {"name": name, "path": path, "id": "id"})
    shop.post("/grants", {"dataset": "expired", "grantee": "bank", "expires": time.time() - 5})
    g = shop.post("/grants", {"dataset": "usedup", "grantee": "bank", "max_uses": 1})
    shop.post("/grants", {"dataset": "bounded", "grantee": "bank",
                          "bounds": {"hetero_lr": {"key_bits": {"min": 2048}}}})
    shop.post("/grants", {"dataset": "bankonly", "grantee": "bank", "components": ["reader", "psi"]})
    r = shop.post("/grants", {"dataset": "revoked", "grantee": "bank"})
    shop.post(f"/grants/{r['id']}/revoke")
    f = shop.post("/grants", {"dataset": "forged", "grantee": "bank", "max_uses": 1})
    from atoll.node.store import Database, Grant, GrantUse

    db = Database(f"sqlite:///{fed.tmp / 'shop' / 'node.db'}")
    with db.session.begin() as s:  # an insider widens a grant in the database; a use of 'usedup' elsewhere
        row = s.get(Grant, f["id"])
        row.body = {**row.body, "max_uses": None}
        s.add(GrantUse(grant_id=g["id"], job_id="earlier-job", step="read", component="reader",
                       dataset_version=1, sha256="x", t=time.time()))
    db.close()
    return shop


@pytest.mark.parametrize("dataset, expect, params", [
    ("nogrant", "has no grant", {}),
    ("expired", "expired", {}),
    ("usedup", "used up (1 of 1 jobs)", {}),
    ("revoked", "was revoked", {}),
    ("forged", "signature does not verify", {}),
    ("bounded", "key_bits = 1024 is outside the grant's bounds", {}),
    ("bankonly", "does not allow component 'split'", {}),
    ("unknown_set", "has no data set 'unknown_set' registered", {}),
])
def test_partner_refuses_and_no_task_starts(fed, shop_sets, dataset, expect, params):
    j = fed.client("bank").post("/jobs", {"job_text": _job(f"refused_{dataset}", dataset, **params)})
    end = _ended(fed, j["id"])
    assert end["state"] == "rejected" and "node 'shop'" in end["message"] and expect in end["message"], end
    assert fed.client("shop").get(f"/jobs/{j['id']}")["state"] == "rejected"
    _no_task_started(fed, j["id"])


@pytest.mark.parametrize("mutate, expect", [
    (lambda raw: raw.__setitem__("plugins", ["os"]), "names plugins"),
    (lambda raw: raw["pipeline"][4].__setitem__("component", "evil_lr"), "not one of the components installed"),
    (lambda raw: raw["pipeline"][4]["params"].__setitem__("max_iter", 50), "max_iter = 50 is outside"),
    (lambda raw: raw["parties"]["host_0"].__setitem__("node", "mallory"), "not partners of 'bank'"),
    (lambda raw: raw["parties"]["guest"].__setitem__("data", {"path": "/etc/passwd"}), "registered name"),
    (lambda raw: raw["parties"]["host_0"].pop("node"), "names no node"),
])
def test_initiator_refuses_at_submit(fed, mutate, expect):
    from atoll.node.client import NodeError

    raw = yaml.safe_load(_job("bad"))
    mutate(raw)
    before = len(fed.client("bank").get("/jobs"))
    with pytest.raises(NodeError, match=expect) as e:
        fed.client("bank").post("/jobs", {"job_text": yaml.safe_dump(raw)})
    assert e.value.status == 403
    assert len(fed.client("bank").get("/jobs")) == before  # nothing proposed


def test_rejected_proposal_ends_the_job_everywhere(fed):
    j = fed.client("bank").post("/jobs", {"job_text": _job("to_reject")})
    wait_for(lambda: fed.client("shop").get("/jobs", params={"state": "pending"}), 30, "proposal at shop")
    fed.client("shop").post(f"/jobs/{j['id']}/reject", {"reason": "not this quarter"})
    end = _ended(fed, j["id"])
    assert end["state"] == "rejected" and "not this quarter" in end["message"]
    wait_for(lambda: fed.client("arbiter").get(f"/jobs/{j['id']}")["state"] == "rejected", 30, "arbiter told")
    _no_task_started(fed, j["id"])


def test_rest_needs_a_valid_token(fed):
    import httpx

    url = fed.api("bank") + "/api/v1/jobs"
    r = httpx.get(url)
    assert r.status_code == 401 and "no token" in r.json()["detail"]
    r = httpx.get(url, headers={"Authorization": "Bearer atoll-not-a-token"})
    assert r.status_code == 401 and "wrong or revoked token" in r.json()["detail"]
    r = httpx.post(fed.api("bank") + "/api/v1/auth/bootstrap", json={"token": "atoll-bootstrap-guess"})
    assert r.status_code == 403 and "already used" in r.json()["detail"]
    assert httpx.get(fed.api("bank") + "/api/v1/health").json()["ok"]
    spec = httpx.get(fed.api("bank") + "/openapi.json").json()
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/audit/verify", "/api/v1/models"} <= set(spec["paths"])


# ---------------------------------------------------------------------- crafted control messages
def _impersonate(fed, who: str, peer: str, cert_dir: Path | None = None):
    """A control client speaking as ``who`` with its own files (the test is its operator)."""
    from atoll.node.config import NodeConfig
    from atoll.node.control import ControlClient

    cfg = NodeConfig.load(fed.tmp / who / "node.yaml")
    tls = cfg.tls()
    creds = grpc.ssl_channel_credentials(tls.ca_cert, tls.key, tls.cert)
    ch = grpc.secure_channel(fed.fed(peer), creds, options=[("grpc.ssl_target_name_override", peer)])
    return ControlClient(cfg, cfg.signer(), lambda _: ch), ch


def _proposal(fed, job_text: str, job_id: str):
    import secrets

    from atoll.node.config import NodeConfig
    from atoll.node.policy import nodes_of
    from atoll.node.signing import PROPOSAL

    raw = yaml.safe_load(job_text)
    parties = {p: {"node": n, "role": r} for p, (n, r) in nodes_of(raw).items()}
    proposal = {"job_id": job_id, "name": raw["name"], "initiator": "bank", "job_text": job_text, "parties": parties,
                "created": time.time(), "nonce": secrets.token_hex(16), "atoll": "0.1.0"}
    signer = NodeConfig.load(fed.tmp / "bank" / "node.yaml").signer()
    return {"proposal": proposal, "signature": signer.sign_doc(PROPOSAL, proposal)}


def test_partner_refuses_plugins_and_unknown_components_sent_to_it(fed):
    client, ch = _impersonate(fed, "bank", "shop")
    raw = yaml.safe_load(_job("crafted"))
    raw["plugins"] = ["atoll_evil"]
    reply = client.call("shop", "propose", _proposal(fed, yaml.safe_dump(raw), "crafted-plugin-1"))
    assert reply["decision"] == "rejected" and "names plugins" in reply["reason"]
    raw.pop("plugins")
    raw["pipeline"][4]["component"] = "evil_lr"
    reply = client.call("shop", "propose", _proposal(fed, yaml.safe_dump(raw), "crafted-unknown-1"))
    assert reply["decision"] == "rejected" and "not one of the components installed" in reply["reason"]
    ch.close()
    for job_id in ("crafted-plugin-1", "crafted-unknown-1"):
        j = fed.client("shop").get(f"/jobs/{job_id}")
        assert j["state"] == "rejected" and j["tasks"] == []


def test_replayed_messages_and_proposals_are_refused(fed):
    from atoll.node.control import Refused

    client, ch = _impersonate(fed, "bank", "shop")
    body = _proposal(fed, _job("replay"), "replay-job-1")
    envelope = client.envelope("shop", "propose", body)
    assert client.send_raw("shop", envelope)["decision"] == "pending"
    with pytest.raises(Refused, match="replayed message"):
        client.send_raw("shop", envelope)               # the same bytes again
    other = _proposal(fed, _job("replay", max_iter=9), "replay-job-1")
    with pytest.raises(Refused, match="replayed proposal"):
        client.call("shop", "propose", other)           # a known job id with other content
    stale = _proposal(fed, _job("stale"), "stale-job-1")
    stale["proposal"]["created"] -= 7200
    from atoll.node.config import NodeConfig
    from atoll.node.signing import PROPOSAL

    stale["signature"] = NodeConfig.load(fed.tmp / "bank" / "node.yaml").signer().sign_doc(PROPOSAL, stale["proposal"])
    with pytest.raises(Refused, match="older than the job timeout"):
        client.call("shop", "propose", stale)
    forged = _proposal(fed, _job("forged"), "forged-job-1")
    forged["proposal"]["job_text"] += "\n# changed after signing\n"
    with pytest.raises(Refused, match="signature does not verify"):
        client.call("shop", "propose", forged)
    ch.close()
    # arbiter may not pass bank's proposal off as its own message
    client, ch = _impersonate(fed, "arbiter", "shop")
    with pytest.raises(Refused, match="only the initiator proposes"):
        client.call("shop", "propose", _proposal(fed, _job("relay"), "relay-job-1"))
    ch.close()


def test_a_node_not_in_the_config_is_refused(fed, tmp_path):
    from atoll.node.config import add_partner, init_node
    from atoll.node.control import Refused

    init_node("mallory", tmp_path / "mallory", "127.0.0.1:1", ca=fed.tmp / "ca")
    add_partner(tmp_path / "mallory" / "node.yaml", fed.tmp / "shop" / "card.yaml", fed.fed("shop"))
    fed.tmp.joinpath("mallory").symlink_to(tmp_path / "mallory")
    try:
        client, ch = _impersonate(fed, "mallory", "shop")
        with pytest.raises(Refused, match="'mallory' is not a partner of node 'shop'"):
            client.call("shop", "propose", _proposal(fed, _job("m"), "mallory-job-1"))
        ch.close()
    finally:
        fed.tmp.joinpath("mallory").unlink()
    assert not any(j["id"] == "mallory-job-1" for j in fed.client("shop").get("/jobs"))


# ====================================================================== life cycle
def _approve(fed, job_id: str, nodes=("shop", "arbiter")) -> None:
    for n in nodes:
        c = fed.client(n)
        c.wait_up(90)
        wait_for(lambda: any(j["id"] == job_id for j in c.get("/jobs", params={"state": "pending"})), 60,
                 f"proposal at {n}")
        c.post(f"/jobs/{job_id}/approve", {"reason": "ok"})


def _task(fed, job_id: str, party: str, step: str, node: str = "bank") -> str | None:
    t = [t for t in fed.client(node).get(f"/jobs/{job_id}")["tasks"] if t["party"] == party and t["step"] == step]
    return t[0]["state"] if t else None


def test_cancel_stops_every_partys_tasks(fed):
    j = fed.client("bank").post("/jobs", {"job_text": _job("to_cancel", max_iter=10, batch_size=32)})
    _approve(fed, j["id"])
    wait_for(lambda: _task(fed, j["id"], "host_0", "train") == "running", 120, "train running at shop")
    fed.client("bank").post(f"/jobs/{j['id']}/cancel")
    for n in NODES:
        wait_for(lambda: fed.client(n).get(f"/jobs/{j['id']}")["state"] == "cancelled", 30, f"cancelled at {n}")
        wait_for(lambda: j["id"] not in fed.client(n).get("/node")["running"], 30, f"worker stopped at {n}")
    shop_tasks = fed.client("shop").get(f"/jobs/{j['id']}")["tasks"]
    assert not any(t["state"] == "running" for t in shop_tasks), shop_tasks
    assert _task(fed, j["id"], "guest", "evaluate") is None


def test_late_node_is_waited_for_and_a_killed_node_restarts_into_the_job(fed):
    arbiter, shop = fed.tmp / "arbiter", fed.tmp / "shop"
    stop_node(arbiter)                                      # arbiter is not up when the job is submitted
    j = fed.client("bank").post("/jobs", {"job_text": _job("late_and_killed", max_iter=10, batch_size=16)})
    msg = wait_for(lambda: "waiting for node" in (m := fed.client("bank").get(f"/jobs/{j['id']}")["message"]) and m,
                   60, "waiting message")
    assert msg.startswith(f"waiting for node 'arbiter' at {fed.fed('arbiter')} (") and msg.endswith(
        "s); job timeout 30 min"), msg
    time.sleep(3)                                          # it keeps waiting (the test's stand-in for minutes)
    assert fed.client("bank").get(f"/jobs/{j['id']}")["state"] == "proposed"
    start_node(arbiter, fed.env)
    _approve(fed, j["id"])
    wait_for(lambda: _task(fed, j["id"], "host_0", "train") == "running", 120, "train running at shop")
    stop_node(shop, signal.SIGKILL)                         # shop's node dies mid-step
    t0 = time.monotonic()
    failed = wait_for(lambda: (x := fed.client("bank").get(f"/jobs/{j['id']}"))["state"] in ("failed", "done")
                      and x, 60, "bank noticing")
    assert failed["state"] == "failed" and time.monotonic() - t0 < 30 and "shop" in failed["message"], failed
    # the initiator sees the arbiter's task end: failed (its error's category and step, never its
    # text) or stopped because the job had failed
    import re

    t = wait_for(lambda: next((t for t in fed.client("bank").get(f"/jobs/{j['id']}")["tasks"]
                               if t["party"] == "arbiter" and t["step"] == "train"
                               and t["state"] in ("failed", "cancelled")), None), 30, "the arbiter's task end at bank")
    assert t["state"] == "cancelled" or re.fullmatch(r"[A-Za-z]+( \(peer '[A-Za-z0-9_.:-]+'\))? at step 'train'", t["error"]), t
    start_node(shop, fed.env)                               # shop restarts: the job resumes
    end = wait_for(lambda: (x := fed.client("bank").get(f"/jobs/{j['id']}"))["attempt"] == 2 and
                   x["state"] in ("done", "failed") and x, 240, "the resumed attempt ending")
    assert end["state"] == "done", end
    from atoll.node.store import Database, SqlRunStore

    db = Database(f"sqlite:///{fed.tmp / 'bank' / 'node.db'}")
    meta = SqlRunStore(db, j["id"], fed.tmp / "bank" / "work").meta()
    db.close()
    assert {"read", "align", "split", "scale"} <= set(meta["resumed_skip"]) and "train" not in meta["resumed_skip"]
    shop_audit = {r["kind"] for r in fed.client("shop").get("/audit", params={"job_id": j["id"]})}
    assert "job.interrupted" in shop_audit
    for n in NODES:
        assert fed.client(n).get("/audit/verify")["ok"]
