"""The node: one organisation's long-running service (``atoll node start``).

It owns ONE :class:`~atoll.federation.grpc_transport.GrpcEndpoint` (gRPC + mTLS, every job
at once) that also serves the control channel (:mod:`atoll.node.control`), the store
(:mod:`atoll.node.store`), the data registry and grants (:mod:`atoll.node.data`), the
audit chain (:mod:`atoll.node.audit`) and the executor (:mod:`atoll.node.executor`); the
REST API (:mod:`atoll.node.api`) is its users' door.

A job's life (the initiator is the node it was submitted to; it coordinates, and computes
nothing of the others'):

1. **propose** — the initiator checks the job against its own policy
   (:mod:`atoll.node.policy`), signs the proposal ``{job_id, name, initiator, job_text,
   parties, created, nonce, atoll}`` and sends it to every other party's node, waiting
   for nodes that are not up yet (``waiting for node 'shop' at ... (40 s); job timeout
   30 min``) until ``job_timeout``.
2. **decide** — each node verifies the proposal (signed by the initiator, sent by it, not
   stale, its job id never seen with other content), checks its own policy, and accepts
   (an auto-approve rule) or waits for its users (``atoll job approve|reject``); one
   rejection ends the job everywhere.
3. **plan + start** — when all accepted, the initiator asks each node what changed at
   its party since the last attempt (:func:`atoll.jobs.resume.party_changes`; all steps
   on a first run), combines the answers and tells every node which steps to keep; each
   node re-checks its policy and starts its worker for attempt N (federation job
   ``JOB.N``).
4. **run** — each node reports its task states to the initiator (error category + step,
   never text); the initiator shows every party's.
5. **end** — each node sends its result and its signed audit chain head; the initiator
   ends the job and sends every head to every node. A node's own model parts go to its
   model store, its metrics to its report.

A failure at one party stops the job at every party (their receives fail within seconds,
naming the party); a cancel kills every party's worker. A node that restarts marks its
in-flight step failed and asks the initiator to resume: the initiator starts attempt N+1,
in which every party keeps the steps it completed unchanged.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import yaml
from sqlalchemy import func, select

from atoll._version import __version__
from atoll.errors import AtollError, ConfigError
from atoll.federation.grpc_transport import GrpcEndpoint
from atoll.federation.transport import clean_reason
from atoll.jobs import registry as components
from atoll.jobs.artifacts import encode_output
from atoll.jobs.resume import combine, party_changes
from atoll.node.audit import AuditLog
from atoll.node.config import NodeConfig
from atoll.node.control import ControlClient, ControlService, Refused, Unreachable
from atoll.node.data import PolicyRefused, Registry, Use, check_grant, current_hash
from atoll.node.executor import TaskProcess
from atoll.node.policy import Decision, check_proposal, check_static, nodes_of
from atoll.node.signing import AUDIT_HEAD, PROPOSAL, Verifier
from atoll.node.store import Database, Job, JobParty, Model, SqlRunStore, Task

log = logging.getLogger(__name__)
#: a failure summary of a party that failed waiting on another one (``failure_summary``)
_PEER_IN_SUMMARY = re.compile(r"\(peer '([A-Za-z0-9_.:-]+)'\)")

TERMINAL = ("done", "failed", "rejected", "cancelled")


def fmt_duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _category(cause: str) -> str:
    head = str(cause).partition(":")[0].strip()
    return head if head.isidentifier() else "Error"


class Node:
    """One organisation's node (see the module docstring)."""

    def __init__(self, cfg: NodeConfig, peer_wait_step: float = 2.0):
        self.cfg = cfg
        self.name = cfg.name
        self.db = Database(cfg.store_url)
        self.db.upgrade()
        self.signer = cfg.signer()
        self.audit = AuditLog(self.db, self.name, self.signer)
        self.registry = Registry(self.db, self.name, self.signer)
        self.work_dir = cfg.resolve(cfg.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._tasks: dict[str, TaskProcess] = {}
        self._decisions: dict[str, Decision] = {}
        self._attempts: dict[str, int] = {}
        self._order: dict[str, dict[str, int]] = {}
        self._pool = ThreadPoolExecutor(32, thread_name_prefix=f"atoll-node-{self.name}")
        self._closing = False
        self._peer_wait_step = peer_wait_step
        self.control = ControlService(cfg, self.db, self._on_message)
        self.endpoint = GrpcEndpoint(self.name, cfg.addresses(), cfg.tls(), listen=cfg.federation_listen,
                                     services=[self.control.rpc_handler()], connect_timeout=120.0)
        self.client = ControlClient(cfg, self.signer, self.endpoint.channel)
        self.audit.append("node.started", address=cfg.federation, partners=[p.name for p in cfg.partners],
                          atoll=__version__)
        self._recover()

    # ================================================================== helpers
    def _job_row(self, s: Any, job_id: str) -> Job:
        job = s.get(Job, job_id)
        if job is None:
            raise ConfigError(f"no job {job_id!r} at node {self.name!r} (atoll job list shows them)")
        return job

    def _set(self, job_id: str, **fields: Any) -> None:
        with self.db.session.begin() as s:
            job = self._job_row(s, job_id)
            for k, v in fields.items():
                setattr(job, k, v)
            job.updated = time.time()

    def _parties(self, job_id: str) -> dict[str, dict[str, Any]]:
        with self.db.session() as s:
            rows = s.execute(select(JobParty).where(JobParty.job_id == job_id)).scalars()
            return {r.party: {"node": r.node, "role": r.role, "decision": r.decision, "reason": r.reason,
                              "state": r.state} for r in rows}

    def _set_party(self, job_id: str, party: str, **fields: Any) -> None:
        with self.db.session.begin() as s:
            row = s.get(JobParty, (job_id, party))
            if row is not None:
                for k, v in fields.items():
                    setattr(row, k, v)

    def _set_task(self, job_id: str, party: str, step: str, component: str, state: str, attempt: int,
                  error: str = "", t: float | None = None) -> None:
        t = t or time.time()
        with self.db.session.begin() as s:
            row = s.get(Task, (job_id, party, step))
            if row is None:
                row = Task(job_id=job_id, party=party, step=step, component=component, state=state,
                           attempt=attempt, error=error)
                s.add(row)
            elif row.attempt > attempt:
                return  # a late report of an older attempt
            row.state, row.attempt, row.error, row.component = state, attempt, error, component
            if state == "running":
                row.started, row.finished = t, None
            elif state in ("done", "failed", "skipped", "cancelled"):
                row.finished = t

    def _waiting(self, job_id: str, peer: str, since: float, deadline: float, what: str) -> str:
        addr = self.cfg.partner(peer).address if self.cfg.partner(peer) else "?"
        msg = (f"waiting for node {peer!r} at {addr} ({time.time() - since:.0f} s); "
               f"job timeout {fmt_duration(self.cfg.job_timeout)}")
        log.info("job %s: %s (%s)", job_id, msg, what)
        try:
            self._set(job_id, message=msg)
        except AtollError:
            pass
        return msg

    def _deliver(self, peer: str, kind: str, payload: dict[str, Any], job_id: str, deadline: float,
                 event: str | None = None, wait_message: bool = True) -> dict[str, Any]:
        """Send a control message, waiting for a node that is not up (yet) until ``deadline``."""
        since, delay = time.time(), 0.25
        while True:
            try:
                return self.client.call(peer, kind, payload, event)
            except Unreachable:
                if self._closing or time.time() + delay > deadline:
                    raise Unreachable(f"node {peer!r} at {self.cfg.partner(peer).address} did not answer "
                                      f"within the job timeout ({fmt_duration(self.cfg.job_timeout)})") from None
                if wait_message and time.time() - since > 1.0:
                    self._waiting(job_id, peer, since, deadline, kind)
                time.sleep(delay)
                delay = min(delay * 2, self._peer_wait_step)

    def _background(self, fn: Callable[..., Any], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001
                log.exception("background %s failed", getattr(fn, "__name__", fn))
        self._pool.submit(run)

    def _deadline(self, job_id: str) -> float:
        with self.db.session() as s:
            return self._job_row(s, job_id).created + self.cfg.job_timeout

    # ================================================================== submit (initiator)
    def submit(self, job_text: str, user: str = "?") -> dict[str, Any]:
        """Propose a job to every party's node (step 1); refused here with the reason if this
        node's own policy does not allow it."""
        try:
            raw = check_static(job_text)
            mapping = nodes_of(raw)
        except PolicyRefused as e:
            self.audit.append("proposal.refused", actor=user, reason=str(e))
            raise
        name = str(raw.get("name") or "job")
        import re

        job_id = f"{re.sub(r'[^A-Za-z0-9_-]', '_', name)[:48]}-{secrets.token_hex(6)}"
        parties = {p: {"node": n, "role": r} for p, (n, r) in mapping.items()}
        try:
            decision = check_proposal(self.cfg, self.registry, job_id, self.name, job_text, parties)
        except PolicyRefused as e:
            self.audit.append("proposal.refused", actor=user, reason=str(e), job=name)
            raise
        proposal = {"job_id": job_id, "name": name, "initiator": self.name, "job_text": job_text,
                    "parties": parties, "created": time.time(), "nonce": secrets.token_hex(16),
                    "atoll": __version__}
        sig = self.signer.sign_doc(PROPOSAL, proposal)
        event = secrets.token_hex(16)
        now = time.time()
        with self.db.session.begin() as s:
            s.add(Job(id=job_id, name=name, initiator=self.name, own_party=decision.party, state="proposed",
                      proposal=proposal, signature=sig, attempt=0, message="", created=now, updated=now))
            for p, v in parties.items():
                mine = v["node"] == self.name
                s.add(JobParty(job_id=job_id, party=p, node=v["node"], role=v["role"],
                               decision="accepted" if mine else None, decided=now if mine else None,
                               reason=f"submitted by {user}" if mine else ""))
        self._decisions[job_id] = decision
        self.audit.append("proposal.created", job_id=job_id, event_id=event, actor=user, name=name,
                          parties=parties, components=decision.components,
                          grant=decision.grant["id"] if decision.grant else None,
                          dataset=_ds(decision))
        for p, v in parties.items():
            if v["node"] != self.name:
                self._background(self._propose_to, job_id, v["node"], p, proposal, sig, event)
        self._maybe_start(job_id)
        return self.job(job_id)

    def _propose_to(self, job_id: str, node: str, party: str, proposal: dict, sig: str, event: str) -> None:
        try:
            reply = self._deliver(node, "propose", {"proposal": proposal, "signature": sig}, job_id,
                                  self._deadline(job_id), event)
        except (Unreachable, Refused, AtollError) as e:
            self._on_decision(job_id, party, "rejected", str(e), node)
            return
        self.audit.append("proposal.sent", job_id=job_id, peer=node, ref=event, party=party)
        with self._lock, self.db.session.begin() as s:
            job = self._job_row(s, job_id)
            if job.message.startswith("waiting for node"):
                job.message = ""
        if reply.get("decision") in ("accepted", "rejected"):
            self._on_decision(job_id, party, reply["decision"], str(reply.get("reason", "")), node)
        else:
            self._set_party(job_id, party, state="awaiting approval")

    def _on_decision(self, job_id: str, party: str, decision: str, reason: str, node: str) -> None:
        with self._lock:
            with self.db.session() as s:
                state = self._job_row(s, job_id).state
            if state != "proposed":
                return
            self._set_party(job_id, party, decision=decision, reason=clean_reason(reason, 500),
                            decided=time.time(), state="")
            self.audit.append(f"decision.{decision}", job_id=job_id, peer=node, party=party, reason=reason[:500])
            if decision == "rejected":
                msg = f"rejected by node {node!r} (party {party!r}): {reason}"
                self._set(job_id, state="rejected", message=msg)
                self._finish_everywhere(job_id, "rejected", msg)
                return
        self._maybe_start(job_id)

    def _maybe_start(self, job_id: str) -> None:
        parties = self._parties(job_id)
        if all(v["decision"] == "accepted" for v in parties.values()):
            with self._lock:
                with self.db.session() as s:
                    if self._job_row(s, job_id).state != "proposed":
                        return
                self._set(job_id, state="starting", message="every party accepted; starting")
            self._background(self._start_attempt, job_id)

    # ================================================================== start (initiator)
    def _start_attempt(self, job_id: str) -> None:
        with self.db.session() as s:
            job = self._job_row(s, job_id)
            attempt = job.attempt + 1
        if attempt > self.cfg.max_attempts:
            self._fail(job_id, f"gave up after {self.cfg.max_attempts} attempts")
            return
        self._set(job_id, attempt=attempt, state="starting")
        parties = self._parties(job_id)
        deadline = time.time() + self.cfg.job_timeout
        changes: dict[str, dict[str, list[str]]] = {}
        try:
            for p, v in parties.items():
                if v["node"] == self.name:
                    changes[p] = self._plan(job_id)
                else:
                    changes[p] = self._deliver(v["node"], "plan", {"job_id": job_id, "attempt": attempt}, job_id,
                                               deadline)["changes"]
            spec = self._decision(job_id).job
            plan = combine(spec, changes)
            self.audit.append("job.plan", job_id=job_id, attempt=attempt, keep=plan.keep, rerun=plan.rerun)
            for p, v in parties.items():
                if v["node"] != self.name:
                    self._deliver(v["node"], "start", {"job_id": job_id, "attempt": attempt, "skip": plan.keep},
                                  job_id, deadline)
            self._set(job_id, state="running", message=(f"attempt {attempt}: kept {', '.join(plan.keep)}"
                                                        if plan.keep and attempt > 1 else ""))
            self._start_local(job_id, attempt, plan.keep)
        except (AtollError, KeyError) as e:
            self._fail(job_id, f"could not start attempt {attempt}: {e}")

    # ================================================================== party side
    def _decision(self, job_id: str, recheck: bool = False) -> Decision:
        if recheck or job_id not in self._decisions:
            with self.db.session() as s:
                job = self._job_row(s, job_id)
                proposal = dict(job.proposal)
            self._decisions[job_id] = check_proposal(self.cfg, self.registry, job_id, proposal["initiator"],
                                                     proposal["job_text"], proposal["parties"])
        return self._decisions[job_id]

    def _plan(self, job_id: str) -> dict[str, list[str]]:
        d = self._decision(job_id, recheck=True)
        store = SqlRunStore(self.db, job_id, self.work_dir)
        if not store.exists():
            store.create(d.job.text, {"name": d.job.name, "seed": d.job.seed, "source": d.job.source,
                                      "mode": "node", "status": "created"})
        return party_changes(d.job, store.party(d.party))

    def _start_local(self, job_id: str, attempt: int, skip: list[str]) -> None:
        with self._lock:
            old = self._tasks.pop(job_id, None)
            prev = self._attempts.get(job_id)
            self._attempts[job_id] = attempt
        if old is not None:
            old.stop("a new attempt started")
            old.wait(15)
        if prev is not None:
            self.endpoint.close_job(f"{job_id}.{prev}")
        d = self._decision(job_id, recheck=True)
        with self.db.session() as s:
            job = self._job_row(s, job_id)
            initiator = job.initiator
        parties = self._parties(job_id)
        store = SqlRunStore(self.db, job_id, self.work_dir)
        if not store.exists():
            self._plan(job_id)
        store.update_meta(status="running", attempt=attempt, resumed_skip=skip, started=time.time())
        fed_id = f"{job_id}.{attempt}"
        nodes = {p: v["node"] for p, v in parties.items()}
        transport = self.endpoint.open_job(fed_id, {v["node"]: v["role"] for v in parties.values()})
        if self.name != initiator:
            self._set(job_id, state="running", attempt=attempt, message="")
        self.audit.append("job.started", job_id=job_id, attempt=attempt, skip=skip, party=d.party)
        cursor = [store.party(d.party).events()[1]]
        args = {"db_url": self.db.url, "run_id": job_id, "party": d.party,
                "roles": {p: v["role"] for p, v in parties.items()}, "nodes": nodes, "job_text": d.job.text,
                "source": d.job.source, "skip": list(skip), "fed_job_id": fed_id, "work_dir": str(self.work_dir),
                "data_roots": list(d.job.data_roots),
                "engine": {"kind": self.cfg.engine.kind, **self.cfg.engine.options()}}
        task = TaskProcess(transport, args, lambda step: self._before_step(job_id, attempt, step),
                           lambda result: self._on_exit(job_id, attempt, result, cursor))
        with self._lock:
            self._tasks[job_id] = task
        self._background(self._watch, job_id, attempt, task, cursor)

    def _before_step(self, job_id: str, attempt: int, step: str) -> None:
        """Every task start: the data's hash and the grant (signature, limits) again; record the use."""
        d = self._decision(job_id)
        comp = d.job.component(step).component
        if d.dataset is not None:
            from pathlib import Path

            path = Path(d.dataset["path"])
            try:
                sha = current_hash(path)
            except OSError:
                sha = ""
            if sha != d.dataset["sha256"]:
                self.audit.append("grant.refused", job_id=job_id, step=step, reason="data changed")
                raise PolicyRefused(f"data set {d.dataset['name']!r} (version {d.dataset['version']}) changed "
                                    "since it was registered; register it again")
            grant = next((g for g in self.registry.grants(d.dataset["name"]) if g["id"] == d.grant["id"]), None)
            with self.db.session() as s:
                initiator = self._job_row(s, job_id).initiator
            use = Use(d.dataset["name"], job_id, initiator,
                      frozenset(v["node"] for v in self._parties(job_id).values()) - {self.name},
                      tuple((c.id, c.component, components.get(c.component).Params.model_validate(c.params)
                             .model_dump()) for c in d.job.pipeline))
            try:
                if grant is None:
                    raise PolicyRefused(f"the grant of {d.dataset['name']!r} is gone")
                check_grant(grant, self.signer.public, use, self.registry.uses(grant["id"], exclude_job=job_id))
            except PolicyRefused as e:
                self.audit.append("grant.refused", job_id=job_id, step=step, component=comp, reason=str(e))
                raise
            self.registry.record_use(grant["id"], job_id, step, comp, d.dataset["version"], sha)
            self.audit.append("grant.used", job_id=job_id, grant=grant["id"], dataset=d.dataset["name"],
                              version=d.dataset["version"], sha256=sha, component=comp, step=step)
        self.audit.append("task.started", job_id=job_id, step=step, component=comp, attempt=attempt,
                          party=d.party)

    def _watch(self, job_id: str, attempt: int, task: TaskProcess, cursor: list[int]) -> None:
        while task.running:
            self._forward_events(job_id, attempt, cursor)
            time.sleep(0.3)

    def _forward_events(self, job_id: str, attempt: int, cursor: list[int]) -> None:
        d = self._decision(job_id)
        with self._lock:
            evs, cursor[0] = SqlRunStore(self.db, job_id, self.work_dir).party(d.party).events(cursor[0])
        for ev in evs:
            kind = ev.get("event")
            state = {"start": "running", "done": "done", "failed": "failed", "skipped": "skipped"}.get(kind)
            if state is None:
                continue
            err = ""
            if kind == "failed":
                err = f"{_category(ev.get('cause', ''))} at step {ev.get('step')!r}"
            self._set_task(job_id, d.party, ev["step"], ev.get("component", ""), state, attempt,
                           ev.get("cause", "") if kind == "failed" else "", ev.get("t"))
            self._tell_initiator(job_id, "task", {"job_id": job_id, "attempt": attempt, "party": d.party,
                                                  "step": ev["step"], "component": ev.get("component", ""),
                                                  "state": state, "error": err, "t": ev.get("t")},
                                 tries=3)

    def _tell_initiator(self, job_id: str, kind: str, payload: dict[str, Any], tries: int | None = None) -> None:
        with self.db.session() as s:
            initiator = self._job_row(s, job_id).initiator
        if initiator == self.name:
            return
        if tries is None:
            try:
                self._deliver(initiator, kind, payload, job_id, time.time() + self.cfg.job_timeout,
                              wait_message=False)
            except (Unreachable, Refused) as e:
                log.warning("job %s: could not tell %s (%s): %s", job_id, initiator, kind, e)
            return
        for i in range(tries):
            try:
                self.client.call(initiator, kind, payload)
                return
            except Unreachable:
                time.sleep(0.5 * (i + 1))
            except Refused as e:
                log.warning("job %s: %s refused %s: %s", job_id, initiator, kind, e)
                return

    def _on_exit(self, job_id: str, attempt: int, result: dict[str, Any], cursor: list[int]) -> None:
        try:
            self._forward_events(job_id, attempt, cursor)
        except Exception:  # noqa: BLE001
            log.exception("job %s: last events", job_id)
        task = self._tasks.get(job_id)
        with self._lock:
            if self._tasks.get(job_id) is task and task is not None and not task.running:
                pass
        self.endpoint.close_job(f"{job_id}.{attempt}")
        d = self._decision(job_id)
        sent = dict(task.bytes_sent) if task is not None else {}
        ok = bool(result.get("ok"))
        store = SqlRunStore(self.db, job_id, self.work_dir)
        if ok:
            self.audit.append("task.finished", job_id=job_id, attempt=attempt, party=d.party, bytes_sent=sent)
            store.update_meta(status="done", finished=time.time())
            self._store_models(job_id, d)
        else:
            summary = clean_reason(result.get("summary", "Error"))
            self.audit.append("task.failed", job_id=job_id, attempt=attempt, party=d.party, bytes_sent=sent,
                              category=summary, step=result.get("step"), cancelled=bool(result.get("cancelled")))
            store.update_meta(status="failed", error=str(result.get("error", ""))[:2000])
            if result.get("cancelled"):  # the steps it was in stop here, and the initiator shows so
                for t in self.tasks(job_id):
                    if t["party"] == d.party and t["state"] == "running":
                        self._set_task(job_id, d.party, t["step"], t["component"], "cancelled", attempt)
                        self._tell_initiator(job_id, "task", {
                            "job_id": job_id, "attempt": attempt, "party": d.party, "step": t["step"],
                            "component": t["component"], "state": "cancelled", "error": "", "t": time.time()},
                            tries=2)
        head = self.audit.signed_head(job_id)
        payload = {"job_id": job_id, "attempt": attempt, "party": d.party, "ok": ok,
                   "summary": clean_reason(result.get("summary", "")), "step": result.get("step"),
                   "cancelled": bool(result.get("cancelled")), "head": head}
        with self.db.session() as s:
            initiator = self._job_row(s, job_id).initiator
        if initiator == self.name:
            if ok:
                self._report(job_id, d, store)
            self._on_party_done(payload, own_error=str(result.get("error", "")))
        else:
            if not ok and not result.get("cancelled"):
                with self.db.session() as s:
                    if self._job_row(s, job_id).state not in TERMINAL:
                        self._set(job_id, message=f"failed at {d.party!r}: {result.get('error', '')}"[:2000])
            self._tell_initiator(job_id, "party_done", payload)
            if ok:
                self._report(job_id, d, store)

    def _report(self, job_id: str, d: Decision, store: SqlRunStore) -> None:
        """This party's report (its steps, its metrics, plots)."""
        try:
            from atoll.jobs.report import build_report

            build_report(d.job, store)
        except Exception:  # noqa: BLE001 - a report problem never fails a finished job
            log.exception("job %s: report", job_id)

    def _store_models(self, job_id: str, d: Decision) -> None:
        import hashlib

        store = SqlRunStore(self.db, job_id, self.work_dir).party(d.party)
        for c in d.job.pipeline:
            cls = components.get(c.component)
            if "model" not in {k for k, v in cls.outputs.items() if v == "model"}:
                continue
            out = store.outputs(c.id)
            if "model" not in out:
                continue
            fmt, data = encode_output(out["model"])
            sha = hashlib.sha256(data).hexdigest()
            name = f"{d.job.name}.{c.id}"
            with self.db.session.begin() as s:
                mid = f"{job_id}.{c.id}.{d.party}"
                if s.get(Model, mid) is not None:
                    continue
                version = (s.execute(select(func.max(Model.version)).where(Model.name == name,
                                                                          Model.party == d.party)).scalar() or 0) + 1
                s.add(Model(id=mid, name=name, version=version, job_id=job_id, party=d.party, step=c.id,
                            component=c.component, sha256=sha, created=time.time(), data=data))
            self.audit.append("model.stored", job_id=job_id, model=mid, name=name, version=version, sha256=sha)

    # ================================================================== end (initiator)
    def _on_party_done(self, p: dict[str, Any], own_error: str = "") -> None:
        job_id, attempt, party = p["job_id"], int(p["attempt"]), p["party"]
        with self._lock:
            with self.db.session() as s:
                job = self._job_row(s, job_id)
                state, cur = job.state, job.attempt
            if attempt != cur or state in ("rejected", "cancelled", "done"):
                return
            heads = p.get("head")
            if heads:
                self._keep_head(heads, party)
            self._set_party(job_id, party, state="done" if p["ok"] else "failed")
            parties = self._parties(job_id)
            if not p["ok"]:
                if state == "failed":
                    return
                node = parties[party]["node"]
                summary = str(p.get("summary", ""))
                shared = f"party {party!r} (node {node!r}) failed: {summary}"
                blamed = _PEER_IN_SUMMARY.search(summary)
                if blamed and blamed.group(1) in parties and blamed.group(1) != party:
                    # it failed waiting on another party: name that party's node first (the cause)
                    other = blamed.group(1)
                    shared = (f"party {other!r} (node {parties[other]['node']!r}) stopped answering; "
                              + shared)
                self._fail(job_id, f"party {party!r} (node {node!r}) failed: {own_error}" if own_error else shared,
                           shared)
                return
            if not all(v["state"] == "done" for v in parties.values()):
                return
            self._set(job_id, state="done", message="")
        self._finish_everywhere(job_id, "done", "")

    def _keep_head(self, head: dict[str, Any], party: str) -> None:
        node = head.get("node")
        if node == self.name:
            return
        try:
            ok = self.cfg.partner_verifier(node).verify_doc(
                AUDIT_HEAD, {k: head[k] for k in ("node", "seq", "hash", "job_id")}, head.get("signature", ""))
        except (AtollError, KeyError):
            ok = False
        if ok:
            self.audit.keep_head(head)
            self.audit.append("audit.head_received", job_id=head["job_id"], peer=node, seq=head["seq"],
                              hash=head["hash"])
        else:
            self.audit.append("audit.head_refused", job_id=head.get("job_id"), peer=node, reason="bad signature")

    def _fail(self, job_id: str, msg: str, shared: str | None = None) -> None:
        """End the job as failed: ``msg`` is shown here, ``shared`` (category and step only)
        is what the partners are told."""
        with self._lock:
            with self.db.session() as s:
                if self._job_row(s, job_id).state in TERMINAL:
                    return
            self._set(job_id, state="failed", message=msg[:4000])
        self.audit.append("job.failed", job_id=job_id, reason=clean_reason(shared or msg, 500))
        self._stop_local(job_id, "the job failed")
        self._finish_everywhere(job_id, "failed", shared or msg)

    def _finish_everywhere(self, job_id: str, state: str, msg: str) -> None:
        with self.db.session() as s:
            attempt = self._job_row(s, job_id).attempt  # the attempt that ended (see _msg_finish)
        heads = [h for h in self.audit.heads(job_id=job_id)]
        if state == "done":
            heads.append(self.audit.signed_head(job_id))
        self.audit.append("job.finished", job_id=job_id, state=state,
                          heads={h["node"]: [h["seq"], h["hash"]] for h in heads})
        parties = self._parties(job_id)
        for v in parties.values():
            if v["node"] != self.name:
                self._background(self._send_finish, v["node"], job_id, state, msg, heads, attempt)

    def _send_finish(self, node: str, job_id: str, state: str, msg: str, heads: list[dict],
                     attempt: int = 0) -> None:
        try:
            self._deliver(node, "finish", {"job_id": job_id, "state": state, "message": _safe(msg),
                                           "heads": heads, "attempt": attempt}, job_id, time.time() + 60,
                          wait_message=False)
        except (Unreachable, Refused) as e:
            log.warning("job %s: could not tell %s it ended: %s", job_id, node, e)

    # ================================================================== user actions
    def decide(self, job_id: str, accept: bool, user: str, reason: str = "") -> dict[str, Any]:
        """A user's approval or rejection of a proposal waiting at this node."""
        with self._lock:
            with self.db.session() as s:
                job = self._job_row(s, job_id)
                if job.state != "pending":
                    raise ConfigError(f"job {job_id!r} is {job.state}, not waiting for this node's decision")
                initiator, party = job.initiator, job.own_party
            if accept:
                try:
                    self._decision(job_id, recheck=True)
                except PolicyRefused as e:
                    raise PolicyRefused(f"cannot approve: {e}") from None
            decision = "accepted" if accept else "rejected"
            self._set(job_id, state="accepted" if accept else "rejected",
                      message="" if accept else f"rejected here by {user}: {reason}")
            self._set_party(job_id, party, decision=decision, reason=reason, decided=time.time())
        self.audit.append(f"decision.{decision}", job_id=job_id, actor=user, reason=reason[:500])
        self._background(self._deliver_decision, job_id, initiator, party, decision, reason or f"by {user}")
        return self.job(job_id)

    def _deliver_decision(self, job_id: str, initiator: str, party: str, decision: str, reason: str) -> None:
        try:
            self._deliver(initiator, "decision", {"job_id": job_id, "party": party, "decision": decision,
                                                  "reason": reason}, job_id, self._deadline(job_id),
                          wait_message=False)
        except (Unreachable, Refused) as e:
            self._set(job_id, message=f"could not tell the initiator: {e}")

    def cancel(self, job_id: str, user: str, reason: str = "cancelled") -> dict[str, Any]:
        with self.db.session() as s:
            job = self._job_row(s, job_id)
            state, initiator = job.state, job.initiator
        if state in TERMINAL:
            raise ConfigError(f"job {job_id!r} already ended ({state})")
        self.audit.append("job.cancel", job_id=job_id, actor=user, reason=reason)
        if initiator == self.name:
            self._cancel_everywhere(job_id, f"cancelled by {user} at {self.name!r}")
        else:
            self._set(job_id, state="cancelled", message=f"cancelled here by {user}")
            self._stop_local(job_id, "cancelled")
            self._background(self._tell_initiator, job_id, "cancel_request", {"job_id": job_id,
                                                                               "reason": f"cancelled at {self.name!r}"})
        return self.job(job_id)

    def _cancel_everywhere(self, job_id: str, msg: str) -> None:
        with self._lock:
            with self.db.session() as s:
                if self._job_row(s, job_id).state in TERMINAL:
                    return
            self._set(job_id, state="cancelled", message=msg)
        self._stop_local(job_id, "cancelled")
        self._finish_everywhere(job_id, "cancelled", msg)

    def _stop_local(self, job_id: str, why: str) -> None:
        with self._lock:
            task = self._tasks.get(job_id)
        if task is not None and task.running:
            task.stop(why)
            self.endpoint.close_job(f"{job_id}.{self._attempts.get(job_id)}")

    def resume(self, job_id: str, user: str) -> dict[str, Any]:
        with self.db.session() as s:
            job = self._job_row(s, job_id)
            if job.initiator != self.name:
                raise ConfigError(f"job {job_id!r} is coordinated by {job.initiator!r}; resume it there")
            if job.state not in ("failed", "running"):
                raise ConfigError(f"job {job_id!r} is {job.state}; only a failed or running job resumes")
        self.audit.append("job.resume", job_id=job_id, actor=user)
        self._set(job_id, state="starting", message="resuming")
        self._background(self._start_attempt, job_id)
        return self.job(job_id)

    # ================================================================== control messages
    def _on_message(self, kind: str, sender: str, payload: dict[str, Any], event: str) -> dict[str, Any]:
        handler = getattr(self, f"_msg_{kind}", None)
        if handler is None:
            raise ConfigError(f"unknown control message {kind!r}")
        return handler(sender, payload, event) or {}

    def _job_of(self, sender: str, payload: dict[str, Any], initiator_only: bool = False,
                party_of_sender: bool = True) -> Job:
        job_id = str(payload.get("job_id"))
        with self.db.session() as s:
            job = s.get(Job, job_id)
        if job is None:
            raise ConfigError(f"no job {job_id!r} at {self.name!r}")
        if initiator_only and job.initiator != sender:
            raise ConfigError(f"{sender!r} does not coordinate job {job_id!r}")
        if party_of_sender and sender not in {v["node"] for v in self._parties(job_id).values()}:
            raise ConfigError(f"{sender!r} is not a party of job {job_id!r}")
        return job

    def _sender_party(self, sender: str, payload: dict[str, Any]) -> tuple[Job, str]:
        """The job a partner's report is about and the party it reports for (which it must play)."""
        job = self._job_of(sender, payload)
        party = str(payload.get("party"))
        if self._parties(job.id).get(party, {}).get("node") != sender:
            raise ConfigError(f"{sender!r} does not play party {party!r}")
        return job, party

    def _msg_propose(self, sender: str, payload: dict[str, Any], event: str) -> dict[str, Any]:
        proposal, sig = payload.get("proposal"), str(payload.get("signature", ""))
        if not isinstance(proposal, dict):
            raise PolicyRefused("malformed proposal")
        keys = ("job_id", "name", "initiator", "job_text", "parties", "created", "nonce", "atoll")
        proposal = {k: proposal.get(k) for k in keys}
        job_id = str(proposal["job_id"])
        if proposal["initiator"] != sender:
            self.audit.append("proposal.refused", job_id=job_id, peer=sender, ref=event,
                              reason="sent by a node other than its initiator")
            raise PolicyRefused(f"the proposal names {proposal['initiator']!r} as initiator but came from "
                                f"{sender!r}; only the initiator proposes its jobs")
        if not self.cfg.partner_verifier(sender).verify_doc(PROPOSAL, proposal, sig):
            self.audit.append("proposal.refused", job_id=job_id, peer=sender, ref=event, reason="bad signature")
            raise PolicyRefused(f"the proposal's signature does not verify with {sender!r}'s key")
        with self.db.session() as s:
            known = s.get(Job, job_id)
            if known is not None:
                if known.signature == sig and known.initiator == sender:  # the initiator asking again
                    return {"decision": {"pending": "pending", "accepted": "accepted", "rejected": "rejected"}
                            .get(known.state, known.state if known.state in TERMINAL else "accepted"),
                            "reason": known.message}
                self.audit.append("proposal.refused", job_id=job_id, peer=sender, ref=event, reason="replayed")
                raise PolicyRefused(f"replayed proposal: job id {job_id!r} was already proposed to "
                                    f"{self.name!r} with other content; refused")
        age = time.time() - float(proposal["created"] or 0)
        if age > self.cfg.job_timeout or age < -300:
            self.audit.append("proposal.refused", job_id=job_id, peer=sender, ref=event, reason="stale")
            raise PolicyRefused(f"the proposal is {age:.0f} s old, older than the job timeout: replayed or "
                                "stale; submit the job again")
        parties = proposal["parties"] if isinstance(proposal["parties"], dict) else {}
        now = time.time()
        try:
            decision = check_proposal(self.cfg, self.registry, job_id, sender, str(proposal["job_text"]), parties)
            state, reason = ("accepted", "auto-approve rule") if decision.auto_approve else ("pending", "")
            own = decision.party
        except PolicyRefused as e:
            state, reason, decision = "rejected", str(e), None
            own = next((p for p, v in parties.items() if isinstance(v, dict) and v.get("node") == self.name), "?")
        with self.db.session.begin() as s:
            s.add(Job(id=job_id, name=str(proposal["name"])[:128], initiator=sender, own_party=own, state=state,
                      proposal=proposal, signature=sig, attempt=0, message=reason if state == "rejected" else "",
                      created=now, updated=now))
            for p, v in parties.items():
                if isinstance(v, dict):
                    s.add(JobParty(job_id=job_id, party=str(p), node=str(v.get("node")), role=str(v.get("role")),
                                   decision=state if p == own and state != "pending" else None, reason=reason,
                                   decided=now if p == own and state != "pending" else None))
        if decision is not None:
            self._decisions[job_id] = decision
        self.audit.append("proposal.received", job_id=job_id, peer=sender, event_id=event, name=proposal["name"],
                          parties=parties, decision=state, reason=reason[:500],
                          grant=decision.grant["id"] if decision and decision.grant else None,
                          dataset=_ds(decision) if decision else None)
        if state != "pending":
            self.audit.append(f"decision.{state}", job_id=job_id, ref=event, actor="policy", reason=reason[:500])
        return {"decision": state, "reason": reason}

    def _msg_decision(self, sender: str, payload: dict[str, Any], event: str) -> dict[str, Any]:
        job, party = self._sender_party(sender, payload)
        decision = payload.get("decision")
        if decision not in ("accepted", "rejected"):
            raise ConfigError("decision must be accepted or rejected")
        self._on_decision(job.id, party, decision, str(payload.get("reason", "")), sender)
        return {}

    def _msg_plan(self, sender: str, payload: dict[str, Any], event: str) -> dict[str, Any]:
        job = self._job_of(sender, payload, initiator_only=True)
        if job.state in ("rejected", "pending"):
            raise ConfigError(f"job {job.id!r} is {job.state} at {self.name!r}")
        return {"changes": self._plan(job.id)}

    def _msg_start(self, sender: str, payload: dict[str, Any], event: str) -> dict[str, Any]:
        job = self._job_of(sender, payload, initiator_only=True)
        if job.state in ("rejected", "pending", "cancelled"):
            raise ConfigError(f"job {job.id!r} is {job.state} at {self.name!r}; it does not start")
        skip = [str(x) for x in payload.get("skip") or []]
        self._start_local(job.id, int(payload["attempt"]), skip)
        return {}

    def _msg_task(self, sender: str, payload: dict[str, Any], event: str) -> dict[str, Any]:
        job, party = self._sender_party(sender, payload)
        self._set_task(job.id, party, str(payload.get("step"))[:128], str(payload.get("component"))[:128],
                       str(payload.get("state"))[:32], int(payload.get("attempt") or 0),
                       clean_reason(payload.get("error", ""), 300) if payload.get("error") else "",
                       float(payload.get("t") or time.time()))
        return {}

    def _msg_party_done(self, sender: str, payload: dict[str, Any], event: str) -> dict[str, Any]:
        job, party = self._sender_party(sender, payload)
        head = payload.get("head") if isinstance(payload.get("head"), dict) else None
        if head is not None and head.get("node") != sender:
            head = None
        step = payload.get("step")
        summary = clean_reason(payload.get("summary", ""), 300)
        if not payload.get("ok") and step:
            summary = f"{_category(summary)} at step {str(step)[:128]!r}" if " at step " not in summary else summary
        self._on_party_done({"job_id": job.id, "attempt": int(payload.get("attempt") or 0), "party": party,
                             "ok": bool(payload.get("ok")), "summary": summary, "head": head})
        return {}

    def _msg_finish(self, sender: str, payload: dict[str, Any], event: str) -> dict[str, Any]:
        job = self._job_of(sender, payload, initiator_only=True)
        state = payload.get("state")
        if state not in ("done", "failed", "rejected", "cancelled"):
            raise ConfigError("bad end state")
        ended = payload.get("attempt")
        if state == "failed" and type(ended) is int and 0 < ended < job.attempt:
            # the end of an older attempt, delivered late: the initiator kept retrying it while this
            # node was down, and this node has since started the next attempt; stopping that one
            # (or marking the job failed) would kill the resumed job
            self.audit.append("job.finished_stale", job_id=job.id, peer=sender, ref=event, attempt=ended)
            return {}
        if state != "done":
            self._stop_local(job.id, f"the job {state} at {sender!r}")
        for h in payload.get("heads") or []:
            if isinstance(h, dict):
                self._keep_head(h, "")
        if job.state not in TERMINAL or (job.state == "failed" and state != "failed"):
            self._set(job.id, state=state, message=clean_reason(payload.get("message", ""), 2000) if state != "done"
                      else "")
        self.audit.append("job.finished", job_id=job.id, peer=sender, ref=event, state=state,
                          heads={h.get("node"): [h.get("seq"), h.get("hash")] for h in payload.get("heads") or []
                                 if isinstance(h, dict)})
        return {}

    def _msg_cancel_request(self, sender: str, payload: dict[str, Any], event: str) -> dict[str, Any]:
        job = self._job_of(sender, payload)
        if job.initiator != self.name:
            raise ConfigError(f"{self.name!r} does not coordinate job {job.id!r}")
        self.audit.append("job.cancel", job_id=job.id, peer=sender, ref=event)
        self._background(self._cancel_everywhere, job.id, f"cancelled at node {sender!r}")
        return {}

    def _msg_resume_request(self, sender: str, payload: dict[str, Any], event: str) -> dict[str, Any]:
        job = self._job_of(sender, payload)
        if job.initiator != self.name:
            raise ConfigError(f"{self.name!r} does not coordinate job {job.id!r}")
        self.audit.append("job.resume_requested", job_id=job.id, peer=sender, ref=event)
        if job.state in ("failed", "running", "starting") and job.attempt < self.cfg.max_attempts:
            self._set(job.id, state="starting", message=f"node {sender!r} restarted; resuming")
            self._background(self._start_attempt, job.id)
        return {}

    def _msg_heads(self, sender: str, payload: dict[str, Any], event: str) -> dict[str, Any]:
        return {"heads": self.audit.heads(node=sender)}

    # ================================================================== restart
    def _recover(self) -> None:
        """Jobs that were running when this node stopped: their in-flight steps fail cleanly and
        the initiator is asked to resume them (attempt N+1 keeps every completed step)."""
        with self.db.session() as s:
            jobs = list(s.execute(select(Job).where(Job.state.in_(("running", "starting")))).scalars())
            proposed = list(s.execute(select(Job).where(Job.state == "proposed",
                                                        Job.initiator == self.name)).scalars())
        for job in jobs:
            for t in self.tasks(job.id):
                if t["party"] == job.own_party and t["state"] == "running":
                    self._set_task(job.id, job.own_party, t["step"], t["component"], "failed", t["attempt"],
                                   "interrupted: the node restarted")
                    SqlRunStore(self.db, job.id, self.work_dir).party(job.own_party).event(
                        party=job.own_party, step=t["step"], component=t["component"], event="failed",
                        cause="Interrupted: the node restarted")
            self.audit.append("job.interrupted", job_id=job.id, attempt=job.attempt)
            if job.initiator == self.name:
                self._set(job.id, state="starting", message="this node restarted; resuming")
                self._background(self._start_attempt, job.id)
            else:
                self._set(job.id, message="this node restarted; asked the initiator to resume")
                self._background(self._tell_initiator, job.id, "resume_request", {"job_id": job.id})
        for job in proposed:
            for p, v in self._parties(job.id).items():
                if v["node"] != self.name and v["decision"] is None:
                    self._background(self._propose_to, job.id, v["node"], p, dict(job.proposal), job.signature,
                                     secrets.token_hex(16))

    # ================================================================== views (REST, CLI)
    def job(self, job_id: str) -> dict[str, Any]:
        with self.db.session() as s:
            j = self._job_row(s, job_id)
            out = {"id": j.id, "name": j.name, "initiator": j.initiator, "own_party": j.own_party,
                   "state": j.state, "attempt": j.attempt, "message": j.message, "created": j.created,
                   "updated": j.updated}
            rows = s.execute(select(JobParty).where(JobParty.job_id == job_id)).scalars()
            out["parties"] = [{"party": r.party, "node": r.node, "role": r.role, "decision": r.decision,
                               "reason": r.reason, "state": r.state} for r in rows]
        out["tasks"] = self.tasks(job_id)
        return out

    def jobs(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        with self.db.session() as s:
            q = select(Job).order_by(Job.created.desc()).limit(limit)
            if state:
                q = q.where(Job.state == state)
            return [{"id": j.id, "name": j.name, "initiator": j.initiator, "own_party": j.own_party,
                     "state": j.state, "attempt": j.attempt, "message": j.message, "created": j.created,
                     "updated": j.updated} for j in s.execute(q).scalars()]

    def proposal(self, job_id: str) -> dict[str, Any]:
        with self.db.session() as s:
            j = self._job_row(s, job_id)
            return {"proposal": j.proposal, "signature": j.signature}

    def tasks(self, job_id: str) -> list[dict[str, Any]]:
        with self.db.session() as s:
            rows = s.execute(select(Task).where(Task.job_id == job_id)).scalars()
            out = [{"party": t.party, "step": t.step, "component": t.component, "state": t.state,
                    "attempt": t.attempt, "started": t.started, "finished": t.finished, "error": t.error}
                   for t in rows]
        order = self._order.get(job_id)
        if order is None:
            with self.db.session() as s:
                j = s.get(Job, job_id)
                try:
                    order = {c["id"]: i for i, c in enumerate(yaml.safe_load(j.proposal["job_text"])["pipeline"])}
                except Exception:  # noqa: BLE001 - a job refused as malformed has no pipeline to order by
                    order = {}
            self._order[job_id] = order
        return sorted(out, key=lambda t: (t["party"], order.get(t["step"], 1 << 30), t["step"]))

    def run_store(self, job_id: str) -> SqlRunStore:
        return SqlRunStore(self.db, job_id, self.work_dir)

    def models(self) -> list[dict[str, Any]]:
        with self.db.session() as s:
            return [{"id": m.id, "name": m.name, "version": m.version, "job_id": m.job_id, "party": m.party,
                     "step": m.step, "component": m.component, "sha256": m.sha256, "created": m.created,
                     "bytes": len(m.data)} for m in s.execute(select(Model).order_by(Model.created)).scalars()]

    def model_blob(self, model_id: str) -> tuple[dict[str, Any], bytes]:
        with self.db.session() as s:
            m = s.get(Model, model_id)
            if m is None:
                raise ConfigError(f"no model {model_id!r} here (atoll model list shows them)")
            return ({"id": m.id, "name": m.name, "version": m.version, "sha256": m.sha256, "party": m.party,
                     "component": m.component}, m.data)

    def partners(self) -> list[dict[str, Any]]:
        from atoll.node.config import cert_expiry, cert_fingerprint

        out = []
        for p in self.cfg.partners:
            try:
                pem = self.cfg.partner_certificate(p.name)
                exp, fp = cert_expiry(pem), cert_fingerprint(pem)
            except (AtollError, ValueError):
                exp, fp = None, None
            out.append({"name": p.name, "address": p.address, "certificate_expires": exp,
                        "certificate_sha256": fp, "signing_key": p.signing_key})
        return out

    def info(self) -> dict[str, Any]:
        from atoll.node.config import cert_expiry

        tls = self.cfg.tls()
        return {"name": self.name, "federation": self.cfg.federation, "api": self.cfg.api,
                "atoll": __version__, "signing_key": self.signer.public.text(),
                "certificate_expires": cert_expiry(tls.cert), "store": self.db.engine.dialect.name,
                "schema": self.db.revision(), "open_federation_jobs": self.endpoint.open_jobs(),
                "running": sorted(j for j, t in self._tasks.items() if t.running)}

    def verify_audit(self, ask_partners: bool = False) -> dict[str, Any]:
        extra: list[dict[str, Any]] = []
        asked: dict[str, str] = {}
        if ask_partners:
            for p in self.cfg.partners:
                try:
                    extra += [h for h in self.client.call(p.name, "heads", {}, timeout=5)["heads"]
                              if isinstance(h, dict)]
                    asked[p.name] = "ok"
                except (Unreachable, Refused) as e:
                    asked[p.name] = str(e)
        v = self.audit.verify(extra, {self.name: self.signer.public})
        return {"ok": v.ok, "records": v.records, "head": v.head, "problems": v.problems,
                "heads_checked": v.heads_checked, "partners": asked}

    def close(self) -> None:
        self._closing = True
        with self._lock:
            tasks = list(self._tasks.values())
        for t in tasks:
            t.stop("the node is stopping")
        for t in tasks:
            t.wait(10)
        self.endpoint.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.db.close()


def _ds(d: Decision | None) -> dict[str, Any] | None:
    if d is None or d.dataset is None:
        return None
    return {"name": d.dataset["name"], "version": d.dataset["version"], "sha256": d.dataset["sha256"]}


def _safe(msg: str) -> str:
    """What the initiator tells partners about a failure: the first line, cleaned."""
    return clean_reason(msg.splitlines()[0] if msg else "", 500)
