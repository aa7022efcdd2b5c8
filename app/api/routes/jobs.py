"""The list, status and cancel routes every kind of job has, made by one factory:
``/v1/jobs`` (every kind), ``/v1/audits`` and ``/v1/defenses`` (one kind each)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import SessionDep, TenantDep
from app.api.schemas.common import ERRORS, PageDep, responses
from app.api.schemas.jobs import JobKind, JobPage, JobStatus
from app.api.services.jobs import job_status, job_statuses
from app.core.jobs import get_job, list_jobs, request_cancel

_CANCEL = responses(409, _409="The job has already finished")


def job_router(prefix: str, tag: str, kind: JobKind | None, noun: str) -> APIRouter:
    """A router with ``GET ""``, ``GET /{job_id}`` and ``POST /{job_id}/cancel`` for jobs
    of ``kind`` (any kind when ``None``, with a ``kind`` query filter), named ``noun``."""
    router = APIRouter(prefix=prefix, tags=[tag], responses=ERRORS)

    if kind is None:

        @router.get("", response_model=JobPage, summary="List jobs of every kind, newest first")
        def list_any(session: SessionDep, tenant: TenantDep, page: PageDep,
                     kind: JobKind | None = None) -> JobPage:
            return _page(session, tenant.id, kind, page.limit, page.offset)

    else:

        @router.get("", response_model=JobPage, summary=f"List {noun}s, newest first")
        def list_kind(session: SessionDep, tenant: TenantDep, page: PageDep) -> JobPage:
            return _page(session, tenant.id, kind, page.limit, page.offset)

    @router.get("/{job_id}", response_model=JobStatus, summary=f"Status of a {noun}")
    def status(job_id: str, session: SessionDep, tenant: TenantDep) -> JobStatus:
        return job_status(session, get_job(session, tenant.id, job_id, kind=kind))

    @router.post("/{job_id}/cancel", response_model=JobStatus, responses=_CANCEL,
                 summary=f"Cancel a {noun}")
    def cancel(job_id: str, session: SessionDep, tenant: TenantDep) -> JobStatus:
        job = request_cancel(session, get_job(session, tenant.id, job_id, kind=kind))
        return job_status(session, job)

    return router


def _page(session: SessionDep, tenant_id: str, kind: str | None, limit: int,
          offset: int) -> JobPage:
    rows, total = list_jobs(session, tenant_id, kind, limit, offset)
    return JobPage(items=job_statuses(session, rows), total=total, limit=limit, offset=offset)


router = job_router("/v1/jobs", "jobs", None, "job")
