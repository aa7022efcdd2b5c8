"""``/v1/audits``: submit, list/status/cancel (the shared job routes), reports, artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.responses import FileResponse, StreamingResponse

from app.api.deps import DatabaseDep, SessionDep, SettingsDep, StorageDep, TenantDep
from app.api.routes.jobs import job_router
from app.api.schemas.audits import AuditRequest
from app.api.schemas.common import ERRORS, WORK_ERRORS, responses
from app.api.schemas.jobs import JobStatus
from app.api.services.artifacts import audit_files, stream_zip
from app.api.services.audits import (
    REPORT_FILES,
    artifact_path,
    finished_audit,
    list_artifacts,
    report_path,
    submit_audit,
)
from app.api.services.jobs import job_status

router = APIRouter(prefix="/v1/audits", tags=["audits"], responses=ERRORS)
NOT_READY = responses(409, _409="The audit has not succeeded (yet)")


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobStatus,
             responses=WORK_ERRORS, summary="Submit a robustness audit")
def post_audit(body: AuditRequest, response: Response, session: SessionDep, db: DatabaseDep,
               settings: SettingsDep, tenant: TenantDep) -> JobStatus:
    job = submit_audit(session, db, settings, tenant.id, body)
    response.headers["Location"] = f"/v1/audits/{job.id}"
    return job_status(session, job)


#: List, status and cancel: the routes every kind of job shares.
job_routes = job_router("/v1/audits", "audits", "audit", "audit")


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


@router.get(
    "/{audit_id}/artifacts.zip",
    responses={**NOT_READY, 200: {"content": {"application/zip": {}},
                                  "description": "The reports and every artifact"}},
    response_class=StreamingResponse,
    summary="The reports and every artifact in one zip (streamed)",
)
def get_artifacts_zip(audit_id: str, session: SessionDep, storage: StorageDep,
                      tenant: TenantDep) -> StreamingResponse:
    job = finished_audit(session, tenant.id, audit_id)
    files = audit_files(storage, job.id, REPORT_FILES.values())
    return StreamingResponse(
        stream_zip(files), media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="audit-{job.id}.zip"'},
    )


@router.get("/{audit_id}/artifacts/{name:path}", responses=NOT_READY,
            response_class=FileResponse, summary="Download one artifact")
def get_artifact(audit_id: str, name: str, session: SessionDep, storage: StorageDep,
                 tenant: TenantDep) -> FileResponse:
    job = finished_audit(session, tenant.id, audit_id)
    path: Path = artifact_path(storage, job, name)
    return FileResponse(path, filename=path.name)
