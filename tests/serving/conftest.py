"""Shared fixtures: small finished runs (hetero LR with two hosts, SecureBoost) and their data files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atoll import datasets
from atoll.federation.certs import TlsConfig, init_certs
from atoll.serving.features import TableSource
from atoll.serving.parts import part_from_run
from atoll.serving.protocol import GuestServing, HostServing
from atoll.serving.replicas import ReplicaSet

ROWS = 240

LR_JOB = """
name: serving_lr
seed: 7
mode: threads
parties:
  guest: {{role: guest, data: {{path: {d}/guest.csv, label: y}}}}
  host_0: {{role: host, data: {{path: {d}/host_0.csv}}}}
  host_1: {{role: host, data: {{path: {d}/host_1.csv}}}}
  arbiter: {{role: arbiter}}
pipeline:
  - {{id: read, component: reader}}
  - {{id: align, component: psi, inputs: {{data: read.data}}}}
  - {{id: split, component: split, inputs: {{data: align.data}}, params: {{test_size: 0.25}}}}
  - {{id: scale, component: scale, inputs: {{train: split.train, test: split.test}}}}
  - id: train
    component: hetero_lr
    inputs: {{train: scale.train}}
    params: {{key_bits: 1024, max_iter: 2, batch_size: null, optimizer: adam, learning_rate: 0.1,
             early_stopping: none}}
  - {{id: predict, component: predict, inputs: {{model: train.model, data: scale.test}}}}
"""

SB_JOB = """
name: serving_sb
seed: 7
mode: threads
parties:
  guest: {{role: guest, data: {{path: {d}/guest.csv, label: y}}}}
  host_0: {{role: host, data: {{path: {d}/host_0.csv}}}}
pipeline:
  - {{id: read, component: reader}}
  - {{id: align, component: psi, inputs: {{data: read.data}}}}
  - {{id: split, component: split, inputs: {{data: align.data}}, params: {{test_size: 0.25}}}}
  - id: train
    component: secureboost
    inputs: {{train: split.train}}
    params: {{n_estimators: 4, max_depth: 3, scheme: plain, max_bin: 16}}
  - {{id: predict, component: predict, inputs: {{model: train.model, data: split.test}}}}
"""


def write_data(d: Path, hosts: int) -> dict[str, Path]:
    g = datasets.load("default_credit", "hetero", "guest").iloc[:ROWS]
    h = datasets.load("default_credit", "hetero", "host").iloc[:ROWS]
    d.mkdir(parents=True, exist_ok=True)
    files = {"guest": d / "guest.csv"}
    g.to_csv(files["guest"])
    cols = np.array_split(np.asarray(h.columns), hosts)
    for k, c in enumerate(cols):
        files[f"host_{k}"] = d / f"host_{k}.csv"
        h[list(c)].to_csv(files[f"host_{k}"])
    return files


def finished_run(tmp: Path, job_text: str, hosts: int) -> dict:
    from atoll.jobs import predict_job, run_job

    files = write_data(tmp / "data", hosts)
    job = tmp / "job.yaml"
    job.write_text(job_text.format(d=tmp / "data"))
    run = run_job(job, run_dir=tmp / "run", display=False)
    out = predict_job(run.run_dir, out_dir=tmp / "pred", display=False,
                      data={p: {"path": str(f)} for p, f in files.items()})
    pred = pd.read_csv(out["guest"]).set_index("id")
    return {"run": run.run_dir, "files": files, "predict": pred}


@pytest.fixture(scope="session")
def lr_run(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("lr"), LR_JOB, hosts=2)


@pytest.fixture(scope="session")
def lr_run_v2(tmp_path_factory):
    """A second version of the LR model: other seed, more epochs, the same data."""
    return finished_run(tmp_path_factory.mktemp("lr2"), LR_JOB.replace("seed: 7", "seed: 8")
                        .replace("max_iter: 2", "max_iter: 3"), hosts=2)


@pytest.fixture(scope="session")
def sb_run(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("sb"), SB_JOB, hosts=1)


@pytest.fixture(scope="session")
def glm_runs(tmp_path_factory):
    """finished run of another linear family (component name) on the LR job's data, cached."""
    cache = {}

    def get(component: str) -> dict:
        if component not in cache:
            text = LR_JOB.replace("hetero_lr", component).replace("learning_rate: 0.1", "learning_rate: 0.01")
            cache[component] = finished_run(tmp_path_factory.mktemp(component), text, hosts=2)
        return cache[component]

    return get


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    init_certs(["guest", "host_0", "host_1", "mallory"], d)
    return d


@pytest.fixture(scope="session")
def tls_of(certs):
    return lambda party: TlsConfig.load(certs, party)


def make_host(run: dict, party: str, versions: dict | None = None, **kw) -> HostServing:
    runs = versions or {"v1": run}
    return HostServing(party, "s1", {v: part_from_run(r["run"], party, "train") for v, r in runs.items()},
                       TableSource.from_file(run["files"][party]), **kw)


@pytest.fixture
def host_for():
    return make_host


@pytest.fixture
def serving(tls_of):
    """start(run, hosts, ...) -> GuestServing over real gRPC + mTLS to in-process host servers."""
    started = []

    def start(run, hosts, level="plain-partial", host_kw=None, timeout=5.0, replicas=1, versions=None, **kw):
        addrs = {}
        for h in hosts:
            for _ in range(replicas):
                extra = dict((host_kw or {}).get(h, {}))
                host = make_host(run, h, extra.pop("versions", versions), **extra)
                started.append(host.serve("127.0.0.1:0", tls_of(h)))
                addrs.setdefault(h, []).append(f"127.0.0.1:{host.port}")
        versions = {v: part_from_run(r["run"], "guest", "train") for v, r in (versions or {"v1": run}).items()}
        sets = {h: ReplicaSet(h, a, tls_of("guest"), health_interval=0) for h, a in addrs.items()}
        guest = GuestServing("guest", "s1", versions, sets, TableSource.from_file(run["files"]["guest"]),
                             level=level, timeout=timeout, **kw)
        started.append(guest)
        return guest

    yield start
    for s in started:
        if hasattr(s, "stop"):
            s.stop(0)
        else:
            s.close()
