"""What a node checks before it takes part in a job (as NVFLARE sites re-check at deploy time).

Every node checks every proposal against its OWN policy, whoever initiated it:

1. the proposal names no plugin (checked on the raw YAML, before anything is parsed: a
   node never imports what a partner names) and only components installed with Atoll;
2. every party names a node; every node is this node or a partner in its config; this
   node plays exactly one party;
3. this node's party names its data by registered name only (never a path), the data set
   is registered here, and a grant allows this use: signature, revocation, expiry, uses,
   job, initiator, components and parameter bounds (:func:`atoll.node.data.check_grant`);
4. an auto-approve rule in ``node.yaml`` for the initiator covers every component, or the
   node's users decide (``atoll job approve|reject``).

:func:`own_view` then gives the job as this node runs it: its own party's data resolved to
the registered file, every other party's data left as the name only that party resolves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from atoll.errors import ConfigError
from atoll.jobs import registry as components
from atoll.jobs.spec import JobSpec, parse_job
from atoll.node.config import NodeConfig
from atoll.node.data import PolicyRefused, Registry, Use

DATA_ROLES = ("guest", "host", "client")


@dataclass
class Decision:
    """The outcome of the policy check at one node."""

    party: str
    role: str
    job: JobSpec                       # this node's view (own data resolved)
    dataset: dict[str, Any] | None     # the registered version used (None: no data here)
    grant: dict[str, Any] | None
    auto_approve: bool
    components: list[str]


def _raw(job_text: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(job_text)
    except yaml.YAMLError as e:
        raise PolicyRefused(f"the proposal's job is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise PolicyRefused("the proposal's job is not a mapping")
    return raw


def check_static(job_text: str) -> dict[str, Any]:
    """Steps 1 (no plugins, built-in components) on the raw job; returns the raw mapping."""
    raw = _raw(job_text)
    if raw.get("plugins"):
        raise PolicyRefused(f"the proposal names plugins {raw['plugins']!r}: a node runs only the "
                            "components installed with Atoll and never imports a module a job names")
    for i, c in enumerate(raw.get("pipeline") or []):
        name = c.get("component") if isinstance(c, dict) else None
        cls = components.find(name) if isinstance(name, str) else None
        if cls is None or not cls.__module__.startswith("atoll.jobs.components."):
            raise PolicyRefused(f"step {i} names component {name!r}, which is not one of the components "
                                f"installed with Atoll ({', '.join(components.names())})")
    return raw


def nodes_of(raw: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """``{party: (node, role)}`` from a job's raw parties; every party must name its node."""
    out: dict[str, tuple[str, str]] = {}
    for party, spec in (raw.get("parties") or {}).items():
        if not isinstance(spec, dict) or not spec.get("node"):
            raise PolicyRefused(f"party {party!r} names no node: add node: NAME (the organisation that "
                                "plays it) to submit the job to nodes")
        out[str(party)] = (str(spec["node"]), str(spec.get("role")))
    nodes = [n for n, _ in out.values()]
    dup = sorted({n for n in nodes if nodes.count(n) > 1})
    if dup:
        raise PolicyRefused(f"node(s) {dup} play more than one party; a node plays one party per job")
    return out


def own_view(raw: Mapping[str, Any], party: str, dataset: dict[str, Any] | None, source: str) -> JobSpec:
    """The job as this node runs it: its own registered data resolved to the file."""
    raw = yaml.safe_load(yaml.safe_dump(dict(raw)))  # a deep copy
    spec = raw["parties"][party].get("data")
    if dataset is not None and spec is not None:
        spec = {k: v for k, v in spec.items() if k not in ("registered", "path", "dataset", "id", "label")}
        spec.update(path=dataset["path"], id=dataset["id_column"])
        if dataset["label_column"] and raw["parties"][party].get("role") in ("guest", "client"):
            spec["label"] = dataset["label_column"]
        raw["parties"][party]["data"] = spec
    text = yaml.safe_dump(raw, sort_keys=False)
    try:
        # its one registered file is the only data this node's party may read
        return parse_job(text, source, check_data=False, data_roots=[dataset["path"]] if dataset else ())
    except ConfigError as e:
        reason = str(e)
        if dataset is not None:  # the reason goes back to the initiator: never this node's file names
            for secret in (str(dataset["path"]), Path(dataset["path"]).name):
                reason = reason.replace(secret, f"<data set {dataset.get('name', '?')}>")
        raise PolicyRefused(f"the proposal's job is invalid: {reason}") from None


def check_proposal(cfg: NodeConfig, reg: Registry, job_id: str, initiator: str, job_text: str,
                   parties: Mapping[str, Mapping[str, str]]) -> Decision:
    """Steps 1-4 of the module docstring; :class:`PolicyRefused` with the reason otherwise."""
    raw = check_static(job_text)
    mapping = nodes_of(raw)
    if {p: {"node": n, "role": r} for p, (n, r) in mapping.items()} != {p: dict(v) for p, v in parties.items()}:
        raise PolicyRefused("the proposal's party list does not match its job's parties")
    known = {cfg.name} | {p.name for p in cfg.partners}
    strangers = sorted({n for n, _ in mapping.values()} - known)
    if strangers:
        raise PolicyRefused(f"node(s) {strangers} are not partners of {cfg.name!r} (not in its config); "
                            "add them with `atoll node add-partner` first")
    if initiator not in {n for n, _ in mapping.values()}:
        raise PolicyRefused(f"the initiator {initiator!r} plays no party in the job")
    mine = [p for p, (n, _) in mapping.items() if n == cfg.name]
    if not mine:
        raise PolicyRefused(f"node {cfg.name!r} plays no party in this job")
    party = mine[0]
    role = mapping[party][1]
    spec = (raw["parties"][party] or {}).get("data")
    dataset = grant = None
    if spec is not None and role in DATA_ROLES:
        name = spec.get("registered") if isinstance(spec, dict) else None
        if not name:
            raise PolicyRefused(f"party {party!r} (node {cfg.name!r}) must name its data by registered name "
                                "(data: {registered: NAME}); a proposal never names a node's files")
        dataset = reg.dataset(name)
        if dataset is None:
            raise PolicyRefused(f"node {cfg.name!r} has no data set {name!r} registered; register it there "
                                f"(atoll data register {name} FILE --id COL)")
    job = own_view(raw, party, dataset, f"<job {job_id}>")
    steps = tuple((c.id, c.component, components.get(c.component).Params.model_validate(c.params).model_dump())
                  for c in job.pipeline)
    if dataset is not None:
        use = Use(dataset["name"], job_id, initiator, frozenset(n for n, _ in mapping.values()) - {cfg.name},
                  steps)
        grant, dataset = reg.find_grant(use)
    comps = sorted({c for _, c, _ in steps})
    auto = any(r.partner == initiator and set(comps) <= set(r.components) for r in cfg.auto_approve)
    return Decision(party, role, job, dataset, grant, auto, comps)
