"""The node's REST API (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/docs``) for its own users.

Every route under ``/api/v1`` except ``/health`` and ``/auth/bootstrap`` needs
``Authorization: Bearer TOKEN``. There are no default credentials: ``atoll node init``
prints a one-time bootstrap token; ``POST /api/v1/auth/bootstrap`` exchanges it (once)
for the first user's API token. Tokens are random 256-bit strings kept as SHA-256 only.
Each user has a role: ``admin`` (everything; the first user is one) or ``viewer`` (every
GET; any POST that changes something — submit, approve, reject, cancel, resume, register,
grant, revoke, new users — is refused with 403). The board (:mod:`atoll.board`, at
``/board/``) uses these same routes with the same tokens.

Routes (each has a CLI twin; the board builds on the same ones):

=======  ==========================================  ======================================
GET      /health                                     liveness (no token)
POST     /auth/bootstrap  {token}                    first login -> {user, token}
GET      /auth/whoami                                the caller and its role
POST     /auth/tokens     {label}                    another token for the caller
GET      /users | POST /users {name, role}           users (admin) -> the new user's token
GET      /node                                       name, addresses, key, cert expiry, store
GET      /partners                                   name, address, cert expiry + SHA-256
GET      /data  | POST /data {name, path, id, label} data registry (no content)
GET      /grants?dataset= | POST /grants {...}       signed grants (with uses)
POST     /grants/{id}/revoke
GET      /jobs?state=     | POST /jobs {job_text}    list; submit (a signed proposal to all)
GET      /jobs/{id}                                  state, parties + decisions, task states
GET      /jobs/{id}/proposal                         the signed proposal
GET      /jobs/{id}/events?cursor=                   this node's party's events
GET      /jobs/{id}/logs?party=&after=               own party's log; others' task states
GET      /jobs/{id}/report                           this party's report (metrics, steps)
POST     /jobs/{id}/approve | /reject {reason} | /cancel | /resume
GET      /approvals                                  proposals waiting for this node
GET      /audit?after=&job_id=&limit=                audit records
GET      /audit/verify?partners=                     chain check (+ heads partners hold)
GET      /models  | GET /models/{id}                 model store (metadata; ``?download=1``)
GET      /board/jobs?state=&partner=&component=      the board's job list (with nodes, components)
GET      /jobs/{id}/dag | /jobs/{id}/stream          steps x parties states; the same, live (SSE)
GET      /jobs/{id}/steps/{step}                     own party's record, outputs, model part
GET      /jobs/{id}/plots/{name}                     a report plot (PNG)
=======  ==========================================  ======================================
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any, Optional

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from atoll._version import __version__
from atoll.errors import AtollError, ConfigError
from atoll.node.data import PolicyRefused
from atoll.node.service import Node
from atoll.node.store import ROLES, Token, User

PREFIX = "/api/v1"
TOKEN_TTL = 5.0


class BootstrapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(max_length=200)
    user: str = Field("admin", pattern=r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
    role: str = Field("viewer", pattern="^(" + "|".join(ROLES) + ")$")
    label: str = Field("", max_length=128)


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field("", max_length=128)


class DataIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    path: str
    id: str
    label: Optional[str] = None


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str
    grantee: str
    components: list[str] = Field(default_factory=lambda: ["*"])
    job_id: Optional[str] = None
    expires: Optional[float] = Field(None, description="UNIX time")
    max_uses: Optional[int] = Field(None, ge=1)
    initiator: Optional[str] = None
    bounds: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_text: str = Field(max_length=1_000_000)


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=1000)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def build_app(node: Node) -> FastAPI:
    """The REST API of ``node``."""
    app = FastAPI(title=f"Atoll node {node.name}", version=__version__,
                  description="One organisation's Atoll node: data registry, grants, jobs, audit, models.")
    bearer = HTTPBearer(auto_error=False)
    # token hash -> (user, role, token id, when checked): the database is asked again after TOKEN_TTL s,
    # so a revoked token (or a changed role) takes effect within that time; last_used is written at
    # most once a minute
    cache: dict[str, tuple[str, str, int, float]] = {}
    last_write: dict[int, float] = {}

    @app.exception_handler(AtollError)
    async def _atoll_error(request: Request, exc: AtollError) -> JSONResponse:
        status = 403 if isinstance(exc, PolicyRefused) else 404 if "no job" in str(exc) or "no model" in str(exc) \
            else 400
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=status)

    def caller(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> tuple[str, str]:
        if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
            raise HTTPException(401, "no token: send 'Authorization: Bearer TOKEN' (atoll login gets one)",
                                headers={"WWW-Authenticate": "Bearer"})
        h = _hash(creds.credentials)
        now = time.time()
        hit = cache.get(h)
        if hit is not None and now - hit[3] < TOKEN_TTL:
            name, role, tid = hit[0], hit[1], hit[2]
        else:
            with node.db.session() as s:
                tok = s.execute(select(Token).where(Token.hash == h)).scalar()
                if tok is None or tok.revoked is not None:
                    cache.pop(h, None)
                    raise HTTPException(401, "wrong or revoked token; log in again (atoll login)",
                                        headers={"WWW-Authenticate": "Bearer"})
                u = s.get(User, tok.user_id)
                name, role, tid = u.name, u.role, tok.id
            if len(cache) > 10_000:
                cache.clear()
            cache[h] = (name, role, tid, now)
        if now - last_write.get(tid, 0) > 60:
            last_write[tid] = now
            with node.db.session.begin() as s:
                row = s.get(Token, tid)
                if row is not None:
                    row.last_used = now
        return name, role

    def user(who: tuple[str, str] = Depends(caller)) -> str:
        """Any logged-in user (reads)."""
        return who[0]

    def writer(who: tuple[str, str] = Depends(caller)) -> str:
        """A user who may change things (not a viewer)."""
        if who[1] == "viewer":
            raise HTTPException(403, f"user {who[0]!r} is a viewer: viewers read, they cannot change anything "
                                "(an admin makes users with atoll user add)")
        return who[0]

    def admin(who: tuple[str, str] = Depends(caller)) -> str:
        if who[1] != "admin":
            raise HTTPException(403, f"user {who[0]!r} is not an admin")
        return who[0]

    api = APIRouter(prefix=PREFIX)

    @api.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "node": node.name}

    # ------------------------------------------------------------------ auth
    @api.post("/auth/bootstrap")
    def bootstrap(body: BootstrapIn) -> dict[str, Any]:
        expected = node.cfg.bootstrap_sha256
        if not expected or node.db.get_meta("bootstrap_used"):
            raise HTTPException(403, "the bootstrap token was already used; log in with an API token")
        if not hmac.compare_digest(_hash(body.token.strip()), expected):
            node.audit.append("auth.bootstrap_refused")
            raise HTTPException(401, "wrong bootstrap token (atoll node init printed it, and wrote it to "
                                "bootstrap.token)")
        token = "atoll-" + secrets.token_urlsafe(32)
        with node.db.session.begin() as s:
            u = s.execute(select(User).where(User.name == body.user)).scalar()
            if u is None:
                u = User(name=body.user, created=time.time(), role="admin")
                s.add(u)
                s.flush()
            s.add(Token(user_id=u.id, hash=_hash(token), label="bootstrap", created=time.time()))
        node.db.set_meta("bootstrap_used", str(time.time()))
        if node.cfg.bootstrap_file:
            node.cfg.resolve(node.cfg.bootstrap_file).unlink(missing_ok=True)
        node.audit.append("auth.bootstrap", actor=body.user)
        return {"user": body.user, "token": token}

    @api.get("/auth/whoami")
    def whoami(who: tuple[str, str] = Depends(caller)) -> dict[str, Any]:
        return {"user": who[0], "role": who[1], "node": node.name}

    @api.post("/auth/tokens")
    def new_token(body: TokenIn, who: str = Depends(user)) -> dict[str, Any]:
        token = "atoll-" + secrets.token_urlsafe(32)
        with node.db.session.begin() as s:
            u = s.execute(select(User).where(User.name == who)).scalar()
            s.add(Token(user_id=u.id, hash=_hash(token), label=body.label, created=time.time()))
        node.audit.append("auth.token_created", actor=who, label=body.label)
        return {"user": who, "token": token}

    @api.get("/users")
    def users(who: str = Depends(admin)) -> list[dict[str, Any]]:
        with node.db.session() as s:
            return [{"name": u.name, "role": u.role, "created": u.created}
                    for u in s.execute(select(User).order_by(User.id)).scalars()]

    @api.post("/users")
    def add_user(body: UserIn, who: str = Depends(admin)) -> dict[str, Any]:
        token = "atoll-" + secrets.token_urlsafe(32)
        with node.db.session.begin() as s:
            if s.execute(select(User).where(User.name == body.name)).scalar() is not None:
                raise ConfigError(f"user {body.name!r} exists; give it another token with POST /auth/tokens "
                                  "as that user")
            u = User(name=body.name, created=time.time(), role=body.role)
            s.add(u)
            s.flush()
            s.add(Token(user_id=u.id, hash=_hash(token), label=body.label or "created", created=time.time()))
        node.audit.append("auth.user_created", actor=who, user=body.name, role=body.role)
        return {"user": body.name, "role": body.role, "token": token}

    # ------------------------------------------------------------------ node
    @api.get("/node")
    def info(who: str = Depends(user)) -> dict[str, Any]:
        return node.info()

    @api.get("/partners")
    def partners(who: str = Depends(user)) -> list[dict[str, Any]]:
        return node.partners()

    # ------------------------------------------------------------------ data
    @api.get("/data")
    def data_list(who: str = Depends(user)) -> list[dict[str, Any]]:
        return node.registry.datasets()

    @api.post("/data")
    def data_register(body: DataIn, who: str = Depends(writer)) -> dict[str, Any]:
        d = node.registry.register(body.name, body.path, body.id, body.label)
        node.audit.append("data.registered", actor=who, dataset=d["name"], version=d["version"],
                          sha256=d["sha256"], rows=d["rows"], columns=len(d["columns"]))
        return d

    @api.get("/grants")
    def grants(dataset: Optional[str] = None, who: str = Depends(user)) -> list[dict[str, Any]]:
        return node.registry.grants(dataset)

    @api.post("/grants")
    def grant(body: GrantIn, who: str = Depends(writer)) -> dict[str, Any]:
        if body.grantee != node.name and node.cfg.partner(body.grantee) is None:
            raise ConfigError(f"{body.grantee!r} is not a partner of {node.name!r} (not in its config)")
        g = node.registry.grant(body.dataset, body.grantee, body.components, body.job_id, body.expires,
                                body.max_uses, body.initiator, body.bounds)
        node.audit.append("grant.created", actor=who, grant=g["id"], dataset=g["dataset"], grantee=g["grantee"],
                          components=g["components"], expires=g["expires"], max_uses=g["max_uses"],
                          job=g["job_id"], initiator=g["initiator"], bounds=g["bounds"])
        return g

    @api.post("/grants/{grant_id}/revoke")
    def revoke(grant_id: str, who: str = Depends(writer)) -> dict[str, Any]:
        g = node.registry.revoke(grant_id)
        node.audit.append("grant.revoked", actor=who, grant=grant_id, dataset=g["dataset"])
        return g

    # ------------------------------------------------------------------ jobs
    @api.get("/jobs")
    def jobs(state: Optional[str] = None, who: str = Depends(user)) -> list[dict[str, Any]]:
        return node.jobs(state)

    @api.post("/jobs")
    def submit(body: JobIn, who: str = Depends(writer)) -> dict[str, Any]:
        return node.submit(body.job_text, who)

    @api.get("/approvals")
    def approvals(who: str = Depends(user)) -> list[dict[str, Any]]:
        return [{**j, "proposal": node.proposal(j["id"])["proposal"]} for j in node.jobs("pending")]

    @api.get("/jobs/{job_id}")
    def job(job_id: str, who: str = Depends(user)) -> dict[str, Any]:
        return node.job(job_id)

    @api.get("/jobs/{job_id}/proposal")
    def proposal(job_id: str, who: str = Depends(user)) -> dict[str, Any]:
        return node.proposal(job_id)

    @api.get("/jobs/{job_id}/events")
    def events(job_id: str, cursor: int = 0, who: str = Depends(user)) -> dict[str, Any]:
        j = node.job(job_id)
        evs, nxt = node.run_store(job_id).party(j["own_party"]).events(cursor)
        return {"party": j["own_party"], "events": evs, "cursor": nxt}

    @api.get("/jobs/{job_id}/logs")
    def logs(job_id: str, party: Optional[str] = None, after: int = 0, who: str = Depends(user)) -> dict[str, Any]:
        j = node.job(job_id)
        party = party or j["own_party"]
        if party not in {p["party"] for p in j["parties"]}:
            raise ConfigError(f"job {job_id!r} has no party {party!r}")
        if party == j["own_party"]:
            return {"party": party, "own": True,
                    "lines": node.run_store(job_id).party(party).log_lines(after)}
        return {"party": party, "own": False, "note": "another node's party: its log stays there; these are "
                "the task states it reported", "tasks": [t for t in j["tasks"] if t["party"] == party]}

    @api.get("/jobs/{job_id}/report")
    def report(job_id: str, who: str = Depends(user)) -> dict[str, Any]:
        node.job(job_id)
        store = node.run_store(job_id)
        return {"report": store.report() if store.exists() else None}

    @api.post("/jobs/{job_id}/approve")
    def approve(job_id: str, body: ReasonIn | None = None, who: str = Depends(writer)) -> dict[str, Any]:
        return node.decide(job_id, True, who, body.reason if body else "")

    @api.post("/jobs/{job_id}/reject")
    def reject(job_id: str, body: ReasonIn | None = None, who: str = Depends(writer)) -> dict[str, Any]:
        return node.decide(job_id, False, who, body.reason if body else "")

    @api.post("/jobs/{job_id}/cancel")
    def cancel(job_id: str, who: str = Depends(writer)) -> dict[str, Any]:
        return node.cancel(job_id, who)

    @api.post("/jobs/{job_id}/resume")
    def resume(job_id: str, who: str = Depends(writer)) -> dict[str, Any]:
        return node.resume(job_id, who)

    # ------------------------------------------------------------------ audit, models
    @api.get("/audit")
    def audit(after: int = 0, job_id: Optional[str] = None, limit: int = 1000,
              who: str = Depends(user)) -> list[dict[str, Any]]:
        return node.audit.records(after, job_id, min(max(limit, 1), 10_000))

    @api.get("/audit/verify")
    def verify(partners: bool = False, who: str = Depends(user)) -> dict[str, Any]:
        return node.verify_audit(partners)

    @api.get("/models")
    def models(who: str = Depends(user)) -> list[dict[str, Any]]:
        return node.models()

    @api.get("/models/{model_id}")
    def model(model_id: str, download: bool = False, who: str = Depends(user)) -> Any:
        meta, data = node.model_blob(model_id)
        if download:
            return Response(data, media_type="application/octet-stream",
                            headers={"X-Atoll-SHA256": meta["sha256"]})
        return meta

    app.include_router(api)
    from atoll.board import mount

    mount(app, node, PREFIX, user)
    return app
