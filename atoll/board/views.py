"""What the board shows, as plain data: pure functions of the node's job records and proposals.

The board's pages (``static/board.js``) render these views; they never compute states
themselves, so a test of a view is a test of what a person sees. Everything here comes
from the node's own store: its jobs, the task states every party reported to it (error
category and step only for other parties, the full text for its own), and the proposal's
job text (parsed with ``yaml.safe_load``; a malformed one gives an empty pipeline).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import yaml

from atoll.jobs.dag import waves
from atoll.jobs.views import model_summary

__all__ = ["dag", "filter_jobs", "job_row", "model_summary", "partner_rows", "party_data", "pipeline", "step_view"]

#: task states the board colours; anything else a peer reports is shown as "other"
STATES = ("pending", "waiting", "running", "done", "failed", "skipped", "cancelled")
TERMINAL = ("done", "failed", "rejected", "cancelled")


def pipeline(job_text: str) -> list[dict[str, Any]]:
    """The steps of a job file: ``[{id, component, needs, params, inputs}]`` in file order."""
    try:
        raw = yaml.safe_load(job_text)
        steps = raw.get("pipeline") if isinstance(raw, dict) else None
    except yaml.YAMLError:
        steps = None
    out: list[dict[str, Any]] = []
    for c in steps if isinstance(steps, list) else []:
        if not isinstance(c, dict) or not isinstance(c.get("id"), str):
            continue
        inputs = c.get("inputs") if isinstance(c.get("inputs"), dict) else {}
        needs = sorted({str(ref).partition(".")[0] for ref in inputs.values()})
        out.append({"id": c["id"], "component": str(c.get("component", "")), "needs": needs,
                    "inputs": {str(k): str(v) for k, v in inputs.items()},
                    "params": c.get("params") if isinstance(c.get("params"), dict) else {}})
    return out


def party_data(job_text: str) -> dict[str, Any]:
    """Each party's ``data`` entry in the job file (registered names, never a node's paths)."""
    try:
        raw = yaml.safe_load(job_text)
    except yaml.YAMLError:
        return {}
    parties = raw.get("parties") if isinstance(raw, dict) else None
    if not isinstance(parties, dict):
        return {}
    return {str(p): (v.get("data") if isinstance(v, dict) else None) for p, v in parties.items()}


def _waves(steps: list[dict[str, Any]]) -> dict[str, int]:
    deps = {s["id"]: s["needs"] for s in steps}
    try:
        return {n: i for i, wave in enumerate(waves(deps)) for n in wave}
    except ValueError:  # a cycle: the node refused such a job; show the steps in file order
        return {s["id"]: i for i, s in enumerate(steps)}


def dag(job: Mapping[str, Any], job_text: str) -> dict[str, Any]:
    """A job's DAG across parties: every step with every party's task state on it.

    ``job`` is :meth:`atoll.node.service.Node.job`'s view. A step a party has not started is
    ``waiting`` while the job runs and ``pending`` before; ``error`` is what the node knows
    of a failure (its own party's cause, or the category and step another party reported).
    """
    steps = pipeline(job_text)
    wave = _waves(steps)
    parties = [p["party"] for p in job.get("parties", [])]
    tasks = {(t["party"], t["step"]): t for t in job.get("tasks", [])}
    idle = "waiting" if job.get("state") in ("running", "starting") else "pending"
    out_steps = []
    for s in steps:
        cells = {}
        for p in parties:
            t = tasks.get((p, s["id"]))
            state = t["state"] if t else idle
            cells[p] = {"state": state if state in STATES else "other", "reported": state,
                        "error": (t or {}).get("error") or "", "attempt": (t or {}).get("attempt"),
                        "started": (t or {}).get("started"), "finished": (t or {}).get("finished")}
        out_steps.append({"id": s["id"], "component": s["component"], "needs": s["needs"],
                          "wave": wave.get(s["id"], 0), "params": s["params"], "tasks": cells})
    head = {k: job.get(k) for k in ("id", "name", "state", "message", "attempt", "initiator", "own_party",
                                    "created", "updated")}
    return {"job": head, "parties": list(job.get("parties", [])), "steps": out_steps,
            "data": party_data(job_text), "ended": job.get("state") in TERMINAL}


def job_row(job: Mapping[str, Any], proposal: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the job list: the job with its nodes and components (from its proposal)."""
    parties = proposal.get("parties") if isinstance(proposal.get("parties"), dict) else {}
    nodes = sorted({str(v.get("node")) for v in parties.values() if isinstance(v, dict)})
    comps = sorted({s["component"] for s in pipeline(str(proposal.get("job_text") or ""))})
    return {**job, "nodes": nodes, "components": comps}


def filter_jobs(rows: Iterable[Mapping[str, Any]], state: str | None = None, partner: str | None = None,
                component: str | None = None, since: float | None = None,
                until: float | None = None) -> list[dict[str, Any]]:
    """The job list filtered by state, a partner node taking part, a component used, creation time."""
    out = []
    for r in rows:
        if state and r.get("state") != state:
            continue
        if partner and partner not in r.get("nodes", ()):
            continue
        if component and component not in r.get("components", ()):
            continue
        if since is not None and float(r.get("created") or 0) < since:
            continue
        if until is not None and float(r.get("created") or 0) > until:
            continue
        out.append(dict(r))
    return out


def partner_rows(partners: Iterable[Mapping[str, Any]], now: float, warn_days: float = 30) -> list[dict[str, Any]]:
    """Partners with the days left on their certificate and a warning when under ``warn_days``."""
    out = []
    for p in partners:
        exp = p.get("certificate_expires")
        days = None if exp is None else (float(exp) - now) / 86400
        warning = ("certificate unreadable" if days is None else "certificate expired" if days <= 0
                   else f"certificate expires in {days:.0f} days" if days < warn_days else "")
        out.append({**p, "days_left": days, "warning": warning})
    return out


def step_view(step: str, record: Any, outputs: Mapping[str, Any],
              params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What this node's party kept of one step: its record, its outputs' names, its model part
    (:func:`atoll.jobs.views.model_summary`, the view the run report uses too)."""
    model = outputs["model"] if "model" in outputs else None
    return {"step": step, "done": record is not None,
            "seconds": getattr(record, "seconds", None), "mode": getattr(record, "mode", None),
            "finished": getattr(record, "finished", None), "outputs": sorted(outputs),
            "model": model_summary(model, params)}
