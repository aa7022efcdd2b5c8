"""``/v1/dicom``: the AE titles a tenant accepts, its ingest settings, routing rules, an
audit's results as DICOM; and ``/v1/dicom/datasets``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from app.api.deps import DatabaseDep, SessionDep, SettingsDep, StorageDep, TenantDep
from app.api.schemas.common import ERRORS, responses
from app.api.schemas.datasets import DatasetPublic
from app.api.schemas.dicom import (
    AeCreate,
    AePublic,
    DicomResultsPublic,
    DicomSettingsPublic,
    DicomSettingsUpdate,
    RuleCreate,
    RulePublic,
    StudiesDatasetRequest,
)
from app.api.services.dicom_datasets import dataset_from_studies
from app.api.services.dicom_results import audit_results
from app.core.dicom import admin
from app.core.dicom.store import tenant_settings

router = APIRouter(prefix="/v1", tags=["dicom"], responses=ERRORS)

# Writes commit in their own session before the answer is sent: ``SessionDep`` commits
# when the request ends, after the response, and a client that acts on a 201 at once
# (registers an AE, then associates) must find the row.


@router.post("/dicom/aes", status_code=status.HTTP_201_CREATED, response_model=AePublic,
             responses=responses(409, _409="That calling AE title (and host) is registered"),
             summary="Accept associations from a calling AE title (optionally one host)")
def post_ae(body: AeCreate, db: DatabaseDep, tenant: TenantDep) -> AePublic:
    with db.session() as session:
        return AePublic.from_row(admin.add_ae(session, tenant.id, body.ae_title, body.host))


@router.get("/dicom/aes", response_model=list[AePublic], summary="The accepted AE titles")
def get_aes(session: SessionDep, tenant: TenantDep) -> list[AePublic]:
    return [AePublic.from_row(r) for r in admin.list_aes(session, tenant.id)]


@router.delete("/dicom/aes/{ae_id}", status_code=204, response_class=Response,
               summary="Stop accepting an AE title")
def delete_ae(ae_id: str, db: DatabaseDep, tenant: TenantDep) -> Response:
    with db.session() as session:
        admin.delete_ae(session, tenant.id, ae_id)
    return Response(status_code=204)


@router.get("/dicom/settings", response_model=DicomSettingsPublic,
            summary="Ingest settings (de-identification)")
def get_settings(db: DatabaseDep, tenant: TenantDep) -> DicomSettingsPublic:
    return DicomSettingsPublic.from_row(tenant_settings(db, tenant.id))


@router.put("/dicom/settings", response_model=DicomSettingsPublic,
            summary="Change the ingest settings (applies to instances received from now on)")
def put_settings(body: DicomSettingsUpdate, db: DatabaseDep,
                 tenant: TenantDep) -> DicomSettingsPublic:
    current = tenant_settings(db, tenant.id)
    with db.session() as session:
        row = admin.update_settings(session, current, body.deidentify, body.keep_dates)
        return DicomSettingsPublic.from_row(row)


@router.post("/dicom/rules", status_code=status.HTTP_201_CREATED, response_model=RulePublic,
             summary="Route received instances (by modality and/or calling AE) to a model")
def post_rule(body: RuleCreate, db: DatabaseDep, tenant: TenantDep) -> RulePublic:
    destination = body.destination.model_dump() if body.destination else None
    with db.session() as session:
        row = admin.add_rule(session, tenant.id, body.modality, body.calling_ae,
                             body.model_id, destination)
        return RulePublic.from_row(row)


@router.get("/dicom/rules", response_model=list[RulePublic], summary="The routing rules")
def get_rules(session: SessionDep, tenant: TenantDep) -> list[RulePublic]:
    return [RulePublic.from_row(r) for r in admin.list_rules(session, tenant.id)]


@router.delete("/dicom/rules/{rule_id}", status_code=204, response_class=Response,
               summary="Delete a routing rule")
def delete_rule(rule_id: str, db: DatabaseDep, tenant: TenantDep) -> Response:
    with db.session() as session:
        admin.delete_rule(session, tenant.id, rule_id)
    return Response(status_code=204)


@router.post("/dicom/audits/{audit_id}/results", status_code=status.HTTP_201_CREATED,
             response_model=DicomResultsPublic,
             responses=responses(409, _409="The audit has no report yet, or no studies"),
             summary="Store the audit's summary as an Encapsulated PDF in each audited study")
def post_audit_results(audit_id: str, request: Request, db: DatabaseDep,
                       storage: StorageDep, settings: SettingsDep,
                       tenant: TenantDep) -> DicomResultsPublic:
    base = str(request.base_url).rstrip("/") + "/dicomweb"
    with db.session() as session:
        instances = audit_results(session, db, storage, tenant.id, audit_id, base,
                                  settings.max_dicom_instance_bytes)
    return DicomResultsPublic(instances=instances)


@router.post("/dicom/datasets", status_code=status.HTTP_201_CREATED,
             response_model=DatasetPublic,
             summary="Build a dataset from stored studies (QIDO query + labels CSV)")
def post_dataset_from_studies(body: StudiesDatasetRequest, db: DatabaseDep,
                              storage: StorageDep, settings: SettingsDep,
                              tenant: TenantDep) -> DatasetPublic:
    dicom = tenant_settings(db, tenant.id)
    with db.session() as session:
        row = dataset_from_studies(session, storage, settings, tenant.id, dicom, body)
        return DatasetPublic.from_row(row)
