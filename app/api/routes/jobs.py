from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.api.deps import SessionDep, TenantDep
from app.api.schemas.common import ERRORS
from app.api.schemas.jobs import JobPage, JobStatus
from app.core.jobs import get_job, list_jobs, request_cancel

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)


@router.get("", response_model=JobPage, summary="List jobs of every kind, newest first")
def get_jobs(
    session: SessionDep,
    tenant: TenantDep,
    kind: Literal["audit", "defense", "check", "route"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobPage:
    rows, total = list_jobs(session, tenant.id, kind, limit, offset)
    return JobPage(items=[JobStatus.from_row(r) for r in rows], total=total, limit=limit,
                   offset=offset)


@router.get("/{job_id}", response_model=JobStatus, summary="Status of any job")
def get_job_status(job_id: str, session: SessionDep, tenant: TenantDep) -> JobStatus:
    return JobStatus.from_row(get_job(session, tenant.id, job_id))


@router.post("/{job_id}/cancel", response_model=JobStatus, summary="Cancel a job")
def cancel_job(job_id: str, session: SessionDep, tenant: TenantDep) -> JobStatus:
    return JobStatus.from_row(request_cancel(session, get_job(session, tenant.id, job_id)))
