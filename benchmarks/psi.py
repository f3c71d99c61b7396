"""PSI benchmark: Atoll's ECDH-PSI against openmined-psi, both parties as separate processes.

Both parties run as their own OS processes over gRPC with mutual TLS on
loopback (``launch(..., mode="processes")``); openmined-psi's messages travel
over the same transport, so only the protocols differ. Each party generates
its own ids from the seed inside its process (no id crosses the launcher), and
reports time, bytes sent, peak resident memory and a digest of its result in
order, which the launcher checks against the known intersection (the guest's
and the host's ordered digests must be equal: row i is the same user).

    python benchmarks/psi.py            # 100k x 100k vs openmined-psi, then Atoll 1M x 1M
    python benchmarks/psi.py --quick    # 20k x 20k vs openmined-psi, then Atoll 100k x 100k

The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import time
from typing import Any

import numpy as np
from _common import hardware, header

from atoll.federation import Context, Party, launch
from atoll.federation.transport import Transport, payload_size


def make_ids(seed: int, n: int, overlap: float, role: str) -> list[str]:
    """Ids like ``u0123456789ab``: ``overlap * n`` shared, the rest private to the role, shuffled."""
    rng = np.random.default_rng(seed)
    pool = rng.choice(1 << 46, size=3 * n, replace=False)  # distinct 46-bit numbers
    shared = int(round(overlap * n))
    own = pool[:shared]
    rest = pool[n:2 * n - shared] if role == "guest" else pool[2 * n:3 * n - shared]
    vals = np.concatenate([own, rest])
    np.random.default_rng([seed, 1 if role == "guest" else 2]).shuffle(vals)
    return [f"u{v:012x}" for v in vals.tolist()]


def expected_digest(seed: int, n: int, overlap: float) -> tuple[int, str]:
    common = sorted(set(make_ids(seed, n, overlap, "guest")) & set(make_ids(seed, n, overlap, "host")))
    return len(common), digest(common)


def digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


class CountingTransport(Transport):
    """Wraps a transport and counts the payload bytes this party sends."""

    def __init__(self, inner: Transport):
        self.inner, self.party, self.sent = inner, inner.party, 0

    def send(self, receiver: str, address: str, payload: Any) -> None:
        self.sent += payload_size(payload)
        self.inner.send(receiver, address, payload)

    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        return self.inner.recv(sender, address, timeout, describe)

    def abort(self, reason: str) -> None:
        self.inner.abort(reason)


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _counted(ctx: Context) -> tuple[Context, CountingTransport]:
    t = CountingTransport(ctx.transport)
    return Context(ctx.party, ctx.parties, t, ctx.job_id, ctx.task, ctx.timeout, ctx.max_bytes), t


def _report(ids: list[str] | None, t0: float, cpu0: float, counter: CountingTransport,
            **extra: Any) -> dict:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": time.perf_counter() - t0, "bytes_sent": counter.sent,
            "cpu_seconds": ru.ru_utime + ru.ru_stime - cpu0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "size": None if ids is None else len(ids),
            "digest": None if ids is None else digest(ids), **extra}


def atoll_party(ctx: Context, seed: int, n: int, overlap: float, workers: int | None) -> dict:
    from atoll.secure.psi import PsiParams, run_psi

    ids = make_ids(seed, n, overlap, ctx.role)
    ctx, counter = _counted(ctx)
    t0, cpu0 = time.perf_counter(), _cpu()
    res = run_psi(ctx, ids, PsiParams(workers=workers, progress=False))
    return _report(res.ids, t0, cpu0, counter, backend=res.stats["backend"],
                   phases=res.stats["seconds"])


def openmined_party(ctx: Context, seed: int, n: int, overlap: float, workers: int | None) -> dict:
    """openmined-psi (ECDH on P-256, BoringSSL), its documented flow; guest = client, host = server."""
    import private_set_intersection.python as om

    ids = make_ids(seed, n, overlap, ctx.role)
    ctx, counter = _counted(ctx)
    t0, cpu0 = time.perf_counter(), _cpu()
    if ctx.role == "host":
        server = om.server.CreateWithNewKey(True)
        n_client = ctx.recv("guest", "n")
        setup = server.CreateSetupMessage(1e-9, n_client, ids, om.DataStructure.RAW)
        ctx.send("guest", "setup", setup.SerializeToString())
        request = om.Request()
        request.ParseFromString(ctx.recv("guest", "request"))
        ctx.send("guest", "response", server.ProcessRequest(request).SerializeToString())
        ctx.recv("guest", "done")
        return _report(None, t0, cpu0, counter)
    client = om.client.CreateWithNewKey(True)
    ctx.send("host", "n", len(ids))
    ctx.send("host", "request", client.CreateRequest(ids).SerializeToString())
    setup, response = om.ServerSetup(), om.Response()
    setup.ParseFromString(ctx.recv("host", "setup"))
    response.ParseFromString(ctx.recv("host", "response"))
    found = sorted(ids[i] for i in client.GetIntersection(setup, response))
    ctx.send("host", "done", True)
    return _report(found, t0, cpu0, counter)


def run(name: str, fn: Any, seed: int, n: int, overlap: float, workers: int | None) -> dict:
    kw = {"seed": seed, "n": n, "overlap": overlap, "workers": workers}
    t0 = time.perf_counter()
    out = launch({"guest": Party("guest", fn, kw), "host_0": Party("host", fn, kw)},
                 mode="processes", timeout=1800)
    wall = time.perf_counter() - t0
    size, want = expected_digest(seed, n, overlap)
    g, h = out["guest"], out["host_0"]
    if g["size"] != size or g["digest"] != want:
        raise SystemExit(f"{name}: wrong intersection at {n}: {g['size']} ids, expected {size}")
    if h["digest"] is not None and h["digest"] != g["digest"]:
        raise SystemExit(f"{name}: host's result differs from the guest's (order or content)")
    fig = {"n": n, "intersection": size,
           "seconds": max(g["seconds"], h["seconds"]), "launch_wall_seconds": wall,
           "cpu_seconds_guest": g["cpu_seconds"], "cpu_seconds_host": h["cpu_seconds"],
           "bytes_sent": g["bytes_sent"] + h["bytes_sent"],
           "bytes_guest": g["bytes_sent"], "bytes_host": h["bytes_sent"],
           "peak_rss_mb_guest": g["peak_rss_mb"], "peak_rss_mb_host": h["peak_rss_mb"]}
    if "backend" in g:
        fig["backend"] = g["backend"]
        fig["phases_guest"] = {k: round(v, 3) for k, v in g["phases"].items()}
    print(f"  {name:<14} {n:>9,} x {n:<9,} {fig['seconds']:8.2f} s  "
          f"{fig['bytes_sent'] / 1e6:8.1f} MB sent  peak RSS guest {g['peak_rss_mb']:7.0f} MB, "
          f"host {h['peak_rss_mb']:7.0f} MB  CPU guest {g['cpu_seconds']:.1f} s, host "
          f"{h['cpu_seconds']:.1f} s  (intersection {size:,}, launch wall {wall:.1f} s)",
          flush=True)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (20k vs peer, 100k Atoll)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--peer-n", type=int, default=None, help="ids per party, Atoll vs openmined-psi")
    ap.add_argument("--big-n", type=int, default=None, help="ids per party, Atoll alone")
    ap.add_argument("--workers", type=int, default=None, help="threads per party (default: cores)")
    ap.add_argument("--no-peer", action="store_true", help="skip openmined-psi")
    args = ap.parse_args()
    peer_n = args.peer_n or (20_000 if args.quick else 100_000)
    big_n = args.big_n or (100_000 if args.quick else 1_000_000)

    from atoll.secure.psi_group import get_backend

    print(header("PSI (ECDH) vs openmined-psi"))
    print(f"seed {args.seed}  overlap {args.overlap:.0%}  ids per party: {peer_n:,} (vs peer), {big_n:,} (Atoll alone); "
          "the machine may be shared with other work (see the load average)")
    print(f"Atoll ECDH-PSI on X25519, backend {get_backend().name!r}, "
          f"workers per party {args.workers or 'all cores'}; both parties are separate processes "
          "over gRPC + mutual TLS on loopback; ids are 13-character strings")
    result: dict[str, Any] = {"hardware": hardware(), "seed": args.seed,
                              "overlap": args.overlap, "quick": args.quick}
    atoll_small = run("atoll", atoll_party, args.seed, peer_n, args.overlap, args.workers)
    result["atoll_peer_n"] = atoll_small
    if not args.no_peer:
        try:
            import private_set_intersection.python  # noqa: F401
        except ImportError:
            print("  openmined-psi is not installed (pip install 'atoll[bench]'): peer skipped")
        else:
            peer = run("openmined-psi", openmined_party, args.seed, peer_n, args.overlap, None)
            result["openmined_peer_n"] = peer
            result["speedup_vs_openmined"] = peer["seconds"] / atoll_small["seconds"]
            print(f"  Atoll is {result['speedup_vs_openmined']:.1f}x faster than openmined-psi at "
                  f"{peer_n:,} x {peer_n:,} (goal: >= 3x); bytes sent ratio (openmined / Atoll) "
                  f"{peer['bytes_sent'] / atoll_small['bytes_sent']:.2f}")
    big = run("atoll", atoll_party, args.seed, big_n, args.overlap, args.workers)
    result["atoll_big_n"] = big
    if big_n >= 1_000_000:
        print(f"  1M x 1M goal (<= 90 s on 2 cores): {'met' if big['seconds'] <= 90 else 'NOT met'}")
    result["load_1min_end"] = hardware()["load_1min"]
    print(f"load average at end {result['load_1min_end']}")
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
