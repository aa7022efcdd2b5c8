from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import FileResponse

from app.api.deps import DatabaseDep, SessionDep, SettingsDep, StorageDep, TenantDep
from app.api.schemas.audits import AuditRequest
from app.api.schemas.common import ERRORS, ErrorResponse
from app.api.schemas.jobs import JobPage, JobStatus
from app.api.services.audits import (
    artifact_path,
    finished_audit,
    list_artifacts,
    report_path,
    submit_audit,
)
from app.core.jobs import get_job, list_jobs, request_cancel

router = APIRouter(prefix="/v1/audits", tags=["audits"], responses=ERRORS)
NOT_READY: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "The audit has not succeeded (yet)"}
}


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobStatus,
             summary="Submit a robustness audit")
def post_audit(body: AuditRequest, response: Response, session: SessionDep, db: DatabaseDep,
               settings: SettingsDep, tenant: TenantDep) -> JobStatus:
    job = submit_audit(session, db, settings, tenant.id, body)
    response.headers["Location"] = f"/v1/audits/{job.id}"
    return JobStatus.from_row(job)


@router.get("", response_model=JobPage, summary="List audits, newest first")
def get_audits(session: SessionDep, tenant: TenantDep,
               limit: Annotated[int, Query(ge=1, le=200)] = 50,
               offset: Annotated[int, Query(ge=0)] = 0) -> JobPage:
    rows, total = list_jobs(session, tenant.id, "audit", limit, offset)
    return JobPage(items=[JobStatus.from_row(r) for r in rows], total=total, limit=limit,
                   offset=offset)


@router.get("/{audit_id}", response_model=JobStatus, summary="Status of an audit")
def get_audit(audit_id: str, session: SessionDep, tenant: TenantDep) -> JobStatus:
    return JobStatus.from_row(get_job(session, tenant.id, audit_id, kind="audit"))


@router.post("/{audit_id}/cancel", response_model=JobStatus, summary="Cancel an audit")
def cancel_audit(audit_id: str, session: SessionDep, tenant: TenantDep) -> JobStatus:
    job = get_job(session, tenant.id, audit_id, kind="audit")
    return JobStatus.from_row(request_cancel(session, job))


@router.get("/{audit_id}/report", responses=NOT_READY, response_class=FileResponse,
            summary="The JSON report (the stored bytes, as signed in report.sig)")
def get_report(audit_id: str, session: SessionDep, storage: StorageDep,
               tenant: TenantDep) -> FileResponse:
    job = finished_audit(session, tenant.id, audit_id)
    return FileResponse(report_path(storage, job, "json"), media_type="application/json")


@router.get("/{audit_id}/report.html", responses=NOT_READY, response_class=FileResponse,
            summary="The self-contained HTML report")
def get_report_html(audit_id: str, session: SessionDep, storage: StorageDep,
                    tenant: TenantDep) -> FileResponse:
    job = finished_audit(session, tenant.id, audit_id)
    return FileResponse(report_path(storage, job, "html"), media_type="text/html")


@router.get("/{audit_id}/report.xml", responses=NOT_READY, response_class=FileResponse,
            summary="JUnit XML: one test case per policy rule")
def get_report_junit(audit_id: str, session: SessionDep, storage: StorageDep,
                     tenant: TenantDep) -> FileResponse:
    job = finished_audit(session, tenant.id, audit_id)
    return FileResponse(report_path(storage, job, "xml"), media_type="application/xml")


@router.get("/{audit_id}/artifacts", responses=NOT_READY, summary="List the artifacts")
def get_artifacts(audit_id: str, session: SessionDep, storage: StorageDep,
                  tenant: TenantDep) -> dict[str, Any]:
    job = finished_audit(session, tenant.id, audit_id)
    return {"items": list_artifacts(storage, job)}


@router.get("/{audit_id}/artifacts/{name:path}", responses=NOT_READY,
            response_class=FileResponse, summary="Download one artifact")
def get_artifact(audit_id: str, name: str, session: SessionDep, storage: StorageDep,
                 tenant: TenantDep) -> FileResponse:
    job = finished_audit(session, tenant.id, audit_id)
    path: Path = artifact_path(storage, job, name)
    return FileResponse(path, filename=path.name)
