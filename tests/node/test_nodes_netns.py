"""Three nodes, each in its own network namespace with its own address (10.250.x.0/24, made
here and removed after), run a job across them: nothing relies on loopback. Needs root and
iproute2; skipped otherwise. A short pipeline (read + PSI) keeps it quick; the full job runs
in test_nodes.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
import yaml

from harness import env_for, wait_for

pytestmark = pytest.mark.timeout(600)
NODES = ("bank", "shop", "arbiter")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def namespaces():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = f"{os.getpid() % 10000}"
    subnet = 200 + os.getpid() % 50
    names = {n: f"atl{tag}{n[:2]}" for n in NODES}
    bridge = f"atlbr{tag}"
    made: list[str] = []
    try:
        if _ip("netns", "add", names["bank"], check=False).returncode != 0:
            pytest.skip("cannot create network namespaces here")
        made.append(names["bank"])
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"10.250.{subnet}.254/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        addrs = {}
        for i, n in enumerate(NODES, start=1):
            ns = names[n]
            if ns not in made:
                _ip("netns", "add", ns)
                made.append(ns)
            host_if, ns_if = f"atl{tag}h{i}", f"atl{tag}n{i}"
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _ip("link", "set", ns_if, "netns", ns)
            _ip("link", "set", host_if, "master", bridge)
            _ip("link", "set", host_if, "up")
            addrs[n] = f"10.250.{subnet}.{i}"
            _ip("-n", ns, "addr", "add", f"{addrs[n]}/24", "dev", ns_if)
            _ip("-n", ns, "link", "set", ns_if, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield names, addrs
    finally:
        for ns in made:
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", bridge, check=False)


def test_a_job_across_three_network_namespaces(namespaces, tmp_path):
    from atoll.federation.certs import init_certs
    from atoll.node.client import NodeClient
    from atoll.node.config import add_partner, init_node

    names, addrs = namespaces
    init_certs([], tmp_path / "ca")
    tokens = {}
    for n in NODES:
        _, tokens[n] = init_node(n, tmp_path / n, f"{addrs[n]}:7001", f"{addrs[n]}:8000", ca=tmp_path / "ca")
    for n in NODES:
        for m in NODES:
            if m != n:
                add_partner(tmp_path / n / "node.yaml", tmp_path / m / "card.yaml")
    env = env_for(tmp_path)
    procs = [subprocess.Popen(["ip", "netns", "exec", names[n], "atoll", "node", "start", "--config",
                               str(tmp_path / n / "node.yaml"), "--log", str(tmp_path / n / "node.log")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in NODES]
    try:
        c = {}
        for n in NODES:
            c[n] = NodeClient(f"http://{addrs[n]}:8000", token="none")
            c[n].wait_up(120)
            c[n].token = c[n].post("/auth/bootstrap", {"token": tokens[n]}, auth=False)["token"]
        import pandas as pd

        from atoll import datasets

        for n, part, name in (("bank", "guest", "credit"), ("shop", "host", "purchases")):
            f = tmp_path / n / f"{name}.csv"
            pd.read_csv(datasets.path("default_credit", "hetero", part)).head(300).to_csv(f, index=False)
            c[n].post("/data", {"name": name, "path": str(f), "id": "id", **({"label": "y"} if n == "bank" else {})})
            c[n].post("/grants", {"dataset": name, "grantee": "shop" if n == "bank" else "bank",
                                  "components": ["reader", "psi"]})
        job = {"name": "netns_psi", "seed": 1, "parties": {
            "guest": {"role": "guest", "node": "bank", "data": {"registered": "credit"}},
            "host_0": {"role": "host", "node": "shop", "data": {"registered": "purchases"}},
            "arbiter": {"role": "arbiter", "node": "arbiter"}},
            "pipeline": [{"id": "read", "component": "reader"},
                         {"id": "align", "component": "psi", "inputs": {"data": "read.data"}}]}
        j = c["bank"].post("/jobs", {"job_text": yaml.safe_dump(job)})
        for n in ("shop", "arbiter"):
            wait_for(lambda: c[n].get("/jobs", params={"state": "pending"}), 60, f"proposal at {n}")
            c[n].post(f"/jobs/{j['id']}/approve")
        end = wait_for(lambda: (x := c["bank"].get(f"/jobs/{j['id']}"))["state"] in ("done", "failed") and x,
                       180, "the job ending")
        assert end["state"] == "done", end
        assert {t["state"] for t in end["tasks"]} == {"done"} and len(end["tasks"]) == 6
        audit = c["shop"].get("/audit", params={"job_id": j["id"]})
        assert next(r for r in audit if r["kind"] == "task.finished")["body"]["bytes_sent"]["bank"] > 0
    finally:
        for p in procs:
            p.terminate()
        deadline = time.time() + 30
        for p in procs:
            try:
                p.wait(max(deadline - time.time(), 1))
            except subprocess.TimeoutExpired:
                p.kill()
