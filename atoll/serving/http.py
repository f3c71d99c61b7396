"""The guest's predict API (HTTP/JSON, FastAPI) and its Prometheus endpoint.

``POST /api/v1/predict`` ``{"ids": [...], "features": {column: [values...]}?, "exposure": [...]?}``
answers ``{"ids", "scores", "versions", "level", "sha256", "request_id"}``; a request that cannot
be scored answers ``{"error": category, "step": step, "detail": ...}`` with the category's HTTP
status (404 unknown id, 422 malformed, 502 a host's bad answer, 503 no replica, 504 timeout).
``GET /api/v1/status`` shows routes and replicas; ``GET /metrics`` is the Prometheus scrape.
With an admin token (``Authorization: Bearer TOKEN``): ``POST /api/v1/publish {version}``,
``/api/v1/canary {version, fraction}``, ``/api/v1/promote``, ``/api/v1/rollback``.
"""

from __future__ import annotations

import hmac
from typing import Any

import pandas as pd
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from atoll.errors import ConfigError
from atoll.serving.protocol import MAX_BATCH, GuestServing, ServingError


class PredictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str | int] = Field(min_length=1, max_length=MAX_BATCH)
    features: dict[str, list[float | None]] | None = None
    exposure: list[float] | None = None


class CanaryBody(BaseModel):
    version: str
    fraction: float = Field(ge=0.0, le=1.0)


class VersionBody(BaseModel):
    version: str


def _error(e: ServingError) -> JSONResponse:
    return JSONResponse({"error": e.category, "step": e.step, "detail": str(e)}, status_code=e.status)


def make_app(guest: GuestServing, admin_token: str | None = None) -> FastAPI:
    app = FastAPI(title="Atoll serving (guest)", docs_url=None, redoc_url=None)

    def admin(auth: str | None) -> None:
        if not admin_token or not auth or not hmac.compare_digest(auth, f"Bearer {admin_token}"):
            raise ServingError("forbidden", "auth", "admin calls need the admin token")

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, e: ServingError) -> JSONResponse:
        return _error(e)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, e: ConfigError) -> JSONResponse:
        return JSONResponse({"error": "bad_request", "step": "config", "detail": str(e)}, status_code=409)

    @app.post("/api/v1/predict")
    def predict(body: PredictBody) -> dict[str, Any]:
        ids = [str(i) for i in body.ids]
        frame = None
        if body.features is not None:
            if any(len(v) != len(ids) for v in body.features.values()):
                raise ServingError("bad_request", "features", "send one value per id for every feature")
            frame = pd.DataFrame(body.features, index=ids, dtype=float)
        return guest.score(ids, frame, body.exposure).to_json()

    @app.get("/api/v1/status")
    def status() -> dict[str, Any]:
        return guest.status()

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return guest.metrics.prometheus()

    @app.post("/api/v1/publish")
    def publish(body: VersionBody, authorization: str | None = Header(None)) -> dict[str, Any]:
        admin(authorization)
        return {"published": body.version, "hosts": guest.publish(body.version)}

    @app.post("/api/v1/canary")
    def canary(body: CanaryBody, authorization: str | None = Header(None)) -> dict[str, Any]:
        admin(authorization)
        guest.start_canary(body.version, body.fraction)
        return guest.status()

    @app.post("/api/v1/promote")
    def promote(authorization: str | None = Header(None)) -> dict[str, Any]:
        admin(authorization)
        guest.router.promote()
        return guest.status()

    @app.post("/api/v1/rollback")
    def rollback(authorization: str | None = Header(None)) -> dict[str, Any]:
        admin(authorization)
        guest.router.rollback()
        return guest.status()

    return app
