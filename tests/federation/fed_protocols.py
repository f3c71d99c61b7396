"""Module-level protocol functions (picklable, so the process launcher can run them)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np


def secure_sum_party(ctx, values):
    """Pairwise-masked sum: for each pair the smaller name draws a seed, adds the mask, the other subtracts it."""
    rng = np.random.default_rng(sum(map(ord, ctx.party)))
    masked = np.asarray(values, dtype=np.int64).copy()
    for peer in ctx.parties_of("input"):
        if peer == ctx.party:
            continue
        with ctx.scope("pair", "-".join(sorted((peer, ctx.party)))):
            if ctx.party < peer:
                seed = int(rng.integers(1 << 62))
                ctx.send(peer, "seed", seed)
                sign = 1
            else:
                seed = ctx.recv(peer, "seed")
                sign = -1
        masked += sign * np.random.default_rng(seed).integers(-(1 << 30), 1 << 30, masked.shape)
    ctx.send("sum", "masked", masked)
    return ctx.recv("sum", "total")


def sum_party(ctx):
    uploads = ctx.gather("input", "masked")
    total = sum(uploads.values())
    ctx.send("input", "total", total)
    return total


def echo_rounds(ctx, rounds):
    """guest sends x to every host each round, hosts answer x*their index; returns all answers."""
    out = []
    for r in range(rounds):
        with ctx.scope("round", r):
            if ctx.role == "guest":
                ctx.broadcast("host", "x", np.full(3, r, dtype=np.float64))
                out.append({p: v.tolist() for p, v in ctx.gather("host", "y").items()})
            else:
                x = ctx.recv("guest", "x")
                ctx.send("guest", "y", x * (int(ctx.party[-1]) + 1))
    return out


def fail_after_hello(ctx):
    ctx.send("guest", "hello", 1)
    raise ValueError("host data is broken")


def wait_for_result(ctx):
    ctx.recv("host", "hello")
    return ctx.recv("host", "never", timeout=120)


def die_hard(ctx):
    ctx.send("guest", "hello", 1)
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)


def _square(x):
    return x * x


def pool_party(ctx, n):
    """Starts worker processes of its own (as an HE pool does) and reports their pids."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        squares = list(pool.map(_square, range(n)))
        pids = set(pool.map(_pid, range(4)))
    return {"sum": sum(squares), "worker_pids": sorted(pids), "me": os.getpid()}


def _pid(_):
    return os.getpid()


def two_jobs_side_by_side(a, b, to: str, receiver: str, n: int) -> dict:
    """Jobs ``a`` and ``b`` (dicts of contexts over the same transports) each send ``n``
    numbers guest -> ``to`` concurrently; returns what ``receiver`` got in each job."""
    import threading

    out = {}

    def run(name, c, base):
        for i in range(n):
            c["guest"].send(to, "v", base + i)
        out[name] = [c[receiver].recv("guest", "v") for _ in range(n)]

    ts = [threading.Thread(target=run, args=("a", a, 0)), threading.Thread(target=run, args=("b", b, 1000))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def listening(pid=None):
    """``[(ip, port)]`` of the TCP sockets a process (default: this one) listens on. An IPv6
    socket bound to an IPv4-mapped address (``::ffff:127.0.0.1``, what gRPC binds for
    ``127.0.0.1``) accepts that IPv4 address only, and is reported as it."""
    import psutil

    proc = psutil.Process(pid)
    conns = proc.net_connections("inet") if hasattr(proc, "net_connections") else proc.connections("inet")
    return sorted((c.laddr.ip.removeprefix("::ffff:"), c.laddr.port) for c in conns
                  if c.status == psutil.CONN_LISTEN)


def report_listening(ctx):
    ctx.send([p for p in ctx.parties if p != ctx.party], "hi", 1)
    ctx.gather([p for p in ctx.parties if p != ctx.party], "hi")
    return listening()
