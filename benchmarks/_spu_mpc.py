"""SecretFlow SPU side of benchmarks/mpc.py, run with the .venv-spu interpreter (Python 3.10).

Prints one JSON line: seconds for the shared matmul and the comparison in SPU's SEMI2K
simulator (two parties, FM64) — the figures the issue quotes as SPU's simulator."""

import json
import sys
import time

import numpy as np


def main() -> None:
    quick = "--quick" in sys.argv
    import spu
    import spu.utils.simulation as spsim

    sim = spsim.Simulator.simple(2, spu.ProtocolKind.SEMI2K, spu.FieldType.FM64)
    m, k, n = (200, 200, 20) if quick else (1000, 1000, 100)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(m, k)), rng.normal(size=(k, n))
    mm = spsim.sim_jax(sim, lambda x, y: x @ y)
    mm(a, b)
    t = time.perf_counter()
    mm(a, b)
    t_mm = time.perf_counter() - t
    size = 10_000 if quick else 1_000_000
    x, y = rng.normal(size=size), rng.normal(size=size)
    lt = spsim.sim_jax(sim, lambda u, v: u < v)
    t = time.perf_counter()
    lt(x, y)
    t_lt = time.perf_counter() - t
    out = {"matmul_s": t_mm, "matmul_shape": [m, k, n], "compare_s": t_lt, "compare_n": size}
    if "--lr" in sys.argv:
        out["ss_lr"] = lr(sys.argv[sys.argv.index("--lr") + 1], sim, quick)
    print(json.dumps(out))


def lr(npz: str, sim, quick: bool) -> dict:
    """SecretFlow's own SS-SGD epoch kernel (secretflow.ml.linear.ss_sgd.model._batch_update_w,
    sigmoid 't1' as SSRegression's default) run by SPU SEMI2K on the same standardised rows."""
    import spu.utils.simulation as spsim
    from secretflow.ml.linear.ss_sgd.model import Penalty, RegType, SigType, Strategy, _batch_update_w

    d = np.load(npz)
    x, y = d["x"], d["y"]
    x1 = np.hstack([x, np.ones((len(x), 1))])
    res = {}
    for name, batch, rate in (("full", len(x), 1.0), ("1024", 1024, 0.2)):
        total = len(x) // batch

        def run(n_ep):
            def epochs(xx, yy, ww):
                for _ in range(n_ep):
                    ww, _ = _batch_update_w(xx, yy, ww, rate, 0.0, SigType.T1, RegType.Logistic, Penalty.NONE,
                                            total, batch, Strategy.NAIVE_SGD, None)
                return ww
            t = time.perf_counter()
            w = np.asarray(spsim.sim_jax(sim, epochs)(x1, y.reshape(-1, 1), np.zeros((x1.shape[1], 1))))
            return time.perf_counter() - t, w

        n_ep = 2 if quick else 5
        t1, _ = run(1)
        tn, w = run(1 + n_ep)
        # sim_jax compiles on every call: the difference of the two runs is n_ep epochs of execution
        res[name] = {"s_per_epoch": max(tn - t1, 0.0) / n_ep, "s_per_epoch_with_compile": tn / (1 + n_ep),
                     "w": w.ravel().tolist(), "epochs": 1 + n_ep}
    return res


if __name__ == "__main__":
    main()
