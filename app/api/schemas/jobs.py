from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.api.schemas.common import UtcDatetime
from app.core.db import JobRow
from app.core.jobs import PUBLIC_STATES, public_status

#: ``cancelling``: a cancel was asked for while a worker ran the job; it becomes
#: ``cancelled`` once the worker has stopped.
JobState = Literal[PUBLIC_STATES]  # type: ignore[valid-type]
JobKind = Literal["audit", "defense", "check", "route"]

#: Request fields that name a model or a dataset, and the role each is shown under.
MODEL_FIELD = "model_id"
DATASET_FIELDS: dict[str, str] = {
    "dataset_id": "dataset",
    "train_dataset_id": "train",
    "eval_dataset_id": "eval",
}


class ResourceRef(BaseModel):
    id: str
    name: str | None = Field(description="null when the resource has been deleted since.")


class JobStatus(BaseModel):
    """The one status shape every job has (audit, defense, model check)."""

    id: str
    kind: JobKind
    status: JobState
    progress: float = Field(ge=0.0, le=1.0)
    stage: str
    error: str | None = None
    result: dict[str, Any] | None = None
    model: ResourceRef | None = Field(default=None, description="The model the job runs on.")
    datasets: dict[str, ResourceRef] = Field(
        default_factory=dict,
        description="The datasets it reads, by role: `dataset` (audits), `train` and "
        "`eval` (defenses).",
    )
    created_at: UtcDatetime
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    links: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_row(cls, job: JobRow, names: dict[str, str] | None = None) -> JobStatus:
        """The status of ``job``; ``names`` maps model and dataset ids to their names."""
        names = names or {}
        request = job.request or {}
        model_id = request.get(MODEL_FIELD)
        datasets = {
            role: ResourceRef(id=str(request[key]), name=names.get(str(request[key])))
            for key, role in DATASET_FIELDS.items()
            if isinstance(request.get(key), str)
        }
        return cls(
            id=job.id,
            kind=job.kind,
            status=public_status(job),
            progress=round(min(max(job.progress, 0.0), 1.0), 4),
            stage=job.stage,
            error=job.error,
            result=job.result,
            model=ResourceRef(id=model_id, name=names.get(model_id))
            if isinstance(model_id, str) else None,
            datasets=datasets,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            links=_links(job),
        )


def _links(job: JobRow) -> dict[str, str]:
    links = {"self": f"/v1/jobs/{job.id}"}
    if job.kind == "audit":
        base = f"/v1/audits/{job.id}"
        links["audit"] = base
        if job.status == "succeeded":
            links |= {
                "report": f"{base}/report",
                "report_html": f"{base}/report.html",
                "report_junit": f"{base}/report.xml",
                "artifacts": f"{base}/artifacts",
                "artifacts_zip": f"{base}/artifacts.zip",
            }
    elif job.kind == "defense":
        links["defense"] = f"/v1/defenses/{job.id}"
    return links


class JobPage(BaseModel):
    items: list[JobStatus]
    total: int
    limit: int
    offset: int
