"""Replicas and failover: host replicas as `atoll serve host` processes; one is killed under load."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import pytest
import yaml

from atoll.serving.features import TableSource
from atoll.serving.parts import part_from_run
from atoll.serving.protocol import GuestServing, ServingError
from atoll.serving.replicas import ReplicaSet

ROOT = Path(__file__).resolve().parents[2]


def _host_process(cfg: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "atoll.serving.cli", "host", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)


def _address(p: subprocess.Popen) -> tuple[subprocess.Popen, str]:
    line = p.stdout.readline()  # "serving host_0 (...) on 127.0.0.1:PORT"
    m = re.search(r" on (\S+:\d+)$", line.strip())
    if not m:
        p.kill()
        raise AssertionError(f"host replica did not start: {line!r}")
    return p, m.group(1)


@pytest.fixture
def replicas(tmp_path, certs):
    procs = []

    def start(run, party, n):
        cfg = tmp_path / f"{party}.yaml"
        cfg.write_text(yaml.safe_dump({
            "party": party, "role": "host", "session": "s1", "listen": "127.0.0.1:0", "certs": str(certs),
            "guests": ["guest"], "features": {"path": str(run["files"][party])},
            "models": {"v1": {"run": str(run["run"]), "step": "train"}}}))
        started = [_host_process(cfg) for _ in range(n)]  # start together, then wait for each
        procs.extend(started)
        return [_address(p) for p in started]

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def test_killed_replica_under_load_loses_no_request(sb_run, replicas, tls_of):
    (p0, a0), (p1, a1) = replicas(sb_run, "host_0", 2)
    rs = ReplicaSet("host_0", [a0, a1], tls_of("guest"), health_interval=0.2)
    guest = GuestServing("guest", "s1", {"v1": part_from_run(sb_run["run"], "guest", "train")}, {"host_0": rs},
                         TableSource.from_file(sb_run["files"]["guest"]), timeout=5.0)
    ids = [str(i) for i in sb_run["predict"].index]
    want = dict(zip(ids, sb_run["predict"]["score"].to_numpy()))
    done, killed = [], threading.Event()

    def one(k: int):
        i = ids[k % len(ids)]
        if k == 60:
            os.kill(p0.pid, signal.SIGKILL)  # a replica dies in the middle of the load
            killed.set()
        s = guest.score([i])
        done.append(k)
        return i, float(s.scores[0])

    try:
        with futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, range(200)))
        assert killed.is_set() and len(results) == 200
        for i, s in results:
            assert s == pytest.approx(want[i], abs=1e-12)
        status = {r["address"]: r for r in rs.status()}
        assert status[a0]["healthy"] is False and status[a1]["served"] > 0
        # the survivor keeps serving alone; with both gone the error is clear and bounded
        guest.score(ids[:3])
        p1.kill()
        p1.wait(10)
        with pytest.raises(ServingError) as e:
            guest.score(ids[:1])
        assert e.value.category in ("unavailable", "timeout") and e.value.peer == "host_0"
    finally:
        guest.close()


def test_round_robin_spreads_load_over_healthy_replicas(lr_run, serving):
    guest = serving(lr_run, ["host_0", "host_1"], replicas=2)
    ids = [str(i) for i in lr_run["predict"].index[:40]]
    for i in ids:
        guest.score([i])
    for rs in guest.hosts.values():
        served = [r["served"] for r in rs.status()]
        assert sum(served) == 40 and min(served) >= 10
