"""The node's commands: ``atoll node``, ``atoll login``, ``atoll job``, ``atoll data``, ``atoll audit``, ``atoll model``,
``atoll user``.

``atoll node init|add-partner|start`` work on files; every other command is a client of
a node's REST API (:mod:`atoll.node.client`): ``--node URL`` or ``ATOLL_NODE``.
"""

from __future__ import annotations

import datetime as dt
import json

import re

import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from atoll.errors import AtollError

node_app = typer.Typer(help="One organisation's node: init, add partners, start.", no_args_is_help=True)
job_app = typer.Typer(help="Jobs at a node: submit, list, status, logs, approve, reject, cancel.",
                      no_args_is_help=True)
data_app = typer.Typer(help="The node's data registry and grants.", no_args_is_help=True)
audit_app = typer.Typer(help="The node's audit trail.", no_args_is_help=True)
model_app = typer.Typer(help="The node's model store.", no_args_is_help=True)
user_app = typer.Typer(help="The node's users (admins; viewers read only).", no_args_is_help=True)

NodeOpt = typer.Option(None, "--node", help="The node's REST URL (default: $ATOLL_NODE)")
TokenOpt = typer.Option(None, "--token", help="API token (default: $ATOLL_TOKEN or the saved login)")
JsonOpt = typer.Option(False, "--json", help="Print JSON")


def _run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except AtollError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from None


def _client(node: str | None, token: str | None = None) -> Any:
    from atoll.node.client import NodeClient

    return NodeClient(node, token)


def _t(ts: float | None) -> str:
    return "-" if not ts else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=1, default=str))


# ====================================================================== node
@node_app.command("init")
def node_init(name: str = typer.Option(..., help="The node's (organisation's) name, e.g. bank"),
              out: Path = typer.Option(..., help="Folder for the node's identity, config and store"),
              federation: str = typer.Option("127.0.0.1:7001", help="HOST:PORT partners reach this node at"),
              api: str = typer.Option("127.0.0.1:8000", help="HOST:PORT of the REST API for your users"),
              ca: Optional[Path] = typer.Option(None, help="Federation CA folder (ca.pem + ca.key) to sign "
                                                "this node's certificate"),
              cert: Optional[Path] = typer.Option(None, help="Your own certificate (instead of --ca)"),
              key: Optional[Path] = typer.Option(None, help="Its private key"),
              ca_cert: Optional[Path] = typer.Option(None, help="The CA certificate that issued --cert"),
              store: Optional[str] = typer.Option(None, help="Store URL (default sqlite:///node.db in --out)"),
              hosts: Optional[str] = typer.Option(None, help="Extra host names / IPs for the certificate")) -> None:
    """Make a node: Ed25519 signing key, TLS certificate from the CA, node.yaml, card.yaml, bootstrap token."""
    from atoll.node.config import init_node

    cfg, token = _run(lambda: init_node(name, out, federation, api, ca, cert, key, ca_cert, store,
                                        hosts=[h.strip() for h in (hosts or "").split(",") if h.strip()]))
    typer.echo(f"node {name!r} made in {out}/: node.yaml, card.yaml (give it to your partners), signing.key, tls/")
    typer.echo(f"one-time bootstrap token (also in {out}/bootstrap.token until used): {token}")


@node_app.command("add-partner")
def node_add_partner(card: Path = typer.Argument(..., help="The partner's card.yaml"),
                     config: Path = typer.Option(..., "--config", help="This node's node.yaml"),
                     address: Optional[str] = typer.Option(None, help="Override the card's HOST:PORT")) -> None:
    """Add a partner from its card (no certificate is re-issued, anyone's)."""
    from atoll.node.config import add_partner

    p = _run(lambda: add_partner(config, card, address))
    typer.echo(f"partner {p.name!r} at {p.address} added to {config} (restart the node to use it)")


@node_app.command("start")
def node_start(config: Path = typer.Option(..., "--config", help="The node's node.yaml"),
               log: Optional[Path] = typer.Option(None, "--log", help="Write the node's log to this file")) -> None:
    """Run the node: federation endpoint, REST API, store, executor (until Ctrl-C / SIGTERM)."""
    from atoll.node.server import serve

    _run(lambda: serve(config, log))


# ====================================================================== login
def login(node: Optional[str] = NodeOpt,
          bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="The one-time bootstrap token"),
          bootstrap_file: Optional[Path] = typer.Option(None, "--bootstrap-file", help="File holding it"),
          user: str = typer.Option("admin", help="Name of the first user"),
          wait: float = typer.Option(60, help="Seconds to wait for a node that is still starting")) -> None:
    """Exchange the node's one-time bootstrap token for an API token (saved for later commands)."""
    from atoll.node.client import NodeClient, save_token

    def go() -> str:
        tok = bootstrap or (bootstrap_file.read_text().strip() if bootstrap_file else None)
        if not tok:
            raise typer.BadParameter("give --bootstrap TOKEN or --bootstrap-file FILE")
        c = NodeClient(node)
        c.wait_up(wait)
        out = c.post("/auth/bootstrap", {"token": tok, "user": user}, auth=False)
        f = save_token(c.url, out["token"])
        return f"logged in to {c.url} as {out['user']}; token saved in {f}"
    typer.echo(_run(go))


# ====================================================================== jobs
@job_app.command("submit")
def job_submit(file: Path = typer.Argument(..., help="Job file (YAML) whose parties name their nodes"),
               id_only: bool = typer.Option(False, "--id-only", help="Print only the job id"),
               node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt) -> None:
    """Propose a job to every party's node (this node coordinates it)."""
    def go() -> dict:
        try:
            text = file.read_text()
        except OSError as e:
            raise AtollError(f"cannot read {file}: {e.strerror}") from None
        return _client(node, token).post("/jobs", {"job_text": text})
    j = _run(go)
    if id_only:
        typer.echo(j["id"])
        return
    typer.echo(f"job {j['id']} proposed to {', '.join(sorted(p['node'] for p in j['parties']))}; "
               f"follow it with: atoll job status {j['id']} --wait")


@job_app.command("list")
def job_list(state: Optional[str] = typer.Option(None, help="Only jobs in this state (pending = waiting for "
                                                 "your approval)"),
             ids: bool = typer.Option(False, "--ids", help="Print only the ids"),
             wait: float = typer.Option(0, "--wait", help="Wait up to this many seconds for a matching job "
                                        "(e.g. a proposal on its way)"),
             node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt, as_json: bool = JsonOpt) -> None:
    """Jobs at this node, newest first."""
    c = _run(lambda: _client(node, token))
    end = time.time() + wait
    while True:
        jobs = _run(lambda: c.get("/jobs", params={"state": state} if state else None))
        if jobs or time.time() >= end:
            break
        time.sleep(0.5)
    if as_json:
        return _echo_json(jobs)
    for j in jobs:
        if ids:
            typer.echo(j["id"])
        else:
            typer.echo(f"{j['id']}  {j['state']:<10} initiator={j['initiator']:<10} party={j['own_party']:<8} "
                       f"{_t(j['created'])}  {j['message'][:80]}")


def _print_status(j: dict, report: dict | None) -> None:
    typer.echo(f"job {j['id']} ({j['name']}): {j['state']}  attempt {j['attempt']}  initiator {j['initiator']}")
    if j["message"]:
        typer.echo(f"  {j['message']}")
    for p in j["parties"]:
        typer.echo(f"  party {p['party']:<8} node {p['node']:<10} {p['role']:<8} decision: {p['decision'] or '-'}"
                   f"{'  ' + p['reason'] if p['reason'] else ''}")
    for t in j["tasks"]:
        typer.echo(f"    {t['party']:<8} {t['step']:<10} {t['component']:<12} {t['state']:<9}"
                   f"{'  ' + t['error'] if t['error'] else ''}")
    for e in (report or {}).get("evaluations") or []:
        flat = {**e, **(e.get("metrics") if isinstance(e.get("metrics"), dict) else {})}
        metrics = {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        typer.echo(f"  metrics {e.get('step')}@{e.get('party')}: " +
                   ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))


@job_app.command("status")
def job_status(job_id: str = typer.Argument(...), wait: bool = typer.Option(False, "--wait", help="Wait until "
                                                                            "the job ends; exit 1 unless done"),
               timeout: float = typer.Option(3600, help="Seconds --wait waits"),
               node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt, as_json: bool = JsonOpt) -> None:
    """A job's state, every party's decision and task states (and metrics when done)."""
    c = _run(lambda: _client(node, token))
    end = time.time() + timeout
    last = ""
    while True:
        j = _run(lambda: c.get(f"/jobs/{job_id}"))
        if not wait or j["state"] in ("done", "failed", "rejected", "cancelled") or time.time() > end:
            break
        line = f"{j['state']}: {j['message']}" if j["message"] else j["state"]
        if line != last:
            typer.echo(f"[{time.strftime('%H:%M:%S')}] {line}", err=True)
            last = line
        time.sleep(1.0)
    report = _run(lambda: c.get(f"/jobs/{job_id}/report"))["report"] if j["state"] == "done" else None
    if as_json:
        _echo_json({**j, "report": report})
    else:
        _print_status(j, report)
    if wait and j["state"] != "done":
        raise typer.Exit(1)


@job_app.command("logs")
def job_logs(job_id: str = typer.Argument(...), party: Optional[str] = typer.Option(None, "--party",
                                                                                    help="Which party"),
             node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt) -> None:
    """This node's party's log; for another party, the task states it reported."""
    out = _run(lambda: _client(node, token).get(f"/jobs/{job_id}/logs", params={"party": party} if party else None))
    if out["own"]:
        for line in out["lines"]:
            typer.echo(f"{_t(line['t'])} {line['level']:<7} {line['message']}")
    else:
        typer.echo(f"# {out['note']}")
        for t in out["tasks"]:
            typer.echo(f"{_t(t['started'])} {t['step']:<10} {t['component']:<12} {t['state']}"
                       f"{'  ' + t['error'] if t['error'] else ''}")


def _action(verb: str, help_: str, reason: bool = False) -> None:
    def cmd(job_id: str = typer.Argument(...), node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt,
            why: str = typer.Option("", "--reason", help="Why (shown to the initiator)")) -> None:
        j = _run(lambda: _client(node, token).post(f"/jobs/{job_id}/{verb}", {"reason": why} if reason else None))
        typer.echo(f"job {j['id']}: {j['state']}{'  ' + j['message'] if j['message'] else ''}")
    cmd.__doc__ = help_
    job_app.command(verb)(cmd)


_action("approve", "Accept a proposal waiting for this node (after its policy checks pass).", reason=True)
_action("reject", "Reject a proposal waiting for this node; the job ends at every party.", reason=True)
_action("cancel", "Stop a job at every party.")
_action("resume", "Start a failed job again from its last completed steps (at its initiator).")


# ====================================================================== data
@data_app.command("register")
def data_register(name: str = typer.Argument(...), path: Path = typer.Argument(..., help="CSV or Parquet file "
                                                                             "on the node's machine"),
                  id: str = typer.Option(..., "--id", help="Id column"),
                  label: Optional[str] = typer.Option(None, "--label", help="Label column (label holders)"),
                  node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt) -> None:
    """Record a data set (path, schema, rows, SHA-256; never its content)."""
    d = _run(lambda: _client(node, token).post("/data", {"name": name, "path": str(path.resolve()), "id": id,
                                                         "label": label}))
    typer.echo(f"registered {d['name']} version {d['version']}: {d['rows']} rows, {len(d['columns'])} columns, "
               f"sha256 {d['sha256'][:16]}...")


@data_app.command("list")
def data_list(node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt, as_json: bool = JsonOpt) -> None:
    """Registered data sets and their grants."""
    c = _run(lambda: _client(node, token))
    ds, gs = _run(lambda: c.get("/data")), _run(lambda: c.get("/grants"))
    if as_json:
        return _echo_json({"datasets": ds, "grants": gs})
    for d in ds:
        typer.echo(f"{d['name']} v{d['version']}  {d['rows']} rows  id={d['id_column']}  label={d['label_column']}"
                   f"  sha256={d['sha256'][:16]}  {d['path']}")
    for g in gs:
        state = "revoked" if g["revoked"] else "active"
        typer.echo(f"  grant {g['id']} {g['dataset']} -> {g['grantee']} ({state}) components={','.join(g['components'])}"
                   f" uses={g['uses']}/{g['max_uses'] or '-'} expires={_t(g['expires'])} job={g['job_id'] or '-'}"
                   f" initiator={g['initiator'] or '-'} bounds={json.dumps(g['bounds']) if g['bounds'] else '-'}")


def _when(text: str | None) -> float | None:
    if not text:
        return None
    m = re.fullmatch(r"\+(\d+)([smhd])", text.strip())
    if m:
        return time.time() + int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise typer.BadParameter(f"--expires {text!r}: write +30d, +12h or an ISO date (2027-01-31)") from None


@data_app.command("grant")
def data_grant(dataset: str = typer.Argument(...), to: str = typer.Option(..., "--to", help="The partner node"),
               components: str = typer.Option("*", help="Comma-separated components allowed ('*': any installed)"),
               job: Optional[str] = typer.Option(None, "--job", help="Only this job id"),
               expires: Optional[str] = typer.Option(None, help="+30d, +12h, or an ISO date"),
               uses: Optional[int] = typer.Option(None, "--uses", help="At most this many jobs"),
               initiator: Optional[str] = typer.Option(None, help="Only jobs this node initiated"),
               bound: list[str] = typer.Option([], "--bound", help="COMPONENT.PARAM=MIN..MAX or =A,B (repeat)"),
               node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt) -> None:
    """Grant a partner the use of a data set (signed with this node's key)."""
    from atoll.node.data import parse_bound

    def go() -> dict:
        bounds: dict[str, dict[str, dict]] = {}
        for b in bound:
            comp, param, rule = parse_bound(b)
            bounds.setdefault(comp, {})[param] = rule
        return _client(node, token).post("/grants", {
            "dataset": dataset, "grantee": to, "components": [c.strip() for c in components.split(",") if c.strip()],
            "job_id": job, "expires": _when(expires), "max_uses": uses, "initiator": initiator, "bounds": bounds})
    g = _run(go)
    typer.echo(f"grant {g['id']}: {g['dataset']} -> {g['grantee']} for {', '.join(g['components'])} (signed)")


@data_app.command("grants")
def data_grants(dataset: Optional[str] = typer.Argument(None), node: Optional[str] = NodeOpt,
                token: Optional[str] = TokenOpt) -> None:
    """The grants (JSON)."""
    _echo_json(_run(lambda: _client(node, token).get("/grants", params={"dataset": dataset} if dataset else None)))


@data_app.command("revoke")
def data_revoke(grant_id: str = typer.Argument(...), node: Optional[str] = NodeOpt,
                token: Optional[str] = TokenOpt) -> None:
    """Revoke a grant: no task starts under it again."""
    g = _run(lambda: _client(node, token).post(f"/grants/{grant_id}/revoke"))
    typer.echo(f"grant {g['id']} revoked")


@data_app.command("sample")
def data_sample(dataset: str = typer.Argument(..., help="A bundled data set, e.g. default_credit"),
                out: Path = typer.Option(..., "--out", help="CSV file to write"),
                split: str = typer.Option("hetero"), party: str = typer.Option("guest", help="guest or host"),
                rows: Optional[int] = typer.Option(None, help="Keep the first N rows")) -> None:
    """Write a bundled data set's part to a CSV file (to try a node with real data)."""
    import pandas as pd

    from atoll import datasets

    def go() -> int:
        df = pd.read_csv(datasets.path(dataset, split, party))
        if rows:
            df = df.head(rows)
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
        return len(df)
    n = _run(go)
    typer.echo(f"wrote {n} rows of {dataset} ({split}, {party}) to {out}")


# ====================================================================== audit, models
@audit_app.command("show")
def audit_show(job: Optional[str] = typer.Option(None, "--job", help="Only this job's records"),
               after: int = typer.Option(0, help="Records after this sequence number"),
               node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt, as_json: bool = JsonOpt) -> None:
    """The audit records."""
    recs = _run(lambda: _client(node, token).get("/audit", params={"after": after, **({"job_id": job} if job else {})}))
    if as_json:
        return _echo_json(recs)
    for r in recs:
        who = r["actor"] + (f" <-> {r['peer']}" if r["peer"] else "")
        typer.echo(f"{r['seq']:>6} {_t(r['t'])} [E:{r['event_id'][:12]}] {r['kind']:<22} {who:<20} "
                   f"{r['job_id'] or '-'} {json.dumps(r['body'], sort_keys=True)[:200]}")


@audit_app.command("verify")
def audit_verify(partners: bool = typer.Option(False, "--partners", help="Also check the heads partners hold"),
                 node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt) -> None:
    """Check the hash chain (and the signed heads): exit 1 if a record was changed, deleted or moved."""
    v = _run(lambda: _client(node, token).get("/audit/verify", params={"partners": partners}))
    if v["ok"]:
        typer.echo(f"audit chain OK: {v['records']} records, {v['heads_checked']} heads checked, head "
                   f"{v['head']['hash'][:16] if v['head'] else '-'}")
        return
    typer.secho(f"audit chain BROKEN ({v['records']} records):", fg="red", err=True)
    for p in v["problems"]:
        typer.echo(f"  {p}", err=True)
    raise typer.Exit(1)


@model_app.command("list")
def model_list(node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt, as_json: bool = JsonOpt) -> None:
    """This node's model parts of finished jobs (versioned, pinned by SHA-256)."""
    ms = _run(lambda: _client(node, token).get("/models"))
    if as_json:
        return _echo_json(ms)
    for m in ms:
        typer.echo(f"{m['id']}  {m['name']} v{m['version']}  party={m['party']}  {m['component']}  "
                   f"sha256={m['sha256'][:16]}  {m['bytes']} bytes")


@model_app.command("get")
def model_get(model_id: str = typer.Argument(...), out: Path = typer.Option(..., "--out"),
              node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt) -> None:
    """Download a model part (the wire-encoded bytes the node pinned)."""
    import hashlib

    c = _run(lambda: _client(node, token))
    meta = _run(lambda: c.get(f"/models/{model_id}"))
    data = _run(lambda: c.get(f"/models/{model_id}", params={"download": True}))
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        typer.secho("the downloaded bytes do not match the model's pinned SHA-256", fg="red", err=True)
        raise typer.Exit(1)
    out.write_bytes(data)
    typer.echo(f"{meta['name']} v{meta['version']} -> {out} (sha256 verified)")


# ====================================================================== users
@user_app.command("add")
def user_add(name: str = typer.Argument(..., help="The new user's name"),
             role: str = typer.Option("viewer", help="viewer (reads only: the board, status, logs, audit) or admin"),
             node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt) -> None:
    """Make a user of this node (an admin's command); prints the user's API token once."""
    out = _run(lambda: _client(node, token).post("/users", {"name": name, "role": role}))
    typer.echo(f"user {out['user']!r} ({out['role']}) made; its API token (shown once; the board's login takes it):")
    typer.echo(out["token"])


@user_app.command("list")
def user_list(node: Optional[str] = NodeOpt, token: Optional[str] = TokenOpt, as_json: bool = JsonOpt) -> None:
    """The node's users and their roles."""
    users = _run(lambda: _client(node, token).get("/users"))
    if as_json:
        _echo_json(users)
        return
    for u in users:
        typer.echo(f"{u['name']:<20} {u['role']:<7} since {_t(u['created'])}")


def register(app: typer.Typer) -> None:
    """Add the node's commands to the ``atoll`` CLI."""
    app.add_typer(node_app, name="node")
    app.add_typer(job_app, name="job")
    app.add_typer(data_app, name="data")
    app.add_typer(audit_app, name="audit")
    app.add_typer(model_app, name="model")
    app.add_typer(user_app, name="user")
    app.command("login")(login)



