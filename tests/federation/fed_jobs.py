"""Party code for the concurrent-jobs test: one gRPC endpoint per party process, two jobs at once.

Module level, so the process launcher can run it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from atoll.federation import Context, Transport, failure_summary


class KilledTask(RuntimeError):
    pass


class KillAfter(Transport):
    """A job transport whose task dies after ``n`` sends (as a killed worker would, mid-protocol)."""

    def __init__(self, inner: Transport, n: int):
        self.inner, self.n = inner, n
        self.party, self.job_id = inner.party, inner.job_id

    def send(self, receiver: str, address: str, payload: Any) -> None:
        if self.n <= 0:
            raise KilledTask("task killed at /srv/secret/path (never shown to peers)")
        self.n -= 1
        self.inner.send(receiver, address, payload)

    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        return self.inner.recv(sender, address, timeout, describe)


def two_jobs(ctx: Context, job_text: str, run_root: str, victim: str, kill_after: int) -> dict:
    """Run jobs J and K of the same pipeline at once over this party's one endpoint; the
    victim's task in J dies after ``kill_after`` sends, silently (its node closes the job)."""
    from atoll.jobs.runner import run_party
    from atoll.jobs.spec import parse_job
    from atoll.jobs.store import RunFolder

    endpoint = ctx.transport.endpoint
    job = parse_job(job_text, "<job>")
    out: dict[str, dict] = {}

    def run(job_id: str) -> None:
        transport = endpoint.open_job(job_id, ctx.parties)
        killed = job_id == "job-J" and ctx.party == victim
        c = Context(ctx.party, ctx.parties, KillAfter(transport, kill_after) if killed else transport,
                    timeout=60)
        t0 = time.monotonic()
        try:
            run_party(c, job, RunFolder(Path(run_root) / job_id).party(ctx.party), skip=[])
            out[job_id] = {"ok": True, "seconds": time.monotonic() - t0}
        except BaseException as e:  # noqa: BLE001 - reported to the test
            out[job_id] = {"ok": False, "error": f"{type(e).__name__}: {e}", "seconds": time.monotonic() - t0}
            if not killed:
                transport.abort(failure_summary(e))
        finally:
            endpoint.close_job(job_id)
            out.setdefault("closed_at", {})[job_id] = time.monotonic()

    threads = [threading.Thread(target=run, args=(j,)) for j in ("job-J", "job-K")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["open_after"] = [j for j in endpoint.open_jobs() if j != ctx.job_id]  # not the launch's own
    out["stats_after"] = {j: s for j, s in endpoint.stats().items() if j != ctx.job_id}
    # stay up until every party is done with both jobs (the control job of the launch)
    ctx.send(list(ctx.parties), "done", 1)
    ctx.gather(list(ctx.parties), "done")
    out.pop("closed_at")
    return out
