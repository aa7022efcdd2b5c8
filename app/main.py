"""The FastAPI application."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from starlette.routing import Match

from app.deps import get_settings
from app.errors import install_error_handlers
from app.metrics import HTTP_LATENCY, HTTP_REQUESTS
from app.routes import (
    audits,
    checks,
    datasets,
    defenses,
    health,
    jobs,
    models,
    schemas,
    tenants,
)
from app.settings import Settings

logger = logging.getLogger(__name__)

DESCRIPTION = """
RobustDx serves diagnoses from registered medical image classifiers and audits their
robustness to adversarial attacks and common perturbations.

Authenticate with `Authorization: Bearer <api key>`. Every resource belongs to a tenant;
another tenant's ids answer 404. Errors are `{"error": {"code", "message", "details"}}`.
"""


def _route_template(request: Request) -> str:
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return str(getattr(route, "path", request.url.path))
    return "unmatched"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from app.startup import shutdown, startup

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
    )
    app.dependency_overrides[get_settings] = lambda: settings
    install_error_handlers(app)

    @app.middleware("http")
    async def record_metrics(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        route = _route_template(request)
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            HTTP_REQUESTS.labels(route=route, method=request.method, status=str(status)).inc()
            HTTP_LATENCY.labels(route=route, method=request.method).observe(
                time.perf_counter() - start
            )

    app.include_router(health.router)
    app.include_router(tenants.router)
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(checks.router)
    app.include_router(datasets.router)
    app.include_router(audits.router)
    app.include_router(defenses.router)
    app.include_router(schemas.router)
    return app
