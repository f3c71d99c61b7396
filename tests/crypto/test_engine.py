"""THE worker engine: results equal in-process ones, resident values, and workers never outlive their owner."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np

from atoll.crypto import engine

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
