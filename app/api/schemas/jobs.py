from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.core.db import JobRow

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobStatus(BaseModel):
    """The one status shape every job has (audit, defense, model check)."""

    id: str
    kind: Literal["audit", "defense", "check", "route"]
    status: JobState
    progress: float = Field(ge=0.0, le=1.0)
    stage: str
    error: str | None = None
    result: dict[str, Any] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    links: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_row(cls, job: JobRow) -> JobStatus:
        links = {"self": f"/v1/jobs/{job.id}"}
        if job.kind == "audit":
            links["audit"] = f"/v1/audits/{job.id}"
            if job.status == "succeeded":
                base = f"/v1/audits/{job.id}"
                links |= {
                    "report": f"{base}/report",
                    "report_html": f"{base}/report.html",
                    "report_junit": f"{base}/report.xml",
                    "artifacts": f"{base}/artifacts",
                }
        elif job.kind == "defense":
            links["defense"] = f"/v1/defenses/{job.id}"
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            progress=round(min(max(job.progress, 0.0), 1.0), 4),
            stage=job.stage,
            error=job.error,
            result=job.result,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            links=links,
        )


class JobPage(BaseModel):
    items: list[JobStatus]
    total: int
    limit: int
    offset: int
