"""Resume like make: a step runs again when what it depends on changed, and so does everything downstream.

Each party fingerprints each step of a job from what the step's result depends on at
that party:

* the component's name and its parameters (canonical JSON of the job file's ``params``),
* the step's seed (from the job's seed) and the job's parties and their roles,
* for a step without inputs (the ``reader``): the party's data spec and the content
  hash (SHA-256) of its data file — so a fixed CSV is noticed even when its name is not,
* for each input: which output feeds it and the upstream step's fingerprint at that party.

A completed step keeps its fingerprint in its :class:`~atoll.jobs.store.StepRecord`.
``plan_resume`` compares, at every party, the recorded fingerprint with today's: a step
runs again if it is not complete at some party or its fingerprint changed at some party
(a step is one federated task: it runs at every party or at none), and every step
downstream of one that runs again runs again too. Each such step comes with the reasons,
which the run's report shows (``reasons`` name steps, parties and what changed — never
values or file names).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from atoll.jobs.component import step_seed
from atoll.jobs.dag import ancestors
from atoll.jobs.spec import JobSpec
from atoll.jobs.store import PartyRun, RunStore

_CHUNK = 1 << 20


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content (cached in this process per path, size and modification time)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()[:32]
    return _DIGESTS[key]


def data_digest(job: JobSpec, party: str) -> str:
    """The party's data as a step sees it: its spec and its file's content."""
    from atoll.jobs.components.reader import _source  # where a data spec points (bundled set or file)

    spec = job.parties[party].data
    if spec is None:
        return "none"
    try:
        path, _ = _source(job, party, spec)
        content = file_digest(path)
    except Exception as e:  # noqa: BLE001 - a missing file is a change the step itself will report
        content = f"unreadable:{type(e).__name__}"
    return _digest({"spec": spec.model_dump(exclude={"path"}), "content": content})


@dataclass(frozen=True)
class Fingerprint:
    """One step's fingerprint at one party: a digest of named parts."""

    digest: str
    parts: dict[str, str] = field(default_factory=dict)


def _deps(job: JobSpec) -> dict[str, list[str]]:
    return {c.id: sorted({r.partition(".")[0] for r in c.inputs.values()}) for c in job.pipeline}


def fingerprints(job: JobSpec, party: str) -> dict[str, Fingerprint]:
    """Every step's fingerprint at ``party`` (reads only that party's own data file)."""
    parties = _digest({p: s.role for p, s in job.parties.items()})
    out: dict[str, Fingerprint] = {}
    by_id = {c.id: c for c in job.pipeline}

    def fp(step: str) -> Fingerprint:
        if step in out:
            return out[step]
        c = by_id[step]
        parts = {"component": c.component, "params": _digest(c.params),
                 "seed": str(step_seed(job.seed, step)), "parties": parties}
        if not c.inputs:
            parts["data"] = data_digest(job, party)
        for slot, ref in sorted(c.inputs.items()):
            parts[f"input:{slot}"] = f"{ref}@{fp(ref.partition('.')[0]).digest}"
        out[step] = Fingerprint(_digest(parts), parts)
        return out[step]

    for c in job.pipeline:
        fp(c.id)
    return out


def _why(old: dict[str, str], new: dict[str, str], party: str) -> list[str]:
    if not old:
        return [f"it was completed by an older Atoll that kept no fingerprint (at {party!r})"]
    reasons = []
    if old.get("component") != new.get("component"):
        reasons.append("its component changed")
    if old.get("params") != new.get("params"):
        reasons.append("its parameters changed")
    if old.get("seed") != new.get("seed"):
        reasons.append("the job's seed changed")
    if old.get("parties") != new.get("parties"):
        reasons.append("the job's parties changed")
    if old.get("data") != new.get("data"):
        reasons.append(f"the data of party {party!r} changed")
    upstream_changed = False
    for key in sorted(set(old) | set(new)):
        if not key.startswith("input:") or old.get(key) == new.get(key):
            continue
        slot = key.partition(":")[2]
        ref_old, ref_new = (old.get(key) or "@").partition("@")[0], (new.get(key) or "@").partition("@")[0]
        if ref_old != ref_new:
            reasons.append(f"its input {slot!r} now comes from {ref_new or 'nowhere'}")
        else:  # the upstream step's own reason says why (plan_resume adds "upstream ... runs again")
            upstream_changed = True
    if not reasons and not upstream_changed:
        reasons.append("its fingerprint changed")
    return reasons


@dataclass
class ResumePlan:
    """Which steps a resume keeps and which run again, and why (``{step: [reason, ...]}``)."""

    keep: list[str]
    rerun: dict[str, list[str]]


def party_changes(job: JobSpec, run: PartyRun) -> dict[str, list[str]]:
    """Why each step must run again at one party, from that party's own records and data only
    (``{step: [reason, ...]}``, steps with nothing changed left out; upstream effects not
    included). A node computes this for its own party; :func:`combine` joins the parties'."""
    now = fingerprints(job, run.party)
    out: dict[str, list[str]] = {}
    for c in job.pipeline:
        rec = run.record(c.id)
        if rec is None:
            why = [f"it is not complete at {run.party!r}"]
        elif rec.mode != "train":
            why = [f"it was last run for prediction at {run.party!r}"]
        elif rec.fingerprint == now[c.id].digest:
            continue
        else:
            why = _why(rec.parts, now[c.id].parts, run.party)
        if why:
            out[c.id] = why
    return out


def combine(job: JobSpec, changes: Mapping[str, Mapping[str, list[str]]]) -> ResumePlan:
    """The run's plan from every party's :func:`party_changes` (``{party: {step: reasons}}``):
    a step runs again if it changed at any party, and so does everything downstream of it."""
    own: dict[str, list[str]] = {c.id: [] for c in job.pipeline}
    for party in job.parties:
        for step, reasons in (changes.get(party) or {}).items():
            own[step] += [r for r in reasons if r not in own[step]]
    deps = _deps(job)
    rerun: dict[str, list[str]] = {}
    for c in job.pipeline:  # pipeline order: upstream reasons are known before downstream ones
        reasons = list(own[c.id])
        for up in sorted(ancestors(deps, c.id)):
            if up in rerun and own[up]:
                reasons.append(f"upstream step {up!r} runs again")
        if reasons:
            rerun[c.id] = _collapse(reasons, len(job.parties))
    return ResumePlan([c.id for c in job.pipeline if c.id not in rerun], rerun)


def plan_resume(job: JobSpec, store: RunStore) -> ResumePlan:
    """Compare each step's recorded fingerprint at every party with today's (see the module
    docstring). A local run sees every party's part of the store; a node sees its own only
    and uses :func:`party_changes` and :func:`combine` instead."""
    return combine(job, {p: party_changes(job, store.party(p)) for p in job.parties})


def _collapse(reasons: list[str], n_parties: int) -> list[str]:
    """'it is not complete at X' for every party reads better as one line."""
    missing = [r for r in reasons if r.startswith("it is not complete at ")]
    if n_parties > 1 and len(missing) == n_parties:
        reasons = ["it is not complete at any party"] + [r for r in reasons if r not in missing]
    return reasons
