"""Liveness, readiness (each dependency really checked) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select

from app.api.deps import DatabaseDep, SettingsDep, StorageDep
from app.api.metrics import JOBS, QUEUE_DEPTH, REGISTRY
from app.core.db import JobRow
from app.core.queue import broker_ping, queue_depths

router = APIRouter(tags=["health"])


@router.get("/health/live", summary="The process is up")
def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/health/ready",
    summary="Database, broker and storage are usable",
    responses={503: {"description": "A dependency failed; `checks` says which"}},
)
def ready(db: DatabaseDep, storage: StorageDep, settings: SettingsDep) -> JSONResponse:
    checks: dict[str, str] = {}
    probes = {
        "database": db.ping,
        "broker": lambda: broker_ping(settings.resolved_broker_url),
        "storage": storage.ping,
    }
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # a readiness probe reports every failure kind alike
            checks[name] = f"failed: {type(exc).__name__}: {exc}"[:300]
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                        status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(db: DatabaseDep, settings: SettingsDep) -> Response:
    try:
        for queue, depth in queue_depths(settings.resolved_broker_url).items():
            QUEUE_DEPTH.labels(queue=queue).set(depth)
    except Exception:  # metrics must render even when the broker is down
        pass
    with db.session() as session:
        rows = session.execute(
            select(JobRow.kind, JobRow.status, func.count()).group_by(JobRow.kind, JobRow.status)
        ).all()
    JOBS.clear()
    for kind, status, count in rows:
        JOBS.labels(kind=kind, status=status).set(count)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
