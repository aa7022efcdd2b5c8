"""Jobs in the database: create, read (tenant-scoped), list, cancel, hand to the broker.

A job is stored before it is enqueued. When the broker cannot be reached the job stays
``queued`` with no ``enqueued_at``, and the dispatcher hands it over when the broker is back.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.core.db import Database, JobRow
from app.core.queue import send_task
from models.errors import ConflictError, NotFoundError

logger = logging.getLogger(__name__)

JOB_KINDS = ("audit", "defense", "check", "route")
FINAL_STATES = ("succeeded", "failed", "cancelled")

#: The task that starts (or resumes) each kind of job.
ENTRY_TASK = {
    "check": "robustdx.check_model",
    "audit": "robustdx.audit.plan",
    "defense": "robustdx.defense.train",
    "route": "robustdx.dicom.route",
}


def create_job(session: Session, tenant_id: str, kind: str, request: dict[str, Any]) -> JobRow:
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    job = JobRow(tenant_id=tenant_id, kind=kind, request=request, status="queued", stage="queued")
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, tenant_id: str, job_id: str, kind: str | None = None) -> JobRow:
    job = session.get(JobRow, job_id)
    if job is None or job.tenant_id != tenant_id or (kind is not None and job.kind != kind):
        what = kind or "job"
        raise NotFoundError(f"{what} {job_id!r} not found")
    return job


def list_jobs(
    session: Session, tenant_id: str, kind: str | None, limit: int, offset: int
) -> tuple[list[JobRow], int]:
    query = select(JobRow).where(JobRow.tenant_id == tenant_id)
    if kind is not None:
        query = query.where(JobRow.kind == kind)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(JobRow.created_at.desc(), JobRow.id).limit(limit).offset(offset)
    ).all()
    return list(rows), int(total)


def request_cancel(session: Session, job: JobRow) -> JobRow:
    if job.status in FINAL_STATES:
        raise ConflictError(f"job {job.id} already {job.status}", {"status": job.status})
    job.cancel_requested = True
    if job.status == "queued" and job.started_at is None:
        # Nobody has picked it up: it can end now; a late task will see the final state.
        job.status = "cancelled"
        job.stage = "cancelled"
        job.finished_at = datetime.now(UTC)
    session.flush()
    return job


def dispatch(db: Database, broker_url: str, job_id: str, task: str | None = None) -> bool:
    """Publish the job's entry task (or ``task``); record it. False when the broker is down."""
    with db.session() as session:
        job = session.get(JobRow, job_id)
        if job is None or job.status in FINAL_STATES:
            return False
        name = task or ENTRY_TASK[job.kind]
    try:
        send_task(broker_url, name, [job_id])
    except Exception as exc:  # the broker's errors are many kinds; all mean "not now"
        logger.warning("could not enqueue job %s (%s): %s; will retry", job_id, name, exc)
        return False
    now = datetime.now(UTC)
    with db.session() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(enqueued_at=now, heartbeat_at=now, attempts=JobRow.attempts + 1)
        )
    return True
