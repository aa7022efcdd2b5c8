"""A policy's ``baseline``: checked at submission so that a comparison cannot fail later."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from app.api.schemas.audits import AuditRequest
from app.core.comparison import PER_IMAGE_FILE, check_rules, compare, load_outcomes
from app.core.jobs import get_job
from app.core.storage import Storage
from models.errors import ConflictError, InvalidParametersError


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _same_images_and_settings(candidate: dict[str, Any], earlier: dict[str, Any]) -> None:
    if earlier.get("dataset_id") != candidate.get("dataset_id"):
        raise InvalidParametersError(
            "the baseline audited another dataset: a paired comparison needs the same images",
            {"baseline_dataset_id": earlier.get("dataset_id")})
    if _canonical(earlier.get("attacks")) != _canonical(candidate.get("attacks")):
        raise InvalidParametersError(
            "the baseline ran other attack settings: use the same attacks and parameters",
            {"baseline_attacks": earlier.get("attacks")})
    options, earlier_options = candidate.get("options") or {}, earlier.get("options") or {}
    if options.get("max_images") != earlier_options.get("max_images"):
        raise InvalidParametersError("the baseline audited another number of images")


def comparison_table(session: Session, storage: Storage, tenant_id: str, candidate_id: str,
                     baseline_id: str) -> dict[str, Any]:
    """``GET /v1/audits/{candidate}/compare/{baseline}``: every metric side by side, decided
    by the candidate's ``max_regression`` rules when its policy names this baseline."""
    jobs = []
    for audit_id in (candidate_id, baseline_id):
        job = get_job(session, tenant_id, audit_id, kind="audit")
        if job.status != "succeeded" or not (job.result or {}).get("per_image"):
            raise ConflictError(f"audit {audit_id} has no per-image outcomes to compare "
                                f"(status {job.status})", {"status": job.status})
        jobs.append(job)
    candidate, baseline = jobs
    _same_images_and_settings(candidate.request, baseline.request)
    policy = candidate.request.get("policy") or {}
    rules = check_rules(policy["max_regression"]) \
        if policy.get("baseline") == baseline_id and policy.get("max_regression") else None
    files = [storage.pull(storage.job_dir(i) / PER_IMAGE_FILE) for i in (candidate_id, baseline_id)]
    rows = compare(load_outcomes(files[0]), load_outcomes(files[1]), rules,
                   seed=int(candidate.request.get("seed", 0)))
    return {"candidate": candidate_id, "baseline": baseline_id,
            "decision": "a max_regression rule passes only when the upper end of the 95% "
                        "paired bootstrap interval of the regression is within its margin",
            "rows": [row.to_json() for row in rows]}


def check_baseline(session: Session, tenant_id: str, body: AuditRequest) -> None:
    """The baseline must be the tenant's own finished audit of the same dataset with the
    same attack settings and images; ``max_regression`` must name its settings."""
    policy = body.policy or {}
    if "baseline" not in policy:
        if "max_regression" in policy:
            raise InvalidParametersError("max_regression needs a baseline audit to compare with")
        return
    baseline_id = policy["baseline"]
    if not isinstance(baseline_id, str) or not baseline_id:
        raise InvalidParametersError("policy baseline must be the id of an earlier audit")
    baseline = get_job(session, tenant_id, baseline_id, kind="audit")
    if baseline.status != "succeeded":
        raise ConflictError(
            f"baseline audit {baseline_id} has not succeeded (status {baseline.status})",
            {"status": baseline.status})
    _same_images_and_settings(body.model_dump(mode="json"), baseline.request)
    result = baseline.result or {}
    if not result.get("per_image"):
        raise InvalidParametersError(
            f"baseline audit {baseline_id} kept no per-image outcomes (it predates them): "
            "audit the baseline model again and name that audit")
    if "max_regression" in policy:
        check_rules(policy["max_regression"], list(result.get("settings") or []))
