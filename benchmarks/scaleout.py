"""The same HE workload on the local worker engine and on the Ray engine (issue 18, first slice).

Workload (a SecureBoost host's heavy part): encrypt ``rows`` gradients with OU, place them with their bin
codes on the workers (``RowHistograms``), build ``nodes`` histograms of ``features`` x ``bins`` per round for
``rounds`` rounds, decrypt them. Both engines have ``jobs`` workers on this machine; the decrypted
histograms must be identical (checked). Ray here is a local instance of ``jobs`` CPUs, so the ratio is the
Ray engine's overhead at equal cores, not a cluster's speed-up.

    python benchmarks/scaleout.py [--rows 20000] [--features 10] [--bins 32] [--nodes 4] [--rounds 2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import header, hardware

from atoll.crypto import engine, he
from atoll.crypto.engine_ray import RayEngine, connect


def workload(eng, pk, sk, g: np.ndarray, codes: np.ndarray, bins: int, nodes: int, rounds: int) -> tuple[dict, list]:
    times: dict[str, float] = {}
    t = time.perf_counter()
    enc = pk.encrypt(g, jobs=eng)
    times["encrypt_s"] = time.perf_counter() - t
    t = time.perf_counter()
    hist = he.RowHistograms(enc, codes, bins, jobs=eng)
    times["place_s"] = time.perf_counter() - t
    rows = np.arange(len(g))
    subsets = np.array_split(rows, nodes)
    t = time.perf_counter()
    for _ in range(rounds):
        built = hist.build(subsets)
    times["histograms_s"] = time.perf_counter() - t
    hist.close()
    t = time.perf_counter()
    plain = [sk.decrypt(h, jobs=eng) for h in built]
    times["decrypt_s"] = time.perf_counter() - t
    times["total_s"] = sum(times.values())
    return times, plain


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(header("scale-out: HE histograms, local engine vs Ray engine"))
    print(f"seed {a.seed} | rows {a.rows} x features {a.features}, {a.bins} bins, {a.nodes} nodes x {a.rounds} rounds "
          f"| OU {a.key_bits}-bit | {a.jobs} workers each")
    rng = np.random.default_rng(a.seed)
    g = np.round(rng.normal(size=a.rows), 6)
    codes = rng.integers(0, a.bins, size=(a.rows, a.features))
    pk, sk = he.generate_keypair("ou", key_bits=a.key_bits)

    local = engine.ProcessEngine(a.jobs)
    engine.warm_up(pk, local)
    t_local, plain_local = workload(local, pk, sk, g, codes, a.bins, a.nodes, a.rounds)
    local.shutdown()

    t = time.perf_counter()
    connect(num_cpus=a.jobs)
    on_ray = RayEngine(a.jobs)
    engine.warm_up(pk, on_ray)
    start_s = time.perf_counter() - t
    t_ray, plain_ray = workload(on_ray, pk, sk, g, codes, a.bins, a.nodes, a.rounds)
    on_ray.shutdown()

    identical = all(np.array_equal(x, y) for x, y in zip(plain_local, plain_ray))
    expect = [np.array([np.bincount(codes[s, f], weights=g[s], minlength=a.bins) for f in range(a.features)])
              for s in np.array_split(np.arange(a.rows), a.nodes)]
    correct = all(np.allclose(p, e, atol=1e-6) for p, e in zip(plain_local, expect))
    print(f"{'phase':<14}{'local (s)':>12}{'ray (s)':>12}{'ray/local':>11}")
    for k in t_local:
        print(f"{k:<14}{t_local[k]:>12.2f}{t_ray[k]:>12.2f}{t_ray[k] / t_local[k]:>11.2f}")
    print(f"ray start + actors + key tables: {start_s:.1f} s (once per party) | results identical: {identical} "
          f"| equal to plaintext histograms: {correct}")
    print(json.dumps({"benchmark": "scaleout", **hardware(), "params": vars(a), "local": t_local, "ray": t_ray,
                      "ray_over_local_total": t_ray["total_s"] / t_local["total_s"], "ray_start_s": start_s,
                      "identical": identical, "correct": correct}))
    if not (identical and correct):
        raise SystemExit("the engines disagree")


if __name__ == "__main__":
    main()
