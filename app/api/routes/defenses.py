from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.responses import FileResponse, JSONResponse

from app.api.deps import DatabaseDep, SessionDep, SettingsDep, StorageDep, TenantDep
from app.api.routes.jobs import job_router
from app.api.schemas.common import ERRORS, WORK_ERRORS, responses
from app.api.schemas.defenses import DefenseRequest
from app.api.schemas.jobs import JobStatus
from app.api.services.datasets import dataset_or_404
from app.api.services.jobs import job_status
from app.core.jobs import get_job
from app.core.registry import REMOTE, get_model
from app.core.submit import submit_job
from models.card import ModelCard
from models.errors import ConflictError, NotFoundError

router = APIRouter(prefix="/v1/defenses", tags=["defenses"], responses=ERRORS)
NOT_READY = responses(409, _409="The defense job has not succeeded (yet)")


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobStatus,
             responses=WORK_ERRORS, summary="Harden a model by adversarial training")
def post_defense(body: DefenseRequest, response: Response, session: SessionDep,
                 db: DatabaseDep, settings: SettingsDep, tenant: TenantDep) -> JobStatus:
    from models.datasets import DatasetInfo, check_labels

    model = get_model(session, tenant.id, body.model_id)
    if model.format == REMOTE:
        raise ConflictError(f"model {model.id!r} is a remote model: defenses retrain weights, "
                            "which an inference endpoint does not expose")
    card = ModelCard.model_validate(model.card)
    train = dataset_or_404(session, tenant.id, body.train_dataset_id)
    evaluation = dataset_or_404(session, tenant.id, body.eval_dataset_id)
    check_labels(DatasetInfo.model_validate(train.info), card)
    check_labels(DatasetInfo.model_validate(evaluation.info), card)
    request = body.model_dump(mode="json") | {"train_dataset_sha256": train.sha256,
                                              "eval_dataset_sha256": evaluation.sha256}
    job = submit_job(session, db, settings, tenant.id, "defense", request)
    response.headers["Location"] = f"/v1/defenses/{job.id}"
    return job_status(session, job)


#: List, status and cancel: the routes every kind of job shares.
job_routes = job_router("/v1/defenses", "defenses", "defense", "defense job")


def _report(session: Any, storage: Any, tenant_id: str, job_id: str, name: str) -> Any:
    job = get_job(session, tenant_id, job_id, kind="defense")
    if job.status != "succeeded":
        raise ConflictError(f"defense {job_id} has no report yet (status {job.status})")
    path = storage.pull(storage.job_dir(job.id) / name)
    if not path.exists():
        raise NotFoundError(f"{name} of defense {job_id} is missing")
    return path


@router.get("/{job_id}/report", responses=NOT_READY, summary="Before/after report (JSON)")
def get_defense_report(job_id: str, session: SessionDep, storage: StorageDep,
                       tenant: TenantDep) -> JSONResponse:
    path = _report(session, storage, tenant.id, job_id, "report.json")
    return JSONResponse(json.loads(path.read_text()))


@router.get("/{job_id}/report.html", responses=NOT_READY, response_class=FileResponse,
            summary="Before/after report (HTML)")
def get_defense_report_html(job_id: str, session: SessionDep, storage: StorageDep,
                            tenant: TenantDep) -> FileResponse:
    return FileResponse(_report(session, storage, tenant.id, job_id, "report.html"),
                        media_type="text/html")
