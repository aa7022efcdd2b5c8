"""Submitting jobs: within the tenant's cap on active jobs, stored first, then handed to the
broker (or left for the dispatcher; the row claim of :func:`app.core.jobs.dispatch` makes
sure only one of them sends it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.core.db import Database, JobRow
from app.core.jobs import create_job, dispatch
from app.core.limits import check_active_jobs
from app.core.settings import Settings


def submit_job(
    session: Session, db: Database, settings: Settings, tenant_id: str, kind: str,
    request: dict[str, Any],
) -> JobRow:
    check_active_jobs(session, tenant_id, settings.max_active_jobs_per_tenant,
                      settings.active_jobs_retry_after_seconds)
    job = create_job(session, tenant_id, kind, request)
    # Commit before publishing: a worker must find the job when the message arrives.
    session.commit()
    dispatch(db, settings.resolved_broker_url, job.id)
    session.refresh(job)
    return job
