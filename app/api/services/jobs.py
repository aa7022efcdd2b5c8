"""Job views for the API: statuses with the names of the model and datasets they use."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.schemas.jobs import DATASET_FIELDS, MODEL_FIELD, JobStatus
from app.core.db import DatasetRow, JobRow, ModelRow


def resource_names(session: Session, jobs: Sequence[JobRow]) -> dict[str, str]:
    """Names of the models and datasets ``jobs`` name, in two queries for a whole page.

    Only the jobs' own tenant's rows are read, so a request naming another tenant's id
    (refused at submission anyway) can never show that tenant's names.
    """
    model_ids: set[tuple[str, str]] = set()
    dataset_ids: set[tuple[str, str]] = set()
    for job in jobs:
        request = job.request or {}
        if isinstance(request.get(MODEL_FIELD), str):
            model_ids.add((job.tenant_id, request[MODEL_FIELD]))
        for key in DATASET_FIELDS:
            if isinstance(request.get(key), str):
                dataset_ids.add((job.tenant_id, request[key]))
    names: dict[str, str] = {}
    for table, wanted in ((ModelRow, model_ids), (DatasetRow, dataset_ids)):
        if not wanted:
            continue
        rows = session.execute(
            select(table.id, table.tenant_id, table.name).where(
                table.id.in_({i for _, i in wanted})
            )
        ).all()
        names |= {r.id: r.name for r in rows if (r.tenant_id, r.id) in wanted}
    return names


def job_status(session: Session, job: JobRow) -> JobStatus:
    return JobStatus.from_row(job, resource_names(session, [job]))


def job_statuses(session: Session, jobs: Sequence[JobRow]) -> list[JobStatus]:
    names = resource_names(session, jobs)
    return [JobStatus.from_row(job, names) for job in jobs]
