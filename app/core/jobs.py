"""Jobs in the database: create, read (tenant-scoped), list, cancel, hand to the broker.

A job is stored before it is enqueued. When the broker cannot be reached the job stays
``queued`` with no ``enqueued_at``, and the dispatcher hands it over when the broker is back.

A job is *claimed* before it is sent: one compare-and-set ``UPDATE`` on its row (``WHERE
attempts = <the value read>`` and, for a first hand-over, ``enqueued_at IS NULL``) bumps
``attempts``; only the caller whose update changed the row publishes. The submitting
request and the dispatcher may race for a job as much as they like: one of them sends it.
A failed send gives the claim back (``enqueued_at`` cleared), so the dispatcher retries.

Cancelling: a job nobody has started ends ``cancelled`` at once; a started one keeps its
stored status with ``cancel_requested`` set, and reads as ``cancelling`` (see
:func:`public_status`) until the worker has stopped and recorded ``cancelled``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from app.core.db import Database, JobRow
from app.core.queue import send_task
from models.errors import ConflictError, NotFoundError

logger = logging.getLogger(__name__)

JOB_KINDS = ("audit", "defense", "check", "route")
FINAL_STATES = ("succeeded", "failed", "cancelled")
#: The states a client sees; ``cancelling`` is derived, never stored.
PUBLIC_STATES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")

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


def public_status(job: JobRow) -> str:
    """The status a client sees: ``cancelling`` while a cancelled job's worker winds down."""
    if job.cancel_requested and job.status not in FINAL_STATES:
        return "cancelling"
    return job.status


def request_cancel(session: Session, job: JobRow) -> JobRow:
    """Ask a job to stop; ``cancelled`` at once when no worker has started it.

    Raises:
        ConflictError: the job has already ended.
    """
    if job.status in FINAL_STATES:
        raise ConflictError(f"job {job.id} already {job.status}", {"status": job.status})
    job.cancel_requested = True
    if job.status == "queued" and job.started_at is None:
        # Nobody has picked it up: it can end now; a late task will see the final state.
        # Guarded so a worker that started it meanwhile keeps it (it sees the flag).
        ended = session.execute(
            update(JobRow).execution_options(synchronize_session=False)
            .where(JobRow.id == job.id, JobRow.started_at.is_(None),
                   JobRow.status == "queued")
            .values(status="cancelled", stage="cancelled", finished_at=datetime.now(UTC),
                    cancel_requested=True)
        )
        if getattr(ended, "rowcount", 0) == 1:
            session.refresh(job)
            return job
    session.flush()
    session.refresh(job)
    return job


def claim(
    db: Database, job_id: str, *, first: bool, seen_attempts: int | None = None,
    stale_before: datetime | None = None,
) -> int | None:
    """Claim the right to (re-)send a job: the new ``attempts``, or None when someone else
    claimed it, it has ended, (``first``) it was already handed over, or (``stale_before``)
    its worker has sent a heartbeat since."""
    with db.session() as session:
        job = session.get(JobRow, job_id)
        if job is None or job.status in FINAL_STATES:
            return None
        attempts = job.attempts if seen_attempts is None else seen_attempts
        now = datetime.now(UTC)
        query = (
            update(JobRow)
            .execution_options(synchronize_session=False)
            .where(
                JobRow.id == job_id,
                JobRow.attempts == attempts,
                JobRow.status.not_in(FINAL_STATES),
            )
        )
        if first:
            query = query.where(JobRow.enqueued_at.is_(None))
        if stale_before is not None:
            query = query.where(
                or_(JobRow.heartbeat_at.is_(None), JobRow.heartbeat_at < stale_before)
            )
        done = session.execute(
            query.values(enqueued_at=now, heartbeat_at=now, attempts=attempts + 1)
        )
        return attempts + 1 if getattr(done, "rowcount", 0) == 1 else None


def _unclaim(db: Database, job_id: str, attempts: int, first: bool) -> None:
    values: dict[str, Any] = {"heartbeat_at": None}
    if first:
        values["enqueued_at"] = None
    with db.session() as session:
        session.execute(
            update(JobRow)
            .execution_options(synchronize_session=False)
            .where(JobRow.id == job_id, JobRow.attempts == attempts)
            .values(**values)
        )


def dispatch(
    db: Database, broker_url: str, job_id: str, task: str | None = None,
    *, seen_attempts: int | None = None, stale_before: datetime | None = None,
) -> bool:
    """Claim the job and publish its entry task (or ``task``).

    ``task=None`` is the first hand-over (only while ``enqueued_at`` is unset); a ``task``
    re-sends a stage whose worker was lost, claimed against ``seen_attempts`` (the value the
    caller read when it judged the job lost). False when another caller claimed it, the
    job has ended, or the broker is down (the claim is then given back).
    """
    first = task is None
    with db.session() as session:
        job = session.get(JobRow, job_id)
        if job is None or job.status in FINAL_STATES:
            return False
        name = task or ENTRY_TASK[job.kind]
    attempts = claim(
        db, job_id, first=first, seen_attempts=seen_attempts, stale_before=stale_before
    )
    if attempts is None:
        return False
    try:
        send_task(broker_url, name, [job_id])
    except Exception as exc:  # the broker's errors are many kinds; all mean "not now"
        logger.warning("could not enqueue job %s (%s): %s; will retry", job_id, name, exc)
        _unclaim(db, job_id, attempts, first)
        return False
    return True
