"""Online serving: p50 / p99 latency and throughput of joint scoring, Atoll beside a local predict.

Models (trained once here on default_credit, bundled; the serving path does not depend on the
training scheme, so SecureBoost trains in plaintext mode to keep set-up short):
  * LR: hetero logistic regression, guest + host_0 + host_1 (3 parties; arbiter for training only);
  * SB: SecureBoost, guest + host_0, 100 trees of depth 5, 32 bins.
Each host replica is its own `atoll serve host` process (gRPC + mutual TLS on loopback); the guest
scores in this process through `GuestServing.score` (the SDK path, no HTTP) and, for one row of the
table, through the HTTP API (`atoll serve guest`'s FastAPI app under uvicorn, in its own process).

Load: open loop. Requests are scheduled at the offered rate (requests/s) for `--seconds`, sent by a
pool of threads; latency runs from each request's scheduled time to its answer (queueing counts,
no coordinated omission), and a request that fails or takes over the timeout counts as an error.
Throughput = answered requests / wall time. Peers: the same model scored locally in one process
(no network: guest and host parts combined directly) and scikit-learn's / XGBoost's predict on the
pooled columns; FATE-Serving and SecretFlow-Serving publish no latency figures to compare with.

    python benchmarks/serving.py                  # the full grid (several minutes)
    python benchmarks/serving.py --quick          # batch 1 and 10, 100 and 500 requests/s, 2 s each

The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import numpy as np
from _common import hardware, header

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LR_JOB = """
name: bench_lr
seed: 3
mode: threads
parties:
  guest: {{role: guest, data: {{path: {d}/guest.csv, label: y}}}}
  host_0: {{role: host, data: {{path: {d}/host_0.csv}}}}
  host_1: {{role: host, data: {{path: {d}/host_1.csv}}}}
  arbiter: {{role: arbiter}}
pipeline:
  - {{id: read, component: reader}}
  - {{id: align, component: psi, inputs: {{data: read.data}}}}
  - {{id: scale, component: scale, inputs: {{train: align.data}}}}
  - id: train
    component: hetero_lr
    inputs: {{train: scale.train}}
    params: {{key_bits: 1024, max_iter: 2, batch_size: null, optimizer: adam, learning_rate: 0.1, early_stopping: none}}
"""

SB_JOB = """
name: bench_sb
seed: 3
mode: threads
parties:
  guest: {{role: guest, data: {{path: {d}/guest.csv, label: y}}}}
  host_0: {{role: host, data: {{path: {d}/host_all.csv}}}}
pipeline:
  - {{id: read, component: reader}}
  - {{id: align, component: psi, inputs: {{data: read.data}}}}
  - id: train
    component: secureboost
    inputs: {{train: align.data}}
    params: {{n_estimators: {trees}, max_depth: 5, max_bin: 32, scheme: plain}}
"""


def prepare(d: Path, rows: int, trees: int, models: tuple[str, ...] = ("lr", "sb")) -> dict:
    from atoll import datasets
    from atoll.jobs import run_job

    g = datasets.load("default_credit", "hetero", "guest").iloc[:rows]
    h = datasets.load("default_credit", "hetero", "host").iloc[:rows]
    g.to_csv(d / "guest.csv")
    h.to_csv(d / "host_all.csv")
    h.iloc[:, :5].to_csv(d / "host_0.csv")
    h.iloc[:, 5:].to_csv(d / "host_1.csv")
    out = {}
    for name, text in (("lr", LR_JOB.format(d=d)), ("sb", SB_JOB.format(d=d, trees=trees))):
        if name not in models:
            continue
        (d / f"{name}.yaml").write_text(text)
        t0 = time.perf_counter()
        out[name] = run_job(d / f"{name}.yaml", run_dir=d / f"run_{name}", display=False).run_dir
        print(f"  trained {name} in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def host_config(d: Path, certs: Path, party: str, run: Path, data: str, keys: dict | None,
                levels: tuple[str, ...] = ("plain-partial",)) -> Path:
    import yaml

    cfg = {"party": party, "role": "host", "session": "bench", "listen": "127.0.0.1:0", "certs": str(certs),
           "guests": ["guest"], "features": {"path": str(d / data)},
           "models": {"v1": {"run": str(run), "step": "train"}}, "levels": list(levels)}
    if keys is not None:
        cfg["levels"] = ["plain-partial", "masked"]
        cfg["mask_key"] = str(keys[party][0])
        cfg["mask_peers"] = {h: pk.hex() for h, (_, pk) in keys.items() if h != party}
    f = d / f"{party}-{Path(run).name}.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return f


def start_hosts(cfg: Path, n: int) -> tuple[list[subprocess.Popen], list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "atoll.serving.cli", "host", "--config", str(cfg)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
             for _ in range(n)]
    addrs = []
    for p in procs:
        m = re.search(r" on (\S+:\d+)$", p.stdout.readline().strip())
        if not m:
            raise SystemExit("a host replica did not start")
        addrs.append(m.group(1))
    return procs, addrs


def load(fn, rate: float, seconds: float, workers: int = 32, timeout: float = 2.0) -> dict:
    """Open-loop load: ``fn(k)`` scheduled at ``rate`` per second for ``seconds``."""
    n = max(1, int(rate * seconds))
    lat = np.full(n, np.nan)
    errors = [0]
    lock = threading.Lock()

    def run(k: int, due: float) -> None:
        try:
            fn(k)
            took = time.perf_counter() - due
            if took <= timeout:
                lat[k] = took
            else:
                with lock:
                    errors[0] += 1
        except Exception:  # noqa: BLE001 - counted
            with lock:
                errors[0] += 1

    t0 = time.perf_counter() + 0.05
    with futures.ThreadPoolExecutor(workers) as pool:
        for k in range(n):
            due = t0 + k / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            pool.submit(run, k, due)
    wall = time.perf_counter() - t0
    ok = lat[~np.isnan(lat)]
    return {"offered_rps": rate, "requests": n, "errors": int(errors[0]),
            "throughput_rps": round(len(ok) / wall, 1),
            "p50_ms": round(float(np.percentile(ok, 50)) * 1e3, 2) if len(ok) else None,
            "p99_ms": round(float(np.percentile(ok, 99)) * 1e3, 2) if len(ok) else None}


def local_latency(fn, n: int = 300) -> dict:
    t = []
    for k in range(n):
        t0 = time.perf_counter()
        fn(k)
        t.append(time.perf_counter() - t0)
    return {"p50_ms": round(float(np.percentile(t, 50)) * 1e3, 3), "p99_ms": round(float(np.percentile(t, 99)) * 1e3, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--only", choices=["masked-sb"], default=None,
                    help="masked-sb: only the cost of masked SecureBoost (2048-bit Paillier, closed loop)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the host processes are stopped (finally)
    batches = [1, 10] if args.quick else [1, 10, 50]
    rates = [100, 500] if args.quick else [100, 500, 1000]
    seconds = args.seconds or (2.0 if args.quick else 3.0)

    from atoll.federation.certs import TlsConfig, init_certs
    from atoll.serving.features import TableSource
    from atoll.serving.parts import part_from_run
    from atoll.serving.protocol import GuestServing
    from atoll.serving.replicas import ReplicaSet
    from atoll.tee.envelope import x25519_keypair

    if args.only == "masked-sb":
        return masked_sb_only(args)
    print(header("serving: joint-score latency"), flush=True)
    print(f"data default_credit, {args.rows} rows; LR 3 parties; SB 2 parties, {args.trees} trees depth 5; "
          f"open loop {seconds:g} s per point, 32 client threads, timeout 2 s", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="atoll-bench-serving-"))
    certs = tmp / "certs"
    init_certs(["guest", "host_0", "host_1"], certs)
    runs = prepare(tmp, args.rows, args.trees)
    keys = {}
    for h in ("host_0", "host_1"):
        sk, pk = x25519_keypair()
        (tmp / f"{h}.mask").write_bytes(sk)
        keys[h] = (tmp / f"{h}.mask", pk)
    procs: list[subprocess.Popen] = []
    addrs: dict[tuple[str, str], list[str]] = {}
    for model, hosts in (("lr", {"host_0": "host_0.csv", "host_1": "host_1.csv"}), ("sb", {"host_0": "host_all.csv"})):
        for h, data in hosts.items():
            p, a = start_hosts(host_config(tmp, certs, h, runs[model], data, keys if model == "lr" else None), 2)
            procs += p
            addrs[(model, h)] = a
    gtls = TlsConfig.load(certs, "guest")
    source = TableSource.from_file(tmp / "guest.csv")
    ids = [str(i) for i in source.frame.index]
    rows = []
    try:
        for model in ("lr", "sb"):
            part = part_from_run(runs[model], "guest", "train")
            hosts = [h for (m, h) in addrs if m == model]
            for level in (("plain-partial", "masked") if model == "lr" else ("plain-partial",)):
                for replicas in (1, 2):
                    sets = {h: ReplicaSet(h, addrs[(model, h)][:replicas], gtls, health_interval=1.0) for h in hosts}
                    guest = GuestServing("guest", "bench", {"v1": part}, sets, source, level=level, timeout=2.0)
                    guest.score(ids[:50])  # warm the channels
                    for batch in batches:
                        for rate in rates:
                            r = load(lambda k: guest.score(ids[(k * batch) % (len(ids) - batch):][:batch]),
                                     rate, seconds)
                            r.update(model=model, level=level, replicas=replicas, batch=batch)
                            rows.append(r)
                            print(f"  {model:3s} {level:13s} replicas {replicas} batch {batch:3d} offered {rate:5d}/s: "
                                  f"p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  {r['throughput_rps']} req/s  "
                                  f"errors {r['errors']}/{r['requests']}", flush=True)
                    guest.close()
        peers = local_peers(runs, tmp, ids, batches)
        for k, v in peers.items():
            print(f"  peer {k}: p50 {v['p50_ms']} ms  p99 {v['p99_ms']} ms", flush=True)
        http = http_row(tmp, certs, addrs, runs, seconds, ids)
        if http:
            print(f"  HTTP (uvicorn, 1 worker) LR plain batch 1 offered 100/s: p50 {http['p50_ms']} ms  "
                  f"p99 {http['p99_ms']} ms  errors {http['errors']}/{http['requests']}", flush=True)
    finally:
        for p in procs:
            p.kill()
    goals = {"lr_plain_p99_ms_at_500rps": next((r["p99_ms"] for r in rows if r["model"] == "lr" and r["level"] ==
                                                "plain-partial" and r["batch"] == 1 and r["offered_rps"] == 500
                                                and r["replicas"] == 1), None)}
    print(json.dumps({"benchmark": "serving", "hardware": hardware(), "rows": args.rows, "trees": args.trees,
                      "seconds_per_point": seconds, "results": rows, "peers": peers, "http": http, "goals": goals}))


def masked_sb_only(args) -> None:
    """Masked SecureBoost: one encryption per row and leaf at the guest; closed loop, one row per request."""
    from atoll.federation.certs import TlsConfig, init_certs
    from atoll.serving.features import TableSource
    from atoll.serving.parts import part_from_run
    from atoll.serving.protocol import GuestServing
    from atoll.serving.replicas import ReplicaSet

    print(header("serving: masked SecureBoost cost"), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="atoll-bench-serving-"))
    init_certs(["guest", "host_0"], tmp / "certs")
    runs = prepare(tmp, args.rows, args.trees, ("sb",))
    procs, addrs = start_hosts(host_config(tmp, tmp / "certs", "host_0", runs["sb"], "host_all.csv", None,
                                           ("plain-partial", "masked")), 1)
    try:
        part = part_from_run(runs["sb"], "guest", "train")
        leaves = len(part.model.compiled["guest"][0].need)
        source = TableSource.from_file(tmp / "guest.csv")
        ids = [str(i) for i in source.frame.index]
        t0 = time.perf_counter()
        guest = GuestServing("guest", "bench", {"v1": part},
                             {"host_0": ReplicaSet("host_0", addrs, TlsConfig.load(tmp / "certs", "guest"), 0)},
                             source, level="masked", timeout=120.0, he_key_bits=2048)
        keygen = time.perf_counter() - t0
        guest.score(ids[:1])
        r = local_latency(lambda k: guest.score(ids[k + 1:k + 2]), n=8)
        guest.close()
    finally:
        for p in procs:
            p.kill()
    print(f"  {args.trees} trees, {leaves} leaves; 2048-bit key generated in {keygen:.1f} s; one row per request: "
          f"p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms (8 requests, one at a time)", flush=True)
    print(json.dumps({"benchmark": "serving-masked-sb", "hardware": hardware(), "trees": args.trees, "leaves": leaves,
                      "key_bits": 2048, "keygen_s": round(keygen, 2), "batch1": r}))


def local_peers(runs: dict, d: Path, ids: list[str], batches: list[int]) -> dict:
    """The same models scored in one process (no network), and sklearn / XGBoost on pooled columns."""
    import pandas as pd
    import xgboost as xgb
    from sklearn.linear_model import LogisticRegression

    from atoll.serving.features import TableSource
    from atoll.serving.parts import part_from_run

    out = {}
    src = {p: TableSource.from_file(d / f) for p, f in (("guest", "guest.csv"), ("host_0", "host_0.csv"),
                                                       ("host_1", "host_1.csv"), ("host_all", "host_all.csv"))}
    for model, hosts in (("lr", {"host_0": "host_0", "host_1": "host_1"}), ("sb", {"host_0": "host_all"})):
        g = part_from_run(runs[model], "guest", "train")
        hp = {h: part_from_run(runs[model], h, "train") for h in hosts}
        for batch in batches:
            def same_model(k, batch=batch):
                sel = ids[(k * batch) % (len(ids) - batch):][:batch]
                parts = {h: p.adapter.partial(p.model, p.rows(src[hosts[h]], sel), h) for h, p in hp.items()}
                g.adapter.combine(g.model, g.rows(src["guest"], sel), parts, None)
            out[f"{model}_same_model_local_batch{batch}"] = local_latency(same_model)
    pooled = pd.concat([src["guest"].frame, src["host_all"].frame], axis=1)
    y = pooled.pop("y").to_numpy()
    x = pooled.to_numpy(float)
    clf = LogisticRegression(max_iter=300).fit(x, y)
    xg = xgb.XGBClassifier(n_estimators=100, max_depth=5, tree_method="hist", n_jobs=1).fit(x, y)
    for batch in batches:
        out[f"sklearn_lr_predict_proba_batch{batch}"] = local_latency(
            lambda k, b=batch: clf.predict_proba(x[(k * b) % (len(x) - b):][:b]))
        out[f"xgboost_predict_proba_batch{batch}"] = local_latency(
            lambda k, b=batch: xg.predict_proba(x[(k * b) % (len(x) - b):][:b]))
    return out


def http_row(d: Path, certs: Path, addrs: dict, runs: dict, seconds: float, ids: list[str]) -> dict | None:
    """LR plain-partial, batch 1, 100 requests/s through the guest's HTTP API (its own process)."""
    import socket

    import httpx
    import yaml

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {"party": "guest", "role": "guest", "session": "bench", "listen": f"127.0.0.1:{port}", "certs": str(certs),
           "features": {"path": str(d / "guest.csv")}, "models": {"v1": {"run": str(runs["lr"]), "step": "train"}},
           "hosts": {h: addrs[("lr", h)][:1] for h in ("host_0", "host_1")}}
    f = d / "guest-http.yaml"
    f.write_text(yaml.safe_dump(cfg))
    p = subprocess.Popen([sys.executable, "-m", "atoll.serving.cli", "guest", "--config", str(f)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2.0)
        for _ in range(200):
            try:
                if client.get("/api/v1/status").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            return None
        local = threading.local()

        def one(k):
            c = getattr(local, "c", None)
            if c is None:
                c = local.c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2.0)
            r = c.post("/api/v1/predict", json={"ids": [ids[k % len(ids)]]})
            r.raise_for_status()

        client.post("/api/v1/predict", json={"ids": ids[:1]}, timeout=30.0).raise_for_status()  # warm up
        return load(one, 100, seconds, workers=16)
    finally:
        p.kill()


if __name__ == "__main__":
    main()
