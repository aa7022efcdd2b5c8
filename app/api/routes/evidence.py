"""Evidence for release pipelines: the signed report bundle and FHIR R4 summaries."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from app.api.deps import SessionDep, SettingsDep, StorageDep, TenantDep
from app.api.schemas.common import ERRORS, responses
from app.api.services.artifacts import pull_audit
from app.api.services.audits import finished_audit, report_path
from app.api.services.baseline import comparison_table
from app.core import fhir, signing
from app.core.registry import get_model

router = APIRouter(prefix="/v1", tags=["evidence"], responses=ERRORS)
NOT_READY = responses(409, _409="The audit has not succeeded (yet), or has no per-image "
                      "outcomes")
FHIR_JSON = "application/fhir+json"


@router.get("/signing-key", response_class=Response, summary="The service's public key (PEM)",
            responses={200: {"content": {"application/x-pem-file": {}}}})
def get_signing_key(settings: SettingsDep) -> Response:
    """The Ed25519 public key that verifies every ``report.sig``; it is public."""
    key = signing.load_signing_key(settings)
    return Response(signing.public_pem(key), media_type="application/x-pem-file",
                    headers={"X-Key-Id": signing.key_id(key)})


@router.get("/audits/{audit_id}/report.sig", response_class=Response,
            summary="Signature of the report bundle (Ed25519)",
            responses={200: {"content": {"application/json": {}}}, **NOT_READY})
def get_report_signature(audit_id: str, session: SessionDep, settings: SettingsDep,
                         storage: StorageDep, tenant: TenantDep) -> Response:
    """Signs the SHA-256 of report.json, report.html, report.xml and every artifact; check it
    offline with ``robustdx audit verify report.json report.sig --key public.pem``."""
    job = finished_audit(session, tenant.id, audit_id)
    job_dir, artifacts = pull_audit(storage, job.id, (*signing.SIGNED_REPORTS, "report.sig"))
    data = signing.sign_audit(settings, job.id, job_dir, artifacts)
    storage.publish(job_dir / "report.sig")
    return Response(data, media_type="application/json")


@router.get("/audits/{audit_id}/fhir", summary="The audit summary as a FHIR R4 Bundle",
            response_class=JSONResponse,
            responses={200: {"content": {FHIR_JSON: {"schema": {"type": "object"}}}},
                       **NOT_READY})
def get_audit_fhir(audit_id: str, session: SessionDep, storage: StorageDep,
                   tenant: TenantDep) -> JSONResponse:
    job = finished_audit(session, tenant.id, audit_id)
    report: dict[str, Any] = json.loads(report_path(storage, job, "json").read_text())
    model = get_model(session, tenant.id, job.request["model_id"])
    bundle = fhir.audit_bundle(job.id, fhir.model_fields(model), report)
    return JSONResponse(bundle, media_type=FHIR_JSON)


@router.get("/audits/{audit_id}/compare/{baseline_id}", responses=NOT_READY,
            summary="Paired comparison with a baseline audit of the same images")
def get_comparison(audit_id: str, baseline_id: str, session: SessionDep, storage: StorageDep,
                   tenant: TenantDep) -> dict[str, Any]:
    """Accuracy (clean and per attack setting) and fooling rate of both audits, the
    regression and its 95% paired bootstrap interval; rows are decided when the candidate's
    policy names this baseline with ``max_regression`` margins."""
    return comparison_table(session, storage, tenant.id, audit_id, baseline_id)
