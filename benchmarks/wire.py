"""gRPC transfer of a float64 array between two local processes vs a raw loopback TCP copy.

    python benchmarks/wire.py            # 100 MB, 3 repetitions
    python benchmarks/wire.py --quick    # 20 MB, 2 repetitions

Both sides run as separate processes. "atoll" is the full path a protocol uses:
``ctx.send`` (wire encode) -> gRPC with mutual TLS, 2 MiB chunks -> mailbox ->
``ctx.recv`` (wire decode). The optional "atoll-insecure" row is the same
without TLS. "raw socket" sends the same bytes over a plain TCP socket and
receives them into a preallocated buffer (the floor). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import tempfile
import time

import numpy as np
from _common import header


# ----------------------------------------------------------------------------- atoll
def _atoll_party(party, addrs, certdir, nbytes, reps, q):
    from atoll.federation import Context
    from atoll.federation.certs import TlsConfig
    from atoll.federation.grpc_transport import GrpcEndpoint

    tls = TlsConfig.load(certdir, party) if certdir else None
    t = GrpcEndpoint(party, addrs, tls)
    roles = {"a": "sender", "b": "receiver"}
    ctx = Context(party, roles, t.open_job("bench", roles), timeout=300)
    try:
        if party == "a":
            arr = np.random.default_rng(0).random(nbytes // 8)
            ctx.recv("b", "ready")
            for r in range(reps):
                with ctx.scope("rep", r):
                    ctx.send("b", "go", 0)
                    ctx.send("b", "array", arr)
            ctx.recv("b", "done")
        else:
            ctx.send("a", "ready", 1)
            times = []
            for r in range(reps):
                with ctx.scope("rep", r):
                    ctx.recv("a", "go")
                    t0 = time.perf_counter()
                    got = ctx.recv("a", "array")
                    times.append(time.perf_counter() - t0)
                    assert got.nbytes == nbytes // 8 * 8
            ctx.send("a", "done", 1)
            q.put(times)
    finally:
        time.sleep(0.2)
        t.close()


def bench_atoll(nbytes: int, reps: int, tls: bool) -> float:
    from atoll.federation.certs import init_certs
    from atoll.federation.launch import free_port

    addrs = {p: f"127.0.0.1:{free_port()}" for p in "ab"}
    ctxm = mp.get_context("spawn")
    q = ctxm.Queue()
    with tempfile.TemporaryDirectory() as d:
        certdir = str(init_certs("ab", d)) if tls else None
        ps = [ctxm.Process(target=_atoll_party, args=(p, addrs, certdir, nbytes, reps, q)) for p in "ab"]
        for p in ps:
            p.start()
        times = q.get(timeout=600)
        for p in ps:
            p.join()
    # the first message also pays for channel set-up: take the best repetition
    return nbytes / min(times)


# ----------------------------------------------------------------------------- raw
def _raw_sender(port, nbytes, reps):
    data = np.random.default_rng(0).random(nbytes // 8).tobytes()
    with socket.create_connection(("127.0.0.1", port)) as s:
        for _ in range(reps):
            s.recv(1)
            s.sendall(data)


def bench_raw(nbytes: int, reps: int) -> float:
    n = nbytes // 8 * 8
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    p = mp.get_context("spawn").Process(target=_raw_sender, args=(srv.getsockname()[1], nbytes, reps))
    p.start()
    conn, _ = srv.accept()
    buf = bytearray(n)
    view = memoryview(buf)
    times = []
    for _ in range(reps):
        conn.sendall(b"g")
        t0 = time.perf_counter()
        got = 0
        while got < n:
            got += conn.recv_into(view[got:], n - got)
        times.append(time.perf_counter() - t0)
    conn.close()
    srv.close()
    p.join()
    return n / min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 MB, 2 repetitions")
    ap.add_argument("--mb", type=int, default=None, help="array size in MB (default 100)")
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args()
    mb = args.mb or (20 if args.quick else 100)
    reps = args.reps or (2 if args.quick else 3)
    nbytes = mb * 1_000_000
    print(header("wire throughput"))
    print(f"payload: float64 array of {mb} MB, seed 0, best of {reps} repetitions, two processes on loopback")
    raw = bench_raw(nbytes, reps)
    atoll_tls = bench_atoll(nbytes, reps, tls=True)
    atoll_plain = bench_atoll(nbytes, reps, tls=False)
    rows = [("raw TCP socket", raw), ("atoll gRPC + mTLS (ctx.send/recv)", atoll_tls),
            ("atoll gRPC, no TLS", atoll_plain)]
    print(f"{'path':<36}{'MB/s':>10}{'vs raw':>10}")
    for name, v in rows:
        print(f"{name:<36}{v / 1e6:>10.1f}{v / raw:>10.2f}")
    print(json.dumps({"benchmark": "wire", "mb": mb, "reps": reps, "raw_MBps": round(raw / 1e6, 1),
                      "atoll_mtls_MBps": round(atoll_tls / 1e6, 1),
                      "atoll_plain_MBps": round(atoll_plain / 1e6, 1),
                      "ratio_mtls_vs_raw": round(atoll_tls / raw, 3),
                      "ratio_plain_vs_raw": round(atoll_plain / raw, 3)}))


if __name__ == "__main__":
    main()
