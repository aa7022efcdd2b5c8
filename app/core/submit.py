"""Submitting jobs: stored first, then handed to the broker (or left for the dispatcher)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.core.db import Database, JobRow
from app.core.jobs import create_job, dispatch
from app.core.settings import Settings


def submit_job(
    session: Session, db: Database, settings: Settings, tenant_id: str, kind: str,
    request: dict[str, Any],
) -> JobRow:
    job = create_job(session, tenant_id, kind, request)
    # Commit before publishing: a worker must find the job when the message arrives.
    session.commit()
    dispatch(db, settings.resolved_broker_url, job.id)
    session.refresh(job)
    return job
