"""SecureBoost: seconds per tree with 2048-bit keys, every party as its own process.

Workloads (issue 6):
  A. make_classification(n_samples=100000, n_features=30, n_informative=15, random_state=0),
     80/20 split, guest = label + features 0-9, host = features 10-29,
     5 trees, depth 5, 32 bins, learning rate 0.3 (SecretFlow SGB: 17.3 s/tree OU, 102 s/tree Paillier).
  B. 100,000 x (30 + 300) (FATE: 114-131 s/tree with 16 cores per party).
References on the same data: XGBoost (tree_method="hist", centralised), XGBoost trained on Atoll's bin
codes (the same candidate splits: the losslessness check; XGBoost's own sketch picks other cuts on 80k
rows) and Atoll's plaintext mode (same protocol, no encryption). Per tree = the guest's wall seconds of
one boosting round (setup: key generation, binning, worker start, excluded); the CPU seconds of every
process of the fit (parties and their HE workers, setup included; sampled with psutil, so workers forked
by a forkserver count too) are printed per tree as well, a figure that other work on a shared machine
disturbs less.

    python benchmarks/secureboost.py                               # full: A and B, OU and Paillier
    python benchmarks/secureboost.py --workloads B --schemes ou    # one workload, one scheme
    python benchmarks/secureboost.py --quick                       # 20k rows, 2 trees, workload A only
    python benchmarks/secureboost.py --quick --schemes ou --jobs 1,2   # HE worker processes per party: 1 vs 2

The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from _common import CpuMeter, hardware, header


def make_data(n: int, d_guest: int, d_host: int, seed: int = 0):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=d_guest + d_host, n_informative=15, random_state=seed)
    n_tr = int(0.8 * n)
    return (x[:n_tr, :d_guest], x[:n_tr, d_guest:], y[:n_tr]), (x[n_tr:, :d_guest], x[n_tr:, d_guest:], y[n_tr:])


def run_xgb(train, test, p):
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    xtr, xte = np.hstack(train[:2]), np.hstack(test[:2])
    m = xgb.XGBClassifier(n_estimators=p["trees"], max_depth=p["depth"], learning_rate=p["lr"],
                          max_bin=p["bins"], tree_method="hist", reg_lambda=1.0, n_jobs=2)
    t0 = time.perf_counter()
    m.fit(xtr, train[2])
    secs = time.perf_counter() - t0
    return secs, float(roc_auc_score(test[2], m.predict_proba(xte)[:, 1]))


def run_xgb_same_bins(train, test, p):
    """XGBoost on Atoll's bin codes (each party's own quantile cuts): every code is its own XGBoost bin,
    so both choose among the same splits. On 80k rows XGBoost's sketch picks other cuts than our exact
    quantiles; this reference isolates the protocol (lossless) from the binning."""
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    from atoll.ml.vertical.boosting_binning import BinMapper

    maps = [BinMapper.fit(train[i], p["bins"]) for i in (0, 1)]

    def codes(split):
        return np.hstack([maps[i].transform(split[i]) for i in (0, 1)]).astype(np.float32)

    m = xgb.XGBClassifier(n_estimators=p["trees"], max_depth=p["depth"], learning_rate=p["lr"],
                          max_bin=256, tree_method="hist", reg_lambda=1.0, n_jobs=2)
    m.fit(codes(train), train[2])
    return float(roc_auc_score(test[2], m.predict_proba(codes(test))[:, 1]))


def run_atoll(train, test, p, scheme, transport, n_jobs):
    from sklearn.metrics import roc_auc_score

    from atoll.ml.vertical import HeteroSecureBoost

    m = HeteroSecureBoost(n_estimators=p["trees"], max_depth=p["depth"], learning_rate=p["lr"],
                          max_bin=p["bins"], scheme=scheme, key_bits=p["key_bits"], random_state=0,
                          transport=transport, n_jobs=n_jobs)
    with CpuMeter() as meter:  # CPU seconds of every party and worker process
        m.fit({"guest": (train[0], train[2]), "host_0": train[1]})
    cpu = meter.seconds
    per_tree = float(np.mean(m.guest_model_.seconds_per_round))
    auc = float(roc_auc_score(test[2], m.predict_proba({"guest": test[0], "host_0": test[1]})[:, 1]))
    return {"seconds_per_tree": per_tree, "fit_seconds": m.fit_seconds_, "auc": auc,
            "cpu_seconds_per_tree": round(cpu / p["trees"], 3),
            "phases": {k: round(v / p["trees"], 3) for k, v in m.guest_model_.timings.items()},
            "host_phases": {k: round(v / p["trees"], 3) for k, v in m.host_models_["host_0"].timings.items()},
            "load_avg_1min_after": round(os.getloadavg()[0], 2),
            "rounds": [round(s, 3) for s in m.guest_model_.seconds_per_round]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20k rows, 2 trees, workload A only")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--trees", type=int, default=None)
    ap.add_argument("--schemes", default=None, help="comma list among ou,paillier")
    ap.add_argument("--workloads", default=None, help="comma list among A,B (default: A,B; --quick: A)")
    ap.add_argument("--transport", default="processes", choices=["processes", "threads"])
    ap.add_argument("--jobs", default="2",
                    help="HE worker processes per party; a comma list (e.g. 1,2) runs each scheme once per value")
    ap.add_argument("--key-bits", type=int, default=2048)
    args = ap.parse_args()

    rows = args.rows or (20000 if args.quick else 100000)
    trees = args.trees or (2 if args.quick else 5)
    schemes = (args.schemes or ("ou,paillier")).split(",")
    jobs = [int(j) for j in args.jobs.split(",")]
    chosen = (args.workloads or ("A" if args.quick else "A,B")).split(",")
    p = {"trees": trees, "depth": 5, "bins": 32, "lr": 0.3, "key_bits": args.key_bits}
    print(header("SecureBoost (vertical, HE histograms)"))
    print(f"seed 0; params {p}; transport={args.transport}; HE jobs per party={jobs}")
    print("note: the machine may be shared with other work; the load average is printed with each figure")
    out: dict = {"hardware": hardware(), "params": p, "rows": rows, "transport": args.transport, "jobs": jobs}
    workloads = [w for w in [("A", 10, 20), ("B", 30, 300)] if w[0] in chosen]
    for name, dg, dh in workloads:
        train, test = make_data(rows, dg, dh)
        print(f"\nworkload {name}: train {train[0].shape[0]} x ({dg} guest + {dh} host), test {test[0].shape[0]}; "
              f"load average (1 min) {os.getloadavg()[0]:.2f}")
        xs, xauc = run_xgb(train, test, p)
        print(f"  xgboost hist (central, 2 threads): {xs:.3f} s total, {xs / trees:.3f} s/tree, AUC {xauc:.4f}")
        sauc = run_xgb_same_bins(train, test, p)
        print(f"  xgboost hist on Atoll's bins (same candidate splits): AUC {sauc:.4f}")
        res = {"xgboost_seconds": xs, "xgboost_auc": xauc, "xgboost_same_bins_auc": sauc}
        plain = run_atoll(train, test, p, "plain", args.transport, 1)
        print(f"  atoll plain mode: {plain['seconds_per_tree']:.3f} s/tree, AUC {plain['auc']:.4f} "
              f"(xgboost on the same bins - atoll: {sauc - plain['auc']:+.4f})")
        res["plain"] = plain
        for scheme in schemes:
            for j in jobs:
                r = run_atoll(train, test, p, scheme, args.transport, j)
                res[scheme if len(jobs) == 1 else f"{scheme}_jobs{j}"] = r
                print(f"  atoll {scheme} {args.key_bits}-bit, {j} HE job(s) per party: "
                      f"{r['seconds_per_tree']:.2f} s/tree (rounds {r['rounds']}; per tree by phase: "
                      f"guest {r['phases']}, host {r['host_phases']}; load average {r['load_avg_1min_after']}); "
                      f"CPU seconds (all processes) per tree {r['cpu_seconds_per_tree']:.1f}, "
                      f"fit {r['fit_seconds']:.1f} s, AUC {r['auc']:.4f} (xgboost - atoll: {xauc - r['auc']:+.4f}, "
                      f"xgboost on the same bins - atoll: {sauc - r['auc']:+.4f}); "
                      f"x{r['seconds_per_tree'] / plain['seconds_per_tree']:.0f} plain, "
                      f"x{r['seconds_per_tree'] / (xs / trees):.0f} xgboost per tree")
        out[name] = res
    print(json.dumps(out))


if __name__ == "__main__":
    main()
