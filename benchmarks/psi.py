"""PSI benchmark: Atoll's KKRT-PSI and ECDH-PSI against openmined-psi; unbalanced and streamed PSI.

Sections (every party a separate OS process):

1. ``--peer-n`` ids per party (100k): Atoll KKRT, Atoll ECDH and openmined-psi side by side.
2. ``--big-n`` ids per party (1M): Atoll KKRT and Atoll ECDH (openmined-psi would take ~15 min).
3. Unbalanced: ``--ub-client`` (10k) ids against ``--ub-server`` (1M): the offline phase once,
   then the online phase, timed apart.
4. Streamed KKRT: ``--stream-n`` ids per party (10M) from CSV files written beforehand, with
   each party's peak resident memory (ru_maxrss of its process).

SecretFlow's SPU (RR22, ECDH) is not run here: this machine has no SecretFlow venv.

Both parties run as their own OS processes over gRPC with mutual TLS on
loopback (``launch(..., mode="processes")``); openmined-psi's messages travel
over the same transport, so only the protocols differ. Each party generates
its own ids from the seed inside its process (no id crosses the launcher), and
reports time, bytes sent, peak resident memory and a digest of its result in
order, which the launcher checks against the known intersection (the guest's
and the host's ordered digests must be equal: row i is the same user).

    python benchmarks/psi.py            # all four sections at the sizes above
    python benchmarks/psi.py --quick    # 20k / 100k / 2k vs 100k / 300k streamed

The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
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


def atoll_party(ctx: Context, seed: int, n: int, overlap: float, workers: int | None,
                protocol: str = "ecdh") -> dict:
    from atoll.secure.psi import PsiParams, run_psi

    ids = make_ids(seed, n, overlap, ctx.role)
    ctx, counter = _counted(ctx)
    t0, cpu0 = time.perf_counter(), _cpu()
    res = run_psi(ctx, ids, PsiParams(protocol=protocol, workers=workers, progress=False))
    return _report(res.ids, t0, cpu0, counter, backend=res.stats["backend"],
                   phases=res.stats["seconds"])


def kkrt_party(ctx: Context, seed: int, n: int, overlap: float, workers: int | None) -> dict:
    return atoll_party(ctx, seed, n, overlap, workers, "kkrt")


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
           "bytes_per_id": (g["bytes_sent"] + h["bytes_sent"]) / (2 * n),
           "peak_rss_mb_guest": g["peak_rss_mb"], "peak_rss_mb_host": h["peak_rss_mb"]}
    if "backend" in g:
        fig["backend"] = g["backend"]
        fig["phases_guest"] = {k: round(v, 3) for k, v in g["phases"].items()}
    print(f"  {name:<14} {n:>9,} x {n:<9,} {fig['seconds']:8.2f} s  "
          f"{fig['bytes_sent'] / 1e6:8.1f} MB sent ({fig['bytes_per_id']:.0f} B/id)  peak RSS guest "
          f"{g['peak_rss_mb']:6.0f} MB, host {h['peak_rss_mb']:6.0f} MB  CPU guest {g['cpu_seconds']:.1f} s, "
          f"host {h['cpu_seconds']:.1f} s  (intersection {size:,}, launch wall {wall:.1f} s)", flush=True)
    return fig


# ---------------------------------------------------------------------------- unbalanced
_A, _B, _M = 0x9E3779B97F4B, 0x2545F4914F6C, 1 << 48  # a bijection of [0, 2^48): i -> (A i + B) mod 2^48


def ub_party(ctx: Context, seed: int, n_client: int, n_server: int, cache: str) -> dict:
    from atoll.secure.psi import PsiParams, run_psi

    if ctx.role == "host":
        ids = bijection_ids(np.arange(n_server, dtype=np.uint64))
    else:  # half of the client's ids are the server's
        half = n_client // 2
        ids = bijection_ids(np.concatenate([np.arange(half, dtype=np.uint64),
                                            np.arange(n_server, n_server + n_client - half, dtype=np.uint64)]))
    # both clocks start once both id lists exist (the server's 10M take seconds to make)
    other = "guest" if ctx.role == "host" else "host_0"
    ctx.send(other, "ready", True)
    ctx.recv(other, "ready")
    ctx, counter = _counted(ctx)
    t0, cpu0 = time.perf_counter(), _cpu()
    res = run_psi(ctx, ids, PsiParams(protocol="unbalanced", progress=False, cache_dir=f"{cache}/{ctx.party}"))
    return _report(res.ids, t0, cpu0, counter, phases=res.stats["seconds"])


def run_unbalanced(seed: int, n_client: int, n_server: int) -> dict:
    cache = tempfile.mkdtemp(prefix="atoll-psi-bench-ub-")
    kw = {"seed": seed, "n_client": n_client, "n_server": n_server, "cache": cache}
    fig: dict[str, Any] = {"n_client": n_client, "n_server": n_server}
    for phase in ("first", "online"):
        out = launch({"guest": Party("guest", ub_party, kw), "host_0": Party("host", ub_party, kw)},
                     mode="processes", timeout=3600)
        g, h = out["guest"], out["host_0"]
        if g["size"] != n_client // 2 or g["digest"] != h["digest"]:
            raise SystemExit(f"unbalanced: wrong intersection ({g['size']}, expected {n_client // 2})")
        gp, hp = g["phases"], h["phases"]
        fig[phase] = {"server_offline_s": hp["offline"], "server_check_s": hp["check"], "download_s": gp["offline"],
                      "online_s": max(gp["online"], hp["online"]), "total_s": max(g["seconds"], h["seconds"]),
                      "client_seconds": g["seconds"], "server_seconds": h["seconds"],
                      "bytes_client": g["bytes_sent"], "bytes_server": h["bytes_sent"],
                      "peak_rss_mb_guest": g["peak_rss_mb"], "peak_rss_mb_host": h["peak_rss_mb"]}
        f = fig[phase]
        print(f"  unbalanced {phase:<7} {n_client:>7,} x {n_server:<11,} server offline {f['server_offline_s']:6.1f} s"
              f"  check {f['server_check_s']:4.2f} s  download {f['download_s']:5.2f} s  online {f['online_s']:5.2f} s  "
              f"session client {f['client_seconds']:6.1f} s, server {f['server_seconds']:6.1f} s  "
              f"sent client {f['bytes_client'] / 1e6:.2f} MB, server {f['bytes_server'] / 1e6:.1f} MB  peak RSS "
              f"client {f['peak_rss_mb_guest']:.0f} MB, server {f['peak_rss_mb_host']:.0f} MB", flush=True)
    return fig


# ---------------------------------------------------------------------------- streaming
def bijection_ids(i: np.ndarray) -> list[str]:
    """Ids ``u%012x`` of distinct indices (distinct ids, in no visible order)."""
    v = (i.astype(np.uint64) * np.uint64(_A) + np.uint64(_B)) & np.uint64(_M - 1)
    return [f"u{x:012x}" for x in v.tolist()]


def write_id_file(path: Path, n: int, shared: int, role: str, chunk: int = 1 << 20) -> None:
    """``n`` ids ``u%012x`` of the bijection: indices ``[0, shared)`` common, the rest the role's own."""
    own0 = 3 * n if role == "guest" else 6 * n
    with open(path, "w") as f:
        f.write("id\n")
        for s in range(0, n, chunk):
            i = np.arange(s, min(n, s + chunk), dtype=np.uint64)
            i = np.where(i < shared, i, i - np.uint64(shared) + np.uint64(own0))
            f.write("\n".join(bijection_ids(i)) + "\n")


def check_stream_output(path: Path, shared: int) -> str:
    """Every output id is a common one, each once, all of them; returns the file's digest."""
    inv = pow(_A, -1, _M)
    seen = np.zeros(shared, dtype=bool)
    count = 0
    with open(path) as f:
        next(f)
        for line in f:
            i = ((int(line[1:], 16) - _B) * inv) % _M
            if i >= shared or seen[i]:
                raise SystemExit(f"streamed PSI: {line.strip()} is not a common id, or repeated")
            seen[i] = True
            count += 1
    if count != shared:
        raise SystemExit(f"streamed PSI: {count} ids written, {shared} expected")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stream_party(ctx: Context, folder: str, chunk_rows: int) -> dict:
    from atoll.secure.psi import PsiParams
    from atoll.secure.psi_stream import stream_psi

    ctx, counter = _counted(ctx)
    t0, cpu0 = time.perf_counter(), _cpu()
    res = stream_psi(ctx, f"{folder}/{ctx.party}.csv", f"{folder}/{ctx.party}.out.csv",
                     params=PsiParams(protocol="kkrt", progress=False), chunk_rows=chunk_rows, workdir=folder)
    return _report(None, t0, cpu0, counter, size=res.size, phases=res.stats["seconds"])


def run_stream(n: int, overlap: float, chunk_rows: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="atoll-psi-bench-stream-"))
    shared = int(round(overlap * n))
    t0 = time.perf_counter()
    write_id_file(folder / "guest.csv", n, shared, "guest")
    write_id_file(folder / "host_0.csv", n, shared, "host")
    gen = time.perf_counter() - t0
    kw = {"folder": str(folder), "chunk_rows": chunk_rows}
    t0 = time.perf_counter()
    out = launch({"guest": Party("guest", stream_party, kw), "host_0": Party("host", stream_party, kw)},
                 mode="processes", timeout=3600)
    wall = time.perf_counter() - t0
    g, h = out["guest"], out["host_0"]
    dg = check_stream_output(folder / "guest.out.csv", shared)
    if dg != hashlib.sha256((folder / "host_0.out.csv").read_bytes()).hexdigest():
        raise SystemExit("streamed PSI: the host's output differs from the guest's (order or content)")
    fig = {"n": n, "intersection": shared, "seconds": max(g["seconds"], h["seconds"]), "launch_wall_seconds": wall,
           "file_generation_seconds": gen, "chunk_rows": chunk_rows,
           "bytes_sent": g["bytes_sent"] + h["bytes_sent"],
           "bytes_per_id": (g["bytes_sent"] + h["bytes_sent"]) / (2 * n),
           "peak_rss_mb_guest": g["peak_rss_mb"], "peak_rss_mb_host": h["peak_rss_mb"],
           "cpu_seconds_guest": g["cpu_seconds"], "cpu_seconds_host": h["cpu_seconds"],
           "phases_guest": {k: round(v, 2) for k, v in g["phases"].items()}}
    print(f"  kkrt streamed {n:>10,} x {n:<10,} {fig['seconds']:7.1f} s  {fig['bytes_sent'] / 1e6:8.1f} MB sent "
          f"({fig['bytes_per_id']:.0f} B/id)  peak RSS guest {g['peak_rss_mb']:.0f} MB, host {h['peak_rss_mb']:.0f} MB  "
          f"CPU guest {g['cpu_seconds']:.0f} s, host {h['cpu_seconds']:.0f} s  phases guest {fig['phases_guest']}",
          flush=True)
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--peer-n", type=int, default=None, help="ids per party, Atoll vs openmined-psi")
    ap.add_argument("--big-n", type=int, default=None, help="ids per party, Atoll alone")
    ap.add_argument("--ub-client", type=int, default=None, help="unbalanced: client ids")
    ap.add_argument("--ub-server", type=int, default=None, help="unbalanced: server ids")
    ap.add_argument("--stream-n", type=int, default=None, help="streamed KKRT: ids per party (0: skip)")
    ap.add_argument("--chunk-rows", type=int, default=1 << 20, help="streamed KKRT: ids read at a time")
    ap.add_argument("--workers", type=int, default=None, help="threads per party (default: cores)")
    ap.add_argument("--no-peer", action="store_true", help="skip openmined-psi")
    ap.add_argument("--no-ecdh-big", action="store_true", help="skip Atoll ECDH at --big-n")
    ap.add_argument("--only", default="peer,big,unbalanced,stream",
                    help="sections to run, comma-separated: peer, big, unbalanced, stream")
    args = ap.parse_args()
    only = set(args.only.split(","))
    peer_n = args.peer_n or (20_000 if args.quick else 100_000)
    big_n = args.big_n or (100_000 if args.quick else 1_000_000)
    ub_client = args.ub_client or (2_000 if args.quick else 10_000)
    ub_server = args.ub_server or (100_000 if args.quick else 1_000_000)
    stream_n = args.stream_n if args.stream_n is not None else (300_000 if args.quick else 10_000_000)

    from atoll.secure.psi_group import get_backend

    print(header("PSI (KKRT, ECDH, unbalanced, streamed) vs openmined-psi"))
    print(f"seed {args.seed}  overlap {args.overlap:.0%}  ids per party: {peer_n:,} (vs peer), {big_n:,} (Atoll "
          f"alone); unbalanced {ub_client:,} x {ub_server:,}; streamed {stream_n:,}; the machine may be shared "
          "with other work (see the load average)")
    print(f"Atoll ECDH-PSI on X25519, backend {get_backend().name!r}, workers per party {args.workers or 'all cores'};"
          " KKRT-PSI on AES + OT extension (one thread); both parties are separate processes over gRPC + mutual "
          "TLS on loopback; ids are 13-character strings")
    result: dict[str, Any] = {"hardware": hardware(), "seed": args.seed, "overlap": args.overlap, "quick": args.quick}
    if "peer" in only:
        peer_section(args, peer_n, result)
    if "big" in only:
        big_section(args, big_n, result)
    if "unbalanced" in only:
        result["unbalanced"] = run_unbalanced(args.seed, ub_client, ub_server)
    if "stream" in only and stream_n:
        result["kkrt_streamed"] = run_stream(stream_n, args.overlap, args.chunk_rows)
        if stream_n >= 10_000_000:
            st = result["kkrt_streamed"]
            ok = st["seconds"] <= 180 and max(st["peak_rss_mb_guest"], st["peak_rss_mb_host"]) <= 2048
            print(f"  10M x 10M goal (<= 3 min, <= 2 GB per party): {'met' if ok else 'NOT met'}")
    result["load_1min_end"] = hardware()["load_1min"]
    print(f"load average at end {result['load_1min_end']}")
    print(json.dumps(result))


def peer_section(args: Any, peer_n: int, result: dict) -> None:
    kkrt_small = run("atoll kkrt", kkrt_party, args.seed, peer_n, args.overlap, args.workers)
    ecdh_small = run("atoll ecdh", atoll_party, args.seed, peer_n, args.overlap, args.workers)
    result.update(kkrt_peer_n=kkrt_small, atoll_peer_n=ecdh_small)
    if not args.no_peer:
        try:
            import private_set_intersection.python  # noqa: F401
        except ImportError:
            print("  openmined-psi is not installed (pip install 'atoll[bench]'): peer skipped")
        else:
            peer = run("openmined-psi", openmined_party, args.seed, peer_n, args.overlap, None)
            result["openmined_peer_n"] = peer
            result["speedup_vs_openmined"] = peer["seconds"] / ecdh_small["seconds"]
            result["kkrt_speedup_vs_openmined"] = peer["seconds"] / kkrt_small["seconds"]
            print(f"  at {peer_n:,} x {peer_n:,}: Atoll KKRT is {result['kkrt_speedup_vs_openmined']:.1f}x faster "
                  f"than openmined-psi (goal >= 20x), Atoll ECDH {result['speedup_vs_openmined']:.1f}x; bytes per id "
                  f"openmined {peer['bytes_per_id']:.0f}, KKRT {kkrt_small['bytes_per_id']:.0f}, ECDH "
                  f"{ecdh_small['bytes_per_id']:.0f}", flush=True)


def big_section(args: Any, big_n: int, result: dict) -> None:
    big = run("atoll kkrt", kkrt_party, args.seed, big_n, args.overlap, args.workers)
    result["kkrt_big_n"] = big
    if not args.no_ecdh_big:
        ecdh_big = run("atoll ecdh", atoll_party, args.seed, big_n, args.overlap, args.workers)
        result["atoll_big_n"] = ecdh_big
        result["kkrt_speedup_vs_ecdh_big_n"] = ecdh_big["seconds"] / big["seconds"]
        print(f"  at {big_n:,} x {big_n:,}: KKRT {big['seconds']:.1f} s, ECDH {ecdh_big['seconds']:.1f} s "
              f"({result['kkrt_speedup_vs_ecdh_big_n']:.1f}x)")
    if big_n >= 1_000_000:
        print(f"  1M x 1M goal (<= 10 s on 2 cores): {'met' if big['seconds'] <= 10 else 'NOT met'} by KKRT")


if __name__ == "__main__":
    sys.exit(main())
