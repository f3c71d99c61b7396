"""The task executor: this node's party of a job runs in a worker process, through the node's endpoint.

The node owns the federation endpoint (one gRPC server for every job); a worker process
owns nothing but its computation. The worker runs :func:`atoll.jobs.runner.run_party` —
the same executor ``atoll run`` uses — with the components installed with Atoll, over
a :class:`RelayTransport` that hands every send and receive to the node over a local
pipe; the node moves them through the job's :class:`GrpcJobTransport` (counting the
bytes sent to each peer for the audit trail). Before each step the worker asks the node
for permission (``step``): the node re-checks the grant and the data's hash and records
the use. Step records, outputs, events and the log go straight to the node's store
(:class:`~atoll.node.store.SqlPartyRun`).

Cancelling kills the worker (and its HE pools, which die with it) and closes the job at
the endpoint, so the peers' pings see it closed and their receives fail within seconds.

The pipe carries wire-encoded dicts (no pickle): ``{id, op, ...}`` requests and
``{id, ok, payload | error, message}`` replies; party names are translated to node
names (the endpoint's identities) on the node side of the relay.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping

from atoll import errors, wire
from atoll.federation.transport import Payload, Transport, as_bytes

log = logging.getLogger(__name__)

_ERRORS: dict[str, type[errors.AtollError]] = {
    c.__name__: c for c in (errors.PeerFailed, errors.FederationTimeout, errors.FederationError,
                            errors.UnknownParty, errors.AuthError, errors.WireError, errors.ConfigError,
                            errors.DataError)}


class StepRefused(errors.AtollError):
    """The node refused to start a step (grant or data check failed)."""


# ====================================================================== worker side
class RelayTransport(Transport):
    """A worker's transport: every call is a request to the node over the pipe."""

    def __init__(self, conn: Any, party: str, job_id: str, nodes: Mapping[str, str]):
        self.party, self.job_id = party, job_id
        self._conn, self._nodes = conn, dict(nodes)
        self._lock = threading.Lock()
        self._next = 0
        self._pending: dict[int, list] = {}
        self._closed: str | None = None
        self._reader = threading.Thread(target=self._read, name="atoll-relay", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                msg = wire.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                self._fail_all("the node closed the pipe (node stopping)")
                return
            slot = self._pending.get(msg.get("id"))
            if slot is not None:
                slot[1] = msg
                slot[0].set()

    def _fail_all(self, why: str) -> None:
        self._closed = why
        for slot in list(self._pending.values()):
            slot[1] = {"ok": False, "error": "FederationError", "message": why}
            slot[0].set()

    def request(self, op: str, **fields: Any) -> Any:
        slot = [threading.Event(), None]
        with self._lock:
            if self._closed:
                raise errors.FederationError(self._closed)
            self._next += 1
            rid = self._next
            self._pending[rid] = slot
            self._conn.send_bytes(wire.dumps({"id": rid, "op": op, **fields}))
        slot[0].wait()
        self._pending.pop(rid, None)
        reply = slot[1]
        if not reply.get("ok"):
            raise _ERRORS.get(reply.get("error"), StepRefused if op == "step" else errors.FederationError)(
                reply.get("message", "refused"))
        return reply.get("payload")

    def send(self, receiver: str, address: str, payload: Payload) -> None:
        self.request("send", to=self._nodes[receiver], address=address, payload=as_bytes(payload))

    def recv(self, sender: str, address: str, timeout: float, describe: str) -> bytes:
        if sender not in self._nodes:
            raise errors.UnknownParty(f"{self.party!r} cannot receive from {sender!r}: not in this job")
        return self.request("recv", **{"from": self._nodes[sender]}, address=address, timeout=float(timeout),
                            describe=describe)

    def abort(self, reason: str) -> None:
        try:
            self.request("abort", reason=reason)
        except errors.AtollError:
            pass

    def report(self, **fields: Any) -> None:
        with self._lock:
            self._conn.send_bytes(wire.dumps({"id": 0, "op": "result", **fields}))


def worker_main(conn: Any, db_url: str, run_id: str, party: str, roles: dict[str, str], nodes: dict[str, str],
                job_text: str, source: str, skip: list[str], fed_job_id: str, work_dir: str,
                data_roots: list[str] | None = None, engine: dict[str, Any] | None = None) -> None:
    """A worker process: run this node's party of the job (see the module docstring); ``engine``:
    ``{"kind": ..., **options}`` of the node config's worker engine (local processes if absent)."""
    from atoll._process import die_with_parent
    from atoll.crypto import engine as worker_engine
    from atoll.federation import Context, failure_summary
    from atoll.jobs.runner import StepFailed, run_party
    from atoll.jobs.spec import parse_job
    from atoll.node.store import Database, SqlRunStore

    die_with_parent()
    relay = RelayTransport(conn, party, fed_job_id, nodes)
    db = Database(db_url)
    try:
        if engine and engine.get("kind", "local") != "local":
            worker_engine.set_factory(engine["kind"], **{k: v for k, v in engine.items() if k != "kind"})
        job = parse_job(job_text, source, check_data=False, data_roots=data_roots or ())
        ctx = Context(party, roles, relay, timeout=job.timeout)
        run = SqlRunStore(db, run_id, work_dir).party(party)
        run_party(ctx, job, run, skip, processes=True, before_step=lambda step: relay.request("step", step=step))
        relay.report(ok=True)
    except BaseException as e:  # noqa: BLE001 - reported to the node, which tells the peers the category
        summary = failure_summary(e)
        relay.abort(summary)
        step = e.step if isinstance(e, StepFailed) else None
        text = e.cause if isinstance(e, StepFailed) else f"{type(e).__name__}: {e}"
        relay.report(ok=False, summary=summary, error=text, step=step, trace=traceback.format_exc()[-4000:])
    finally:
        db.close()
        time.sleep(0.05)


# ====================================================================== node side
class TaskProcess:
    """One attempt of this node's party of one job: the worker process and its relay.

    ``transport`` is the job's :class:`~atoll.federation.grpc_transport.GrpcJobTransport`;
    ``before_step(step)`` raises to refuse a step; ``on_exit(result)`` is called once, with
    ``{"ok": True}`` or ``{"ok": False, "summary", "error", "step"}``.
    """

    def __init__(self, transport: Any, worker_args: dict[str, Any], before_step: Callable[[str], None],
                 on_exit: Callable[[dict[str, Any]], None]):
        self.transport = transport
        self.before_step, self.on_exit = before_step, on_exit
        self.bytes_sent: collections.Counter[str] = collections.Counter()
        self.started = time.time()
        self._send_lock = threading.Lock()
        self._result: dict[str, Any] | None = None
        self._stopped: str | None = None
        self._done = threading.Event()
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=worker_main, kwargs={"conn": child, **worker_args},
                                name=f"atoll-task-{worker_args['party']}", daemon=False)
        self._pool = ThreadPoolExecutor(32, thread_name_prefix="atoll-relay")
        self.proc.start()
        child.close()
        self._thread = threading.Thread(target=self._serve, name="atoll-task", daemon=True)
        self._thread.start()

    def _reply(self, rid: int, **fields: Any) -> None:
        try:
            with self._send_lock:
                self._conn.send_bytes(wire.dumps({"id": rid, **fields}))
        except (OSError, EOFError, ValueError):
            pass  # the worker is gone

    def _handle(self, msg: dict[str, Any]) -> None:
        rid, op = msg.get("id"), msg.get("op")
        try:
            if op == "send":
                payload = msg["payload"]
                self.transport.send(msg["to"], msg["address"], payload)
                self.bytes_sent[msg["to"]] += len(payload)
                self._reply(rid, ok=True)
            elif op == "recv":
                data = self.transport.recv(msg["from"], msg["address"], msg["timeout"], msg["describe"])
                self._reply(rid, ok=True, payload=bytes(data))
            elif op == "abort":
                self.transport.abort(msg["reason"])
                self._reply(rid, ok=True)
            elif op == "step":
                self.before_step(msg["step"])
                self._reply(rid, ok=True)
            else:
                self._reply(rid, ok=False, error="FederationError", message=f"unknown request {op!r}")
        except errors.AtollError as e:
            self._reply(rid, ok=False, error=type(e).__name__, message=str(e))
        except Exception as e:  # noqa: BLE001
            log.exception("relay request %s failed", op)
            self._reply(rid, ok=False, error="FederationError", message=f"{type(e).__name__}: {e}")

    def _serve(self) -> None:
        while True:
            try:
                msg = wire.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                break
            if msg.get("op") == "result":
                self._result = msg
                continue
            self._pool.submit(self._handle, msg)
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        if self._stopped:
            result = {"ok": False, "summary": "Cancelled", "error": self._stopped, "step": None,
                      "cancelled": True}
        elif self._result is None:
            result = {"ok": False, "summary": "WorkerDied",
                      "error": f"the worker process died (exit code {self.proc.exitcode}) without reporting",
                      "step": None}
        else:
            result = self._result
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.on_exit(result)
        finally:
            self._done.set()

    def stop(self, why: str) -> None:
        """Kill the worker (its step fails; the endpoint's job is closed by the caller)."""
        if self._done.is_set():
            return
        self._stopped = why
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)
            if self.proc.is_alive():
                self.proc.kill()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return not self._done.is_set()
