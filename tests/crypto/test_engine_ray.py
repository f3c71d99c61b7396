"""The Ray worker engine: the engine contract, the kernels and SecureBoost bit-identical to the local engine.

One local Ray cluster of two nodes (1 CPU each) for the whole module; skipped where Ray is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from atoll.crypto import engine
from atoll.errors import CryptoError

ray = pytest.importorskip("ray")

from atoll.crypto.engine_ray import RayEngine  # noqa: E402
from test_engine import _block_sum, _square, check_kernels_match_one_worker, check_resident_values  # noqa: E402


@pytest.fixture(scope="module")
def ray_engine():
    """A Ray cluster of two nodes on this machine (1 CPU each; Ray's own multi-node test harness, which stops
    only the processes it started) and a two-actor engine on it (0 CPUs each: Ray places them)."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # left connected by an earlier test of this process
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        # the actors import this folder's kernels (test_engine) and this checkout's atoll, as the driver does
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.pathsep.join([here, os.getcwd(), os.environ.get("PYTHONPATH", "")])
        ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
        eng = RayEngine(2, cpus_per_worker=0)  # leaves the CPUs to the actors of other engines of the tests
        yield eng
        eng.shutdown()
    finally:
        engine.set_factory(None)
        ray.shutdown()
        cluster.shutdown()


def _node_id(_value=None) -> str:
    return ray.get_runtime_context().get_node_id()


def _pool_size(pk) -> int:
    return pk.pool_size


def _worker_pid() -> int:
    return os.getpid()


def test_kernels_on_ray_equal_the_in_process_ones(ray_engine, ou_kp):
    check_kernels_match_one_worker(ray_engine, *ou_kp)


def test_resident_values_stay_on_their_ray_actor(ray_engine):
    check_resident_values(ray_engine)
    assert sorted(ray_engine.each(_worker_pid)) == sorted(ray_engine.pids())
    assert os.getpid() not in ray_engine.pids()



def test_workers_of_one_cpu_each_run_on_both_nodes(ray_engine):
    eng = RayEngine(2)  # each node has one CPU: one actor per node
    try:
        assert len(set(eng.each(_node_id))) == 2
        with eng.place([[1, 2], [3]]) as res:
            assert eng.run(_block_sum, res, [(1,), (2,)]) == [3, 6]
    finally:
        eng.shutdown()


def _dies_once(block: list, marker: str) -> int:
    """Sum of the block; the first time a marker is seen, the worker's process is killed in the middle."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)
    return sum(block)


def test_a_worker_killed_mid_task_is_restarted_by_ray_and_the_result_is_identical(ray_engine, tmp_path):
    before = ray_engine.pids()
    survivor = tmp_path / "seen"
    survivor.touch()
    with ray_engine.place([[1, 2, 3], [10, 20]]) as res:
        # worker 0 dies during its task: Ray restarts it, it reads its block back from the object store
        assert ray_engine.run(_dies_once, res, [(str(tmp_path / "run"),), (str(survivor),)]) == [6, 30]
        after = ray_engine.pids()
        assert after[0] != before[0] and after[1] == before[1]
        assert ray_engine.run(_dies_once, res, [(str(survivor),)] * 2) == [6, 30]
    assert ray_engine.map(_dies_once, [([4, 5], str(tmp_path / "map")), ([6], str(survivor))]) == [9, 6]
    assert not ray_engine.broken


def test_keys_reach_ray_workers_without_their_randomness_pool(ray_engine, ou_kp):
    pk, _ = ou_kp
    pk.precompute(4)
    try:
        assert ray_engine.each(_pool_size, (pk,)) == [0, 0]
        with ray_engine.place_all(pk) as res:
            assert ray_engine.run(_pool_size, res, [(), ()]) == [0, 0]
        assert pk.pool_size == 4
    finally:
        pk._take_masks(4)


def test_a_party_selects_ray_by_name_and_a_dead_actor_is_replaced(ray_engine, ou_kp):
    pk, sk = ou_kp
    engine.set_factory("ray", cpus_per_worker=0)
    try:
        eng = engine.get(2)
        assert isinstance(eng, RayEngine) and engine.get(2) is eng
        v = np.arange(100.0)
        assert np.allclose(sk.decrypt(pk.encrypt(v, jobs=2), jobs=2), v)
        ray.kill(eng._workers[0])
        with pytest.raises(CryptoError, match="Ray worker of this engine died"):
            eng.map(_square, [(2,), (3,)])
        fresh = engine.get(2)
        assert fresh is not eng and fresh.map(_square, [(2,), (3,)]) == [4, 9]
    finally:
        engine.set_factory(None)
    assert isinstance(engine.get(2), engine.ProcessEngine)
    with pytest.raises(CryptoError, match="unknown worker engine"):
        engine.set_factory("spark")
    with pytest.raises(CryptoError, match="takes no options"):
        engine.set_factory("local", address="auto")


_ENV_CHOICE = """
from atoll.crypto import engine
print(type(engine.get(2)).__name__)
"""


def test_the_environment_chooses_the_engine_without_code_changes(ray_engine):
    env = dict(os.environ, ATOLL_ENGINE="ray", RAY_ADDRESS=ray.get_runtime_context().gcs_address)
    script = _ENV_CHOICE + "print(engine.get(2).map(pow, [(2, 10), (3, 3)]))\n"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split("\n")[:2] == ["RayEngine", "[1024, 27]"], out.stderr[-2000:]
    env["ATOLL_ENGINE"] = "local"
    out = subprocess.run([sys.executable, "-c", _ENV_CHOICE], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["ProcessEngine"], out.stderr
    env["ATOLL_ENGINE"] = "nope"
    out = subprocess.run([sys.executable, "-c", _ENV_CHOICE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "unknown worker engine 'nope'" in out.stderr


def test_secureboost_on_ray_gives_exactly_the_local_engines_model(ray_engine, monkeypatch):
    from atoll import datasets
    from atoll.ml.vertical import HeteroSecureBoost, boosting_cipher

    monkeypatch.setattr(boosting_cipher, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(boosting_cipher, "PARALLEL_MIN_ROWS", 0)
    g = datasets.load("breast", "hetero", "guest")
    h = datasets.load("breast", "hetero", "host").loc[g.index]
    y = g.pop("y").to_numpy(np.float64)
    rows = np.random.default_rng(0).permutation(len(y))
    train, test = rows[:200], rows[200:300]  # a small slice; the model is checked on held-out rows
    xg, xh = g.to_numpy(np.float64), h.to_numpy(np.float64)
    models = {}
    for kind in ("local", "ray"):
        engine.set_factory(kind, **({"cpus_per_worker": 0} if kind == "ray" else {}))
        try:
            m = HeteroSecureBoost(scheme="ou", key_bits=1024, n_jobs=2, n_estimators=2, max_depth=3,
                                  learning_rate=0.3, max_bin=32).fit({"guest": (xg[train], y[train]),
                                                                      "host_0": xh[train]})
            eng = engine.get(2)
            assert type(eng).__name__ == {"local": "ProcessEngine", "ray": "RayEngine"}[kind]
            assert kind == "local" or eng.tasks > 0
        finally:
            engine.set_factory(None)
        assert m.host_models_["host_0"].stats["parallel_histograms"] > 0  # the engine did the host's work
        models[kind] = m
    local, on_ray = models["local"], models["ray"]
    held_out = {"guest": xg[test], "host_0": xh[test]}
    assert np.array_equal(local.predict_proba(held_out), on_ray.predict_proba(held_out))
    assert np.array_equal(local.feature_importances_, on_ray.feature_importances_)


def test_hetero_lr_on_ray_gives_exactly_the_local_engines_model(ray_engine):
    from atoll import datasets
    from atoll.ml.vertical import HeteroLogisticRegression

    g = datasets.load("breast_mini", "hetero", "guest")
    h = datasets.load("breast_mini", "hetero", "host")
    y = g.pop("y").to_numpy(dtype=float)
    params = dict(max_iter=2, early_stopping="none", key_bits=1024, optimizer="sgd", learning_rate=0.5, n_jobs=2)
    coefs = {}
    for kind in ("local", "ray"):
        engine.set_factory(kind, **({"cpus_per_worker": 0} if kind == "ray" else {}))
        try:
            m = HeteroLogisticRegression(transport="threads", **params).fit({"guest": (g, y), "host_0": h})
            if kind == "ray":  # the host's X.T @ [[d]] and the encryptions ran on the actors
                assert engine.get(2).tasks > 0
        finally:
            engine.set_factory(None)
        coefs[kind] = (m.coef_, m.intercept_)
    assert np.array_equal(coefs["local"][0], coefs["ray"][0]) and coefs["local"][1] == coefs["ray"][1]


def test_a_node_config_chooses_its_own_cluster(ray_engine):
    """``engine:`` in node.yaml: what a node's job processes pass to set_factory (atoll.node.executor)."""
    from pydantic import ValidationError

    from atoll.node.config import EngineConfig, NodeConfig

    cfg = NodeConfig.model_validate({"name": "bank", "federation": "127.0.0.1:7001",
                                     "engine": {"kind": "ray", "cpus_per_worker": 0}}).engine
    assert cfg.options() == {"cpus_per_worker": 0}
    engine.set_factory(cfg.kind, **cfg.options())
    try:
        assert isinstance(engine.get(2), RayEngine) and engine.get(2).map(_square, [(7,)]) == [49]
    finally:
        engine.set_factory(None)
    assert EngineConfig().kind == "local" and EngineConfig().options() == {}
    assert EngineConfig(kind="ray", address="auto").options() == {"address": "auto", "cpus_per_worker": 1.0}
    with pytest.raises(ValidationError):
        EngineConfig.model_validate({"kind": "spark"})
