"""The board's routes on the node's FastAPI app: the page, its assets, and the few API routes it adds.

Mounted by :func:`atoll.node.api.build_app`; every data route sits under the node's
``/api/v1`` with the node's own token check (the ``user`` dependency it hands over), and
every change the board makes goes through the node's existing routes (approve, reject,
grants, ...) so the viewer/admin rule of the API is the board's rule too.

The page and its two assets (``/board/``, ``/board/static/board.js|board.css``) hold no
data: they are the login form and the code that asks the API with the token the user
pastes. The token lives in the tab's ``sessionStorage`` and travels only in the
``Authorization`` header — never a cookie — so another site cannot make the browser
act with it (no CSRF). Every response of the board and the API carries a strict Content
Security Policy (scripts and styles from the node only, no inline script, no framing).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from atoll.board import views

if TYPE_CHECKING:
    from atoll.node.service import Node

STATIC = Path(__file__).parent / "static"
ASSETS = {"board.js": "text/javascript; charset=utf-8", "board.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                    "Cross-Origin-Opener-Policy": "same-origin"}
#: a live job stream ends after this many seconds (the page reconnects), so none is held forever
STREAM_SECONDS = 300.0
STREAM_POLL = 0.4
LOG_LINES = 500
#: the page keeps (and a new stream starts with) the last LOG_TAIL lines of this node's party's log
LOG_TAIL = 2000
_PLOT = re.compile(r"^[A-Za-z0-9_.@-]{1,120}\.png$")


def _tail_cursor(node: "Node", job_id: str, party: str, n: int) -> int:
    """The log line id after which the last ``n`` lines of the party's log follow (0: all of it)."""
    from atoll.node.store import LogLine

    with node.db.session() as s:
        row = s.execute(select(LogLine.id).where(LogLine.run_id == job_id, LogLine.party == party)
                        .order_by(LogLine.id.desc()).offset(n).limit(1)).scalar()
    return int(row or 0)


def _load_assets() -> dict[str, bytes]:
    return {name: (STATIC / name).read_bytes() for name in (*ASSETS, "index.html")}


class SecurityHeaders:
    """ASGI middleware: the security headers on every board and API response (streams included)."""

    def __init__(self, app: Any, prefix: str):
        self.app, self.prefix = app, prefix
        self.headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(("/board", self.prefix)):
            await self.app(scope, receive, send)
            return
        extra = self.headers + ([(b"cache-control", b"no-store")] if path.startswith(self.prefix) else [])

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": list(message.get("headers", []))
                           + [(k, v) for k, v in extra if k not in have]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount(app: FastAPI, node: "Node", prefix: str, user: Callable[..., str]) -> None:
    """Add the board to ``app`` (the node's REST app): ``/board/`` and its API routes."""
    assets = _load_assets()

    app.add_middleware(SecurityHeaders, prefix=prefix)

    @app.get("/board", include_in_schema=False)
    def board_root() -> RedirectResponse:
        return RedirectResponse("/board/")

    @app.get("/board/", include_in_schema=False)
    def board_page() -> Response:
        return Response(assets["index.html"], media_type="text/html; charset=utf-8")

    @app.get("/board/static/{name}", include_in_schema=False)
    def board_asset(name: str) -> Response:
        if name not in ASSETS:  # a fixed list: nothing else of the disk is reachable
            raise HTTPException(404, "no such board asset")
        return Response(assets[name], media_type=ASSETS[name])

    api = APIRouter(prefix=prefix)

    def _job_text(job_id: str) -> str:
        return str(node.proposal(job_id)["proposal"].get("job_text") or "")

    def _dag(job_id: str) -> dict[str, Any]:
        return views.dag(node.job(job_id), _job_text(job_id))

    @api.get("/board/jobs")
    def board_jobs(state: Optional[str] = None, partner: Optional[str] = None, component: Optional[str] = None,
                   since: Optional[float] = None, until: Optional[float] = None,
                   who: str = Depends(user)) -> list[dict[str, Any]]:
        """The job list with each job's nodes and components, filtered."""
        from atoll.node.store import Job

        rows = node.jobs(state, limit=1000)
        with node.db.session() as s:
            proposals = dict(s.execute(select(Job.id, Job.proposal).where(Job.id.in_([r["id"] for r in rows]))).all())
        full = [views.job_row(r, proposals.get(r["id"]) or {}) for r in rows]
        return views.filter_jobs(full, state, partner, component, since, until)

    @api.get("/board/partners")
    def board_partners(who: str = Depends(user)) -> list[dict[str, Any]]:
        """Partners with the days left on their certificates and a warning under 30 days."""
        return views.partner_rows(node.partners(), time.time())

    @api.get("/jobs/{job_id}/dag")
    def job_dag(job_id: str, who: str = Depends(user)) -> dict[str, Any]:
        """Every step with every party's task state (see :func:`atoll.board.views.dag`)."""
        return _dag(job_id)

    @api.get("/jobs/{job_id}/steps/{step}")
    def job_step(job_id: str, step: str, who: str = Depends(user)) -> dict[str, Any]:
        """This node's party's part of one step: record, outputs, model part (own columns only)."""
        j = node.job(job_id)
        params = {s["id"]: s["params"] for s in views.pipeline(_job_text(job_id))}
        if step not in params:
            raise HTTPException(404, f"job {job_id!r} has no step {step!r}")
        run = node.run_store(job_id)
        if not run.exists():
            return views.step_view(step, None, {}, params[step])
        party = run.party(j["own_party"])
        return views.step_view(step, party.record(step), party.outputs(step), params[step])

    @api.get("/jobs/{job_id}/stream")
    async def job_stream(job_id: str, request: Request, after: int = 0,
                         who: str = Depends(user)) -> StreamingResponse:
        """Server-sent events: ``dag`` (the DAG view, whenever it changes), ``log`` (this node's
        party's new log lines, at most LOG_LINES at a time), ``end`` (the job ended)."""
        own = (await run_in_threadpool(node.job, job_id))["own_party"]  # an unknown job: 404, no stream
        run = node.run_store(job_id).party(own)

        def own_log(cursor: int) -> list[dict[str, Any]]:
            return run.log_lines(cursor, limit=LOG_LINES)

        if after <= 0:  # a new page starts at the log's tail: a long log never floods it
            after = await run_in_threadpool(_tail_cursor, node, job_id, own, LOG_TAIL)

        async def events() -> Any:
            last, cursor, end = "", after, time.monotonic() + STREAM_SECONDS
            yield "retry: 1000\n\n"
            while time.monotonic() < end:
                if await request.is_disconnected():
                    return
                view = await run_in_threadpool(_dag, job_id)
                text = json.dumps(view, sort_keys=True)
                if text != last:
                    last = text
                    yield f"event: dag\ndata: {text}\n\n"
                # at most LOG_LINES a message; when the job ended, the rest of the tail too
                for _ in range(LOG_TAIL // LOG_LINES + 1 if view["ended"] else 1):
                    lines = await run_in_threadpool(own_log, cursor)
                    if not lines:
                        break
                    cursor = lines[-1]["id"]
                    yield f"event: log\ndata: {json.dumps(lines)}\n\n"
                if view["ended"]:
                    yield "event: end\ndata: {}\n\n"
                    return
                yield ": keep-alive\n\n"
                await asyncio.sleep(STREAM_POLL)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @api.get("/jobs/{job_id}/plots/{name}")
    def job_plot(job_id: str, name: str, who: str = Depends(user)) -> Response:
        """One of the plots the job's report made (ROC, KS, loss), as PNG."""
        from atoll.node.store import RunPlot

        node.job(job_id)
        if not _PLOT.match(name):
            raise HTTPException(404, "no such plot")
        with node.db.session() as s:
            row = s.get(RunPlot, (job_id, name))
            if row is None:
                raise HTTPException(404, f"job {job_id!r} has no plot {name!r} (yet)")
            return Response(row.data, media_type="image/png")

    app.include_router(api)
