"""THE worker engine: results equal in-process ones, resident values, and workers never outlive their owner."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from atoll.crypto import engine
from atoll.errors import CryptoError

_OWNER = """
import os, sys
from atoll.crypto import engine, he
pk, sk = he.generate_keypair("ou", key_bits=1024)
pk.warm_up(2)
enc = pk.encrypt([1.5] * 200, jobs=2)
assert abs(float(sk.decrypt(enc, jobs=2).sum()) - 300.0) < 1e-6
print(" ".join(str(p) for p in engine._ENGINES[2].pids()), flush=True)
os.kill(os.getpid(), 9)   # dies without any clean-up: no atexit, no pool shutdown
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_their_owner_is_killed():
    proc = subprocess.run([sys.executable, "-c", _OWNER], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if _alive(p)]
    for p in left:  # do not leave them behind even if the test fails
        os.kill(p, 9)
    assert not left, f"HE workers {left} outlived their owner"


def _use_pool_and_return(out) -> None:
    from atoll.crypto import he

    pk, sk = he.generate_keypair("paillier", key_bits=1024)
    out.put(float(sk.decrypt(pk.encrypt([2.0] * 100, jobs=2), jobs=2).sum()))
    out.put(sorted(engine._ENGINES[2].pids()))


def test_process_started_by_multiprocessing_exits_after_using_a_pool():
    """multiprocessing joins a process's non-daemonic children when it ends (before atexit): the pool must be
    stopped first, or the process (e.g. a party of launch(mode="processes")) hangs until it is killed."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_use_pool_and_return, args=(out,))
    p.start()
    total, workers = out.get(timeout=60), out.get(timeout=60)
    p.join(timeout=30)
    hung = p.is_alive()
    if hung:
        p.kill()
        p.join()
    assert total == 200.0 and len(workers) == 2
    assert not hung and p.exitcode == 0
    assert not any(_alive(w) for w in workers)


def test_split_and_powmod_list_match_in_process():
    assert engine.split(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert engine.split(0, 4) == [(0, 0)] and engine.split(2, 5) == [(0, 1), (1, 2)]
    rng = np.random.default_rng(0)
    mod = 2 ** 521 - 1
    bases = [int(v) for v in rng.integers(2, 2 ** 62, size=40)]
    assert engine.powmod_list(bases, 65537, mod, jobs=2) == [pow(b, 65537, mod) for b in bases]


# ----------------------------------------------------------------------------- the engine interface

def _square(x: int) -> int:
    return x * x


def _block_sum(block: list, scale: int) -> int:
    return scale * sum(block)


def _whoami(_value) -> int:
    return os.getpid()


def check_kernels_match_one_worker(eng, pk, sk) -> None:
    """``eng`` (two or more workers) gives the in-process results, bit for bit (also run on Ray)."""
    assert engine.get(1).map(_square, [(i,) for i in range(7)]) == eng.map(_square, [(i,) for i in range(7)])
    rng = np.random.default_rng(3)
    X, v = rng.integers(-5, 5, size=(300, 3)), rng.normal(size=300)
    enc = pk.encrypt(v)
    # deterministic kernels: the same ciphertexts bit for bit
    assert enc.matvec_t(X, jobs=1).data.tolist() == enc.matvec_t(X, jobs=eng).data.tolist()
    assert enc.mul(X[:, 0], jobs=1).data.tolist() == enc.mul(X[:, 0], jobs=eng).data.tolist()
    assert sk.decrypt_int(enc, jobs=1).tolist() == sk.decrypt_int(enc, jobs=eng).tolist()
    assert np.allclose(sk.decrypt(pk.encrypt(v, jobs=eng), jobs=eng), v, atol=1e-9)


def test_map_and_kernels_give_identical_results_for_one_and_two_workers(ou_kp):
    check_kernels_match_one_worker(engine.get(2), *ou_kp)


def check_resident_values(eng) -> None:
    """The resident-value contract of every engine (also run on Ray)."""
    blocks = [[1, 2, 3], [10, 20]][:eng.n_workers]
    with eng.place(blocks) as res:
        assert eng.run(_block_sum, res, [(2,)] * len(blocks)) == [2 * sum(b) for b in blocks]
        pids = eng.run(_whoami, res, [()] * len(blocks))
        assert len(set(pids)) == len(blocks)  # task i ran on worker i
        assert eng.run(_whoami, res, [()] * len(blocks)) == pids
    with pytest.raises(CryptoError, match="released"):
        eng.run(_block_sum, res, [(1,)] * len(blocks))
    shared = eng.place_all([4, 5])
    assert eng.run(_block_sum, shared, [(1,)] * eng.n_workers) == [9] * eng.n_workers
    eng.release(shared)
    if eng.n_workers == 2:
        with pytest.raises(CryptoError, match="2 tasks for values resident on 1 workers"):
            eng.run(_block_sum, eng.place([[1]]), [(1,), (1,)])


def test_resident_values_stay_on_their_worker():
    for eng in (engine.get(1), engine.get(2)):
        check_resident_values(eng)


def test_shutdown_leaves_no_child_processes():
    import psutil

    eng = engine.ProcessEngine(2)
    assert sorted(eng.map(_square, [(3,), (4,)])) == [9, 16]
    pids = eng.pids()
    assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
    eng.shutdown(wait=True)
    assert not any(_alive(p) for p in pids)
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    assert not mine & set(pids)
    with pytest.raises(CryptoError, match="shut down"):
        eng.map(_square, [(1,)])


def test_a_killed_worker_is_a_clear_error_and_a_fresh_engine_replaces_it():
    eng = engine.get(3)
    assert eng.map(_square, [(2,)] * 3) == [4] * 3
    os.kill(eng.pids()[0], 9)
    with pytest.raises(CryptoError, match="worker process died"):
        for _ in range(50):  # the executor notices the death within a moment
            eng.map(_square, [(2,)] * 3)
            time.sleep(0.1)
    fresh = engine.get(3)
    assert fresh is not eng and fresh.map(_square, [(5,)] * 3) == [25] * 3
    fresh.shutdown(wait=True)


class TwoInProcessWorkers(engine.InlineEngine):
    """A stand-in for another engine (e.g. Ray): two workers with separate state, run in this process."""

    n_workers = 2

    def __init__(self, n: int):
        super().__init__()
        self.calls = 0

    def map(self, fn, args):
        self.calls += 1
        return [fn(*a) for a in args]

    def each(self, fn, args=()):
        return [fn(*args) for _ in range(self.n_workers)]

    def place(self, values):
        rid = next(self._ids)
        self._state[rid] = list(values)
        return engine.Resident(self, rid, len(values))

    def run(self, fn, resident, args):
        self.calls += 1
        return [fn(self._state[resident.rid][i], *a) for i, a in enumerate(args)]


def test_another_engine_plugs_in_without_touching_the_kernels(ou_kp):
    from atoll.crypto import he

    pk, sk = ou_kp
    engine.set_factory(TwoInProcessWorkers)
    try:
        eng = engine.get(2)
        assert isinstance(eng, TwoInProcessWorkers) and engine.get(2) is eng
        v = np.arange(200.0)
        assert np.allclose(sk.decrypt(pk.encrypt(v, jobs=2), jobs=2), v)
        codes = (np.arange(200) % 3).reshape(-1, 1)
        (h,) = he.RowHistograms(pk.encrypt_int(np.ones(200, dtype=np.int64)), codes, 3, jobs=2).build([np.arange(200)])
        assert sk.decrypt_int(h).ravel().tolist() == [67, 67, 66]
        assert eng.calls >= 3
    finally:
        engine.set_factory(None)
    assert isinstance(engine.get(2), engine.ProcessEngine)


def test_keys_reach_workers_without_their_randomness_pool(ou_kp):
    """A public key crosses to a worker as its checked public fields: the precomputed random factors stay
    with their owner (each is used once; a copy in a worker would be used twice)."""
    import pickle

    pk, sk = ou_kp
    pk.precompute(8)
    copy = pickle.loads(pickle.dumps(pk))
    assert copy == pk and copy.pool_size == 0 and pk.pool_size == 8
    assert sk.decrypt(copy.encrypt([1.25])).tolist() == [1.25]
    pk._take_masks(8)
