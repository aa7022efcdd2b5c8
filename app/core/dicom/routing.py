"""Routing rules: received instances -> a routed prediction job per study and rule.

A rule names a modality and/or a calling AE title (``None`` matches any) and a model; its
``destination`` says where the result goes back (C-STORE to an AE, or STOW-RS to a URL).
After an association or a STOW request, :func:`schedule` creates one ``route`` job for
each study and matching rule, holding the instances to predict, and hands it to the
broker (or leaves it for the dispatcher when the broker is down). RobustDx's own results
are never routed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from app.core.db import Database
from app.core.db.tables import DicomRuleRow
from app.core.dicom.sop import IMAGE_SOP_CLASSES
from app.core.dicom.store import Stored
from app.core.jobs import create_job, dispatch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """One stored instance and where it came from (``calling_ae`` None for STOW-RS)."""

    stored: Stored
    calling_ae: str | None


def _matches(rule: DicomRuleRow, item: Received) -> bool:
    if rule.modality is not None and rule.modality != item.stored.modality:
        return False
    return rule.calling_ae is None or rule.calling_ae == item.calling_ae


def schedule(db: Database, broker_url: str, tenant_id: str,
             received: Iterable[Received]) -> list[str]:
    """Create and dispatch the route jobs for ``received``; returns their ids."""
    images = [r for r in received if r.stored.sop_class_uid in IMAGE_SOP_CLASSES]
    if not images:
        return []
    with db.session() as session:
        rules = list(session.scalars(select(DicomRuleRow).where(
            DicomRuleRow.tenant_id == tenant_id).order_by(DicomRuleRow.created_at)))
        jobs: list[str] = []
        for rule in rules:
            by_study: dict[str, list[str]] = {}
            for item in images:
                if _matches(rule, item):
                    uids = by_study.setdefault(item.stored.study_uid, [])
                    if item.stored.sop_uid not in uids:
                        uids.append(item.stored.sop_uid)
            for study, sops in by_study.items():
                job = create_job(session, tenant_id, "route", {
                    "rule_id": rule.id, "model_id": rule.model_id, "study_uid": study,
                    "sop_uids": sops, "destination": rule.destination,
                })
                jobs.append(job.id)
    for job_id in jobs:
        if not dispatch(db, broker_url, job_id):
            logger.warning("route job %s waits for the broker", job_id)
    return jobs
