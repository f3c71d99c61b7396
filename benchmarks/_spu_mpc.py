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
    print(json.dumps({"matmul_s": t_mm, "matmul_shape": [m, k, n], "compare_s": t_lt, "compare_n": size}))


if __name__ == "__main__":
    main()
