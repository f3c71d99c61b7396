"""Nodes benchmark: the credit-scoring job through three node processes vs ``atoll run``, and
REST job-status latency under 50 concurrent clients.

1. **Job wall time.** Three nodes (bank = guest, shop = host, arbiter; each its own OS
   process, SQLite store, certificate and data folder, on 127.0.0.1) run
   ``examples/nodes/credit_scoring.yaml``; shop and arbiter accept by an auto-approve rule,
   so the figure is the platform's cost, not a person's: from ``POST /jobs`` at bank to
   the job's ``done`` there (proposal, policy checks, plan, worker processes, grant checks
   at every step, audit, model store, heads exchanged). The peer is ``atoll run`` of the
   same job (same pipeline, seed and data files, parties as local processes over gRPC +
   mTLS) on the same machine, timed from start to report. Goal: the nodes take <= 10 %
   more wall time.
2. **REST latency.** 50 client threads (one HTTP connection each) ask bank
   ``GET /api/v1/jobs/{id}`` for the finished job, ``--requests`` times each; p50 and p99.

    python benchmarks/node.py --quick        # 2,000 rows, 1024-bit keys, 1 epoch
    python benchmarks/node.py                # all 30,000 rows, 2048-bit keys, 3 epochs (the example)

The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from _common import hardware, header

ROOT = Path(__file__).resolve().parents[1]
NODES = ("bank", "shop", "arbiter")
COMPONENTS = ["reader", "psi", "split", "scale", "hetero_lr", "predict", "evaluate"]


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def job_text(rows: int | None, bits: int, epochs: int) -> dict:
    raw = yaml.safe_load((ROOT / "examples" / "nodes" / "credit_scoring.yaml").read_text())
    raw["pipeline"][4]["params"].update(key_bits=bits, max_iter=epochs)
    return raw


def write_data(tmp: Path, rows: int | None) -> dict[str, Path]:
    import pandas as pd

    from atoll import datasets

    out = {}
    for node, part, name in (("bank", "guest", "credit.csv"), ("shop", "host", "purchases.csv")):
        df = pd.read_csv(datasets.path("default_credit", "hetero", part))
        if rows:
            df = df.head(rows)
        (tmp / "data").mkdir(exist_ok=True)
        out[node] = tmp / "data" / f"{node}_{name}"
        df.to_csv(out[node], index=False)
    return out


def setup_nodes(tmp: Path) -> tuple[dict, dict, list]:
    from atoll.federation.certs import init_certs
    from atoll.node.config import AutoApprove, NodeConfig, add_partner, init_node

    init_certs([], tmp / "ca")
    ports = free_ports(6)
    fed = {n: f"127.0.0.1:{ports[i]}" for i, n in enumerate(NODES)}
    api = {n: f"127.0.0.1:{ports[3 + i]}" for i, n in enumerate(NODES)}
    tokens = {}
    for n in NODES:
        _, tokens[n] = init_node(n, tmp / n, fed[n], api[n], ca=tmp / "ca")
    for n in NODES:
        for m in NODES:
            if m != n:
                add_partner(tmp / n / "node.yaml", tmp / m / "card.yaml")
        if n != "bank":
            cfg = NodeConfig.load(tmp / n / "node.yaml")
            cfg.auto_approve = [AutoApprove(partner="bank", components=COMPONENTS)]
            cfg.save()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    procs = [subprocess.Popen([sys.executable, "-m", "atoll.cli", "node", "start", "--config",
                               str(tmp / n / "node.yaml"), "--log", str(tmp / n / "node.log")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in NODES]
    from atoll.node.client import NodeClient

    clients = {}
    for n in NODES:
        c = NodeClient(f"http://{api[n]}", token="none")
        c.wait_up(120)
        c.token = c.post("/auth/bootstrap", {"token": tokens[n]}, auth=False)["token"]
        clients[n] = c
    return clients, api, procs


def run_nodes(tmp: Path, clients: dict, data: dict[str, Path], raw: dict) -> tuple[float, dict]:
    clients["bank"].post("/data", {"name": "credit", "path": str(data["bank"]), "id": "id", "label": "y"})
    clients["bank"].post("/grants", {"dataset": "credit", "grantee": "shop", "components": COMPONENTS})
    clients["shop"].post("/data", {"name": "purchases", "path": str(data["shop"]), "id": "id"})
    clients["shop"].post("/grants", {"dataset": "purchases", "grantee": "bank", "components": COMPONENTS})
    t0 = time.perf_counter()
    job = clients["bank"].post("/jobs", {"job_text": yaml.safe_dump(raw, sort_keys=False)})
    while True:
        j = clients["bank"].get(f"/jobs/{job['id']}")
        if j["state"] in ("done", "failed", "rejected", "cancelled"):
            break
        time.sleep(0.1)
    seconds = time.perf_counter() - t0
    if j["state"] != "done":
        raise SystemExit(f"the job through the nodes ended {j['state']}: {j['message']}")
    report = clients["bank"].get(f"/jobs/{job['id']}/report")["report"]
    return seconds, {"job": j, "report": report}


def run_local(tmp: Path, data: dict[str, Path], raw: dict) -> tuple[float, dict]:
    from atoll.jobs import run_job

    local = json.loads(json.dumps(raw))
    local["parties"]["guest"] = {"role": "guest", "data": {"path": str(data["bank"]), "id": "id", "label": "y"}}
    local["parties"]["host_0"] = {"role": "host", "data": {"path": str(data["shop"]), "id": "id"}}
    local["parties"]["arbiter"] = {"role": "arbiter"}
    f = tmp / "local.yaml"
    f.write_text(yaml.safe_dump(local, sort_keys=False))
    t0 = time.perf_counter()
    result = run_job(f, run_dir=tmp / "local-run", mode="processes")
    return time.perf_counter() - t0, result.report


def rest_latency(url: str, token: str, job_id: str, clients: int, requests: int) -> dict:
    import httpx

    lat: list[float] = []
    lock = threading.Lock()
    errors = []
    start = threading.Barrier(clients)

    def worker() -> None:
        mine = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            c.get(f"/api/v1/jobs/{job_id}")  # connect before timing
            start.wait()
            for _ in range(requests):
                t = time.perf_counter()
                r = c.get(f"/api/v1/jobs/{job_id}")
                mine.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors.append(r.status_code)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    q = statistics.quantiles(lat, n=100)
    return {"clients": clients, "requests": len(lat), "errors": len(errors), "p50_ms": q[49] * 1e3,
            "p99_ms": q[98] * 1e3, "throughput_rps": len(lat) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 rows, 1024-bit keys, 1 epoch, 20 requests/client")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--bits", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=None, help="requests per client")
    a = ap.parse_args()
    rows = a.rows or (2000 if a.quick else None)
    bits = a.bits or (1024 if a.quick else 2048)
    epochs = a.epochs or (1 if a.quick else 3)
    requests = a.requests or (20 if a.quick else 100)
    print(header("node: credit-scoring job through three nodes vs atoll run; REST job-status latency"))
    print(f"data default_credit hetero, rows {rows or 'all (30,000)'}, Paillier {bits} bits, {epochs} epoch(s), "
          f"seed 42; REST {a.clients} clients x {requests} requests")
    tmp = Path(tempfile.mkdtemp(prefix="atoll-bench-node-"))
    procs: list = []
    try:
        data = write_data(tmp, rows)
        raw = job_text(rows, bits, epochs)
        local_s, local_report = run_local(tmp, data, raw)
        print(f"atoll run (3 local processes, gRPC + mTLS): {local_s:.1f} s")
        clients, api, procs = setup_nodes(tmp)
        node_s, out = run_nodes(tmp, clients, data, raw)
        ratio = node_s / local_s
        print(f"three nodes (submit -> done at bank):       {node_s:.1f} s   ratio {ratio:.3f} "
              f"(goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")
        auc_nodes = next(e["metrics"]["auc"] for e in out["report"]["evaluations"])
        auc_local = next(e["metrics"]["auc"] for e in local_report["evaluations"] if e["party"] == "guest")
        print(f"AUC nodes {auc_nodes:.6f} / atoll run {auc_local:.6f}")
        lat = rest_latency(f"http://{api['bank']}", clients["bank"].token, out["job"]["id"], a.clients, requests)
        print(f"REST GET /jobs/ID: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
              f"{lat['throughput_rps']:.0f} req/s, {lat['errors']} errors ({lat['requests']} requests)")
        print(json.dumps({"benchmark": "node", **hardware(), "rows": rows or 30000, "key_bits": bits, "epochs": epochs,
                          "atoll_run_s": local_s, "nodes_s": node_s, "ratio": ratio, "auc_nodes": auc_nodes,
                          "auc_atoll_run": auc_local, "rest": lat}))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
