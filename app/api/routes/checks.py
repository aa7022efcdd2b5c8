from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.deps import DatabaseDep, SessionDep, SettingsDep, TenantDep
from app.api.schemas.common import ERRORS
from app.api.schemas.jobs import JobStatus
from app.core.registry import get_model
from app.core.submit import submit_job

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERRORS)


@router.post(
    "/{model_id}/check",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobStatus,
    summary="Load the model on a worker and record its output shape, timing and device",
)
def check_model(
    model_id: str, response: Response, session: SessionDep, db: DatabaseDep,
    settings: SettingsDep, tenant: TenantDep,
) -> JobStatus:
    get_model(session, tenant.id, model_id)
    job = submit_job(session, db, settings, tenant.id, "check", {"model_id": model_id})
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobStatus.from_row(job)
