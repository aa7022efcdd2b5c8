"""Audit submission and report access."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.api.schemas.audits import AuditRequest
from app.api.services.baseline import check_baseline
from app.api.services.datasets import dataset_or_404
from app.core.catalogue import BASELINE_POLICY_KEYS, FLAG_POLICY_RULES, POLICY_RULES
from app.core.db import Database, JobRow
from app.core.jobs import get_job
from app.core.limits import check_audit_budget, estimate_audit_cost
from app.core.registry import REMOTE, get_model
from app.core.remote import check_remote_audit
from app.core.settings import Settings
from app.core.storage import Storage
from app.core.submit import submit_job
from models.card import ModelCard
from models.errors import ConflictError, InvalidParametersError, NotFoundError

REPORT_FILES = {"json": "report.json", "html": "report.html", "xml": "report.xml"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._=,:+-][A-Za-z0-9._=,:+/-]*$")


def _check_policy(policy: dict[str, Any] | None) -> None:
    if not policy:
        return
    for rule, value in policy.items():
        if rule in BASELINE_POLICY_KEYS:
            continue  # checked against the baseline audit by check_baseline
        if rule not in POLICY_RULES:
            raise InvalidParametersError(
                f"unknown policy rule {rule!r}; valid: {', '.join(POLICY_RULES)}"
            )
        if rule in FLAG_POLICY_RULES:
            if not isinstance(value, bool):
                raise InvalidParametersError(f"policy {rule}: must be true or false, got {value!r}")
            continue
        values = value.values() if isinstance(value, dict) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise InvalidParametersError(
                    f"policy {rule}: thresholds must be numbers in [0, 1], got {v!r}"
                )


def submit_audit(
    session: Session, db: Database, settings: Settings, tenant_id: str, body: AuditRequest
) -> JobRow:
    model = get_model(session, tenant_id, body.model_id)
    if model.format == REMOTE:  # refused before anything else is looked up
        check_remote_audit(body.model_dump(mode="json"), settings)
    dataset = dataset_or_404(session, tenant_id, body.dataset_id)
    from models.datasets import DatasetInfo, check_labels

    check_labels(DatasetInfo.model_validate(dataset.info), ModelCard.model_validate(model.card))
    _check_policy(body.policy)
    check_baseline(session, tenant_id, body)
    request = body.model_dump(mode="json")
    images = int(DatasetInfo.model_validate(dataset.info).count)
    check_audit_budget(estimate_audit_cost(request, images), settings.max_audit_cost)
    if model.format == REMOTE:
        request = check_remote_audit(request, settings)
    request["model_sha256"] = model.sha256
    request["dataset_sha256"] = dataset.sha256
    return submit_job(session, db, settings, tenant_id, "audit", request)


def finished_audit(session: Session, tenant_id: str, audit_id: str) -> JobRow:
    job = get_job(session, tenant_id, audit_id, kind="audit")
    if job.status != "succeeded":
        raise ConflictError(
            f"audit {audit_id} has no report yet (status {job.status})",
            {"status": job.status, "stage": job.stage},
        )
    return job


def report_path(storage: Storage, job: JobRow, kind: str) -> Path:
    path = storage.pull(storage.job_dir(job.id) / REPORT_FILES[kind])
    if not path.exists():
        raise NotFoundError(f"report.{kind} of audit {job.id} is missing")
    return path


def list_artifacts(storage: Storage, job: JobRow) -> list[dict[str, Any]]:
    return [
        {"name": name, "size_bytes": size, "url": f"/v1/audits/{job.id}/artifacts/{name}"}
        for name, size in storage.list_files(storage.artifacts_dir(job.id))
    ]


def artifact_path(storage: Storage, job: JobRow, name: str) -> Path:
    root = storage.artifacts_dir(job.id).resolve()
    if not _SAFE_NAME.match(name) or ".." in name.split("/"):
        raise NotFoundError(f"artifact {name!r} not found")
    path = (root / name).resolve()
    if root not in path.parents:
        raise NotFoundError(f"artifact {name!r} not found")
    storage.pull(path)
    if not path.is_file():
        raise NotFoundError(f"artifact {name!r} not found")
    return path
