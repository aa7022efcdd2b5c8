"""DICOMweb (PS3.18) under ``/dicomweb``, per tenant (``Authorization: Bearer <api key>``).

- STOW-RS ``POST /dicomweb/studies`` (``multipart/related; type="application/dicom"``):
  200 all stored, 202 some failed, 409 none stored; the body is the standard
  ``application/dicom+json`` with ``ReferencedSOPSequence`` and ``FailedSOPSequence``
  (each with its ``FailureReason``).
- QIDO-RS ``GET /dicomweb/studies``, ``/studies/{study}/series``,
  ``/studies/{study}/series/{series}/instances`` (and ``/series``, ``/instances`` at the
  root, ``/studies/{study}/instances``).
- WADO-RS ``GET /studies/{study}[/series/{series}[/instances/{instance}]]``
  (``multipart/related; type="application/dicom"``) and ``.../metadata``.

Errors other than per-instance failures use the service's JSON error shape.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.deps import SessionDep, TenantDep
from app.api.schemas.common import ERRORS, ErrorResponse
from app.api.services.dicomweb import (
    multipart_files,
    read_stow,
    received_of,
    stow_response,
)
from app.api.startup import AppState
from app.core.db.tables import DicomInstanceRow
from app.core.dicom import qido
from app.core.dicom.routing import schedule
from app.core.dicom.store import instance_path, tenant_settings
from app.core.dicom.wado import find_instances, metadata_json
from app.core.tenants import authenticate
from models.errors import InvalidInputError

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"], responses=ERRORS)
DICOM_JSON = "application/dicom+json"
_STOW_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        'multipart/related; type="application/dicom"': {
            "schema": {"type": "string", "format": "binary"}}}},
}


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/dicomweb"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON, headers=headers)


def _tenant_id(state: AppState, authorization: str | None) -> str:
    with state.db.session() as session:
        return authenticate(session, authorization).id


@router.post("/studies", summary="STOW-RS: store instances", openapi_extra=_STOW_BODY,
             responses={409: {"description": "No instance stored"},
                        413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}})
async def stow(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer <api key>")] = None,
) -> JSONResponse:
    state: AppState = request.app.state.robustdx
    settings = state.settings
    tenant_id = await run_in_threadpool(_tenant_id, state, authorization)
    results = await read_stow(
        request, state.db, state.storage, tenant_id, max_body=settings.max_dataset_bytes,
        max_part=settings.max_dicom_instance_bytes, max_parts=settings.max_stow_instances)
    received = received_of(results)
    if received:
        await run_in_threadpool(schedule, state.db, settings.resolved_broker_url, tenant_id,
                                received)
    status, body = stow_response(results, _base(request))
    reasons = [f"part {i + 1}: {r.message}" for i, r in enumerate(results) if r.message][:5]
    headers = {"Warning": "299 robustdx \"" + "; ".join(reasons).replace('"', "'") + '"'
               } if reasons else None
    return _json(body, status, headers)


def _search(request: Request, session: SessionDep, tenant_id: str, level: qido.Level,
            fixed: dict[str, str]) -> JSONResponse:
    params = list(request.query_params.multi_items())
    query = qido.parse_query(params + list(fixed.items()))
    settings = tenant_settings(request.app.state.robustdx.db, tenant_id)
    groups = qido.search(session, tenant_id, query, settings, level)
    base = _base(request)
    if level == "studies":
        body = [qido.study_json(g, base) for g in groups]
    elif level == "series":
        body = [qido.series_json(g, base) for g in groups]
    else:
        body = [qido.instance_json(g[0], base) for g in groups]
    return _json(body)


#: QIDO-RS answers are DICOM JSON (PS3.18 F.2), not plain JSON.
_QIDO: dict[int | str, dict[str, Any]] = {
    200: {"description": "Matches as DICOM JSON",
          "content": {"application/dicom+json": {"schema": {"type": "array",
                                                             "items": {"type": "object"}}}}},
}


@router.get("/studies", summary="QIDO-RS: search studies", response_class=Response,
            responses=_QIDO)
def search_studies(request: Request, session: SessionDep, tenant: TenantDep) -> JSONResponse:
    return _search(request, session, tenant.id, "studies", {})


@router.get("/series", summary="QIDO-RS: search all series",
            response_class=Response, responses=_QIDO)
def search_all_series(request: Request, session: SessionDep, tenant: TenantDep) -> JSONResponse:
    return _search(request, session, tenant.id, "series", {})


@router.get("/instances", summary="QIDO-RS: search all instances",
            response_class=Response, responses=_QIDO)
def search_all_instances(request: Request, session: SessionDep,
                         tenant: TenantDep) -> JSONResponse:
    return _search(request, session, tenant.id, "instances", {})


@router.get("/studies/{study}/series", summary="QIDO-RS: search a study's series",
            response_class=Response, responses=_QIDO)
def search_series(study: str, request: Request, session: SessionDep,
                  tenant: TenantDep) -> JSONResponse:
    return _search(request, session, tenant.id, "series", {"StudyInstanceUID": study})


@router.get("/studies/{study}/instances", summary="QIDO-RS: search a study's instances",
            response_class=Response, responses=_QIDO)
def search_study_instances(study: str, request: Request, session: SessionDep,
                           tenant: TenantDep) -> JSONResponse:
    return _search(request, session, tenant.id, "instances", {"StudyInstanceUID": study})


@router.get("/studies/{study}/series/{series}/instances",
            summary="QIDO-RS: search a series' instances", response_class=Response,
            responses=_QIDO)
def search_instances(study: str, series: str, request: Request, session: SessionDep,
                     tenant: TenantDep) -> JSONResponse:
    return _search(request, session, tenant.id, "instances",
                   {"StudyInstanceUID": study, "SeriesInstanceUID": series})


def _accepts_dicom(accept: str | None) -> None:
    if not accept:
        return
    for item in accept.split(","):
        kind = item.split(";")[0].strip().lower()
        if kind in ("*/*", "multipart/*") or (
                kind == "multipart/related" and ("application/dicom" in item or
                                                 "type=" not in item)):
            return
    raise InvalidInputError('WADO-RS answers multipart/related; type="application/dicom" '
                            "(or DICOM JSON at /metadata)", {"accept": accept[:200]})


def _rows(request: Request, session: SessionDep, tenant_id: str, study: str,
          series: str | None, sop: str | None) -> list[DicomInstanceRow]:
    settings = tenant_settings(request.app.state.robustdx.db, tenant_id)
    return find_instances(session, tenant_id, settings, study, series, sop)


def _retrieve(request: Request, rows: list[DicomInstanceRow], accept: str | None) -> Response:
    _accepts_dicom(accept)
    storage = request.app.state.robustdx.storage
    boundary = uuid.uuid4().hex
    paths = [instance_path(storage, r) for r in rows]
    return StreamingResponse(
        multipart_files(paths, boundary),
        media_type=f'multipart/related; type="application/dicom"; boundary={boundary}')


def _metadata(request: Request, rows: list[DicomInstanceRow]) -> JSONResponse:
    storage = request.app.state.robustdx.storage
    base = _base(request)

    def url(r: DicomInstanceRow) -> str:
        return f"{base}/studies/{r.study_uid}/series/{r.series_uid}/instances/{r.sop_uid}"

    return _json([metadata_json(instance_path(storage, r), url(r)) for r in rows])


AcceptHeader = Annotated[str | None, Header()]


@router.get("/studies/{study}", summary="WADO-RS: retrieve a study",
            response_class=Response)
def retrieve_study(study: str, request: Request, session: SessionDep, tenant: TenantDep,
                   accept: AcceptHeader = None) -> Response:
    return _retrieve(request, _rows(request, session, tenant.id, study, None, None), accept)


@router.get("/studies/{study}/metadata", summary="WADO-RS: a study's metadata")
def study_metadata(study: str, request: Request, session: SessionDep,
                   tenant: TenantDep) -> JSONResponse:
    return _metadata(request, _rows(request, session, tenant.id, study, None, None))


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series",
            response_class=Response)
def retrieve_series(study: str, series: str, request: Request, session: SessionDep,
                    tenant: TenantDep, accept: AcceptHeader = None) -> Response:
    return _retrieve(request, _rows(request, session, tenant.id, study, series, None), accept)


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: series metadata")
def series_metadata(study: str, series: str, request: Request, session: SessionDep,
                    tenant: TenantDep) -> JSONResponse:
    return _metadata(request, _rows(request, session, tenant.id, study, series, None))


@router.get("/studies/{study}/series/{series}/instances/{instance}",
            summary="WADO-RS: retrieve an instance", response_class=Response)
def retrieve_instance(study: str, series: str, instance: str, request: Request,
                      session: SessionDep, tenant: TenantDep,
                      accept: AcceptHeader = None) -> Response:
    rows = _rows(request, session, tenant.id, study, series, instance)
    return _retrieve(request, rows, accept)


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata",
            summary="WADO-RS: an instance's metadata")
def instance_metadata(study: str, series: str, instance: str, request: Request,
                      session: SessionDep, tenant: TenantDep) -> JSONResponse:
    return _metadata(request, _rows(request, session, tenant.id, study, series, instance))


class _RedactQueries(logging.Filter):
    """Access logs print each request's query string; a QIDO query holds patient
    identifiers (``PatientID=...``), so it is replaced for DICOMweb paths."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path = args[2]
            if path.startswith("/dicomweb") and "?" in path:
                record.args = (*args[:2], path.split("?", 1)[0] + "?<query withheld>",
                               *args[3:])
        return True


ACCESS_LOG_FILTER = _RedactQueries()
logging.getLogger("uvicorn.access").addFilter(ACCESS_LOG_FILTER)
