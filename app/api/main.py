"""The FastAPI application."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.docs import install_docs
from app.api.errors import install_error_handlers
from app.api.idempotency import IdempotencyMiddleware
from app.api.metrics import HTTP_LATENCY, HTTP_REQUESTS
from app.api.routes import (
    audits,
    checks,
    datasets,
    defenses,
    dicom,
    dicomweb,
    evidence,
    health,
    jobs,
    models,
    oip,
    remote,
    schemas,
    tenants,
    webhooks,
)
from app.api.timing import ServerTimingMiddleware
from app.core.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """
RobustDx serves diagnoses from registered medical image classifiers and audits their
robustness to adversarial attacks and common perturbations.

Authenticate with `Authorization: Bearer <api key>` ("Authorize" above). Every resource
belongs to a tenant; another tenant's ids answer 404. Errors are
`{"error": {"code", "message", "details"}}` with a 4xx status for anything the client can
fix; timestamps are UTC in ISO 8601 with a `Z`.
"""


class MetricsMiddleware:
    """Request counts and latency by route template (a plain ASGI middleware: no extra
    task or body copy per request, unlike ``@app.middleware("http")``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = str(getattr(route, "path", "unmatched")) if route else "unmatched"
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(route=template, method=method, status=str(status[0])).inc()
            HTTP_LATENCY.labels(route=template, method=method).observe(
                time.perf_counter() - start
            )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from app.api.startup import shutdown, startup

        state = startup(settings)
        app.state.robustdx = state
        try:
            yield
        finally:
            shutdown(state)

    app = FastAPI(
        title="RobustDx",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(IdempotencyMiddleware, ttl_seconds=settings.idempotency_ttl_seconds)
    app.add_middleware(MetricsMiddleware)
    install_docs(app)
    app.add_middleware(ServerTimingMiddleware)

    app.include_router(health.router)
    app.include_router(tenants.router)
    app.include_router(jobs.router)
    app.include_router(audits.job_routes)
    app.include_router(defenses.job_routes)
    app.include_router(remote.router)
    app.include_router(models.router)
    app.include_router(checks.router)
    app.include_router(datasets.router)
    app.include_router(audits.router)
    app.include_router(evidence.router)
    app.include_router(defenses.router)
    app.include_router(schemas.router)
    app.include_router(webhooks.router)
    app.include_router(dicomweb.router)
    app.include_router(dicom.router)
    app.include_router(oip.router)
    return app
