"""Hetero binning + WOE / IV benchmark: the guest's labels under HE, the hosts' bins summed homomorphically.

Workloads (issue 17's):

* **(a) default_credit**: 30,000 rows, guest 13 features + label, host 10 features (bundled).
* **(b) synthetic**: 100,000 rows x (30 guest + 300 host) standard-normal features, labels from a random
  logistic model (seeded). FATE 2.0 reports 68 s for quantile binning + WOE / IV on it with 16 cores;
  the goal here is <= 68 s on 2 cores. ``--quick`` runs it on ``--synthetic-rows`` (default 10,000 with
  --quick) and prints the measured figure and, apart, the linear extrapolation to 100,000 rows (every
  step is per row: encryption per row, one multiplication per row and host feature).

For each workload and scheme the script runs :class:`HeteroBinningGuest` and :class:`HeteroBinningHost`
(quantile, ``max_bin`` 10, 2048-bit keys) as two threads of this process over the in-process transport,
reads the guest's wall time (key generation included) and the bytes of every message (the transport's
recorder), and checks the per-bin counts against the plaintext computation on the joined data
(:func:`atoll.ml.feature.binning.plain_binning`, timed in the same run: the reference).

    python benchmarks/binning.py --quick
    python benchmarks/binning.py --jobs 2

The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
from _common import hardware, header


def default_credit():
    from atoll import datasets

    g = datasets.load("default_credit", "hetero", "guest")
    h = datasets.load("default_credit", "hetero", "host").loc[g.index]
    y = g.pop("y").to_numpy()
    return g.to_numpy(np.float64), h.to_numpy(np.float64), y


def synthetic(rows: int, seed: int):
    rng = np.random.default_rng(seed)
    xg = rng.standard_normal((rows, 30))
    xh = rng.standard_normal((rows, 300))
    w = rng.normal(0, 0.1, 330)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(np.hstack([xg, xh]) @ w)))).astype(np.int64)
    return xg, xh, y


def federated(xg, xh, y, scheme: str, key_bits: int, jobs: int, max_bin: int) -> dict:
    from atoll.federation import Party, launch
    from atoll.ml.feature.binning import BinningParams
    from atoll.ml.feature.hetero_binning import HeteroBinningGuest, HeteroBinningHost

    p = BinningParams(max_bin=max_bin, scheme=scheme, key_bits=key_bits, n_jobs=jobs)
    sent = {"guest": 0, "host_0": 0}
    largest = [0]

    def rec(sender, receiver, address, payload):
        sent[sender] += len(payload)
        largest[0] = max(largest[0], len(payload))

    timing = {}

    def guest(ctx):
        t = time.perf_counter()
        m = HeteroBinningGuest(p).fit(ctx, xg, y, [f"g{j}" for j in range(xg.shape[1])])
        timing["guest"] = time.perf_counter() - t
        return m

    def host(ctx):
        t = time.perf_counter()
        m = HeteroBinningHost(p).fit(ctx, xh, [f"h{j}" for j in range(xh.shape[1])])
        timing["host"] = time.perf_counter() - t
        return m

    out = launch({"guest": Party("guest", guest), "host_0": Party("host", host)}, recorder=rec, timeout=3600)
    return {"seconds": timing["guest"], "host_seconds": timing["host"], "bytes_guest_to_host": sent["guest"],
            "bytes_host_to_guest": sent["host_0"], "largest_message": largest[0], "model": out["guest"]}


def plaintext(xg, xh, y, max_bin: int) -> tuple[float, dict]:
    from atoll.ml.feature.binning import BinningParams, plain_binning

    x = np.hstack([xg, xh])
    names = [f"g{j}" for j in range(xg.shape[1])] + [f"host_0.h{j}" for j in range(xh.shape[1])]
    t = time.perf_counter()
    _, tables = plain_binning(x, names, y, BinningParams(max_bin=max_bin))
    return time.perf_counter() - t, tables


def run(name: str, xg, xh, y, schemes, key_bits: int, jobs: int, max_bin: int, scale: float) -> list[dict]:
    rows = []
    plain_s, ref = plaintext(xg, xh, y, max_bin)
    for scheme in schemes:
        f = federated(xg, xh, y, scheme, key_bits, jobs, max_bin)
        exact = all(np.array_equal(f["model"].tables[k]["counts"], ref[k]["counts"]) for k in ref)
        row = {"workload": name, "rows": len(y), "guest_features": xg.shape[1], "host_features": xh.shape[1],
               "scheme": scheme, "key_bits": key_bits, "jobs": jobs, "max_bin": max_bin,
               "seconds": round(f["seconds"], 2), "host_seconds": round(f["host_seconds"], 2),
               "plaintext_seconds": round(plain_s, 3), "ratio": round(f["seconds"] / plain_s, 1),
               "bytes_guest_to_host": f["bytes_guest_to_host"], "bytes_host_to_guest": f["bytes_host_to_guest"],
               "largest_message": f["largest_message"], "counts_equal_plaintext": exact}
        if scale != 1.0:
            row["seconds_extrapolated_100k"] = round(f["seconds"] * scale, 1)
        print(f"{name:>15} {scheme:>8}: {row['seconds']:8.2f} s (host {row['host_seconds']:.2f} s) | plaintext "
              f"{plain_s:.3f} s | x{row['ratio']} | sent {row['bytes_guest_to_host'] / 1e6:.1f} MB to the host, "
              f"{row['bytes_host_to_guest'] / 1e3:.1f} kB back, largest message "
              f"{row['largest_message'] / 1e6:.2f} MB | counts equal: {exact}"
              + (f" | extrapolated to 100k rows: {row['seconds_extrapolated_100k']} s" if scale != 1.0 else ""),
              flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="default_credit + 10,000 synthetic rows")
    ap.add_argument("--synthetic-rows", type=int, default=None)
    ap.add_argument("--schemes", default="paillier,ou")
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--jobs", type=int, default=2, help="HE worker processes per party")
    ap.add_argument("--max-bin", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(header("hetero binning + WOE/IV"), flush=True)
    schemes = args.schemes.split(",")
    rows_b = args.synthetic_rows or (10_000 if args.quick else 100_000)
    print(f"seed {args.seed} | quantile, max_bin {args.max_bin} | {args.key_bits}-bit keys | {args.jobs} HE workers "
          f"per party | both parties in this process (threads)", flush=True)
    results = run("default_credit", *default_credit(), schemes, args.key_bits, args.jobs, args.max_bin, 1.0)
    xg, xh, y = synthetic(rows_b, args.seed)
    results += run(f"synthetic {rows_b // 1000}k", xg, xh, y, schemes, args.key_bits, args.jobs, args.max_bin,
                   100_000 / rows_b)
    print(json.dumps({"benchmark": "binning", "hardware": hardware(), "seed": args.seed, "results": results,
                      "fate_2_0_100k_x_330_16_cores_seconds": 68}))


if __name__ == "__main__":
    main()
