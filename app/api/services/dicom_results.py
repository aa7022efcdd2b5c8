"""Results as DICOM on the API side: ``predict?format=dicom-sr`` and an audit's report
summary as an Encapsulated PDF stored into each audited study."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Sequence
from typing import Any

import pydicom
from fastapi import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.schemas.models import NamedImagePrediction, PredictBatchResponse, PredictResponse
from app.api.services.audits import finished_audit, report_path
from app.api.services.multipart import UploadedFile
from app.core.db import Database, ModelRow
from app.core.db.tables import DicomDatasetRow, DicomInstanceRow
from app.core.dicom.errors import DicomRefusedError
from app.core.dicom.findings import Algorithm, Finding
from app.core.dicom.pdf import encapsulated_pdf, render_pdf, summary_lines
from app.core.dicom.sr import diagnosis_sr
from app.core.dicom.store import encode, ingest, instance_path, parse
from app.core.registry import row_card
from app.core.storage import Storage
from models.errors import ConflictError, InvalidImageError

DICOM_MEDIA = "application/dicom"


def algorithm_of(row: ModelRow) -> Algorithm:
    card = row_card(row)
    return Algorithm(name=card.name, version=row.id, sha256=row.sha256, model_id=row.id)


def _source(part: UploadedFile) -> pydicom.Dataset:
    try:
        return parse(part.read())
    except DicomRefusedError as exc:
        raise InvalidImageError(
            f"{part.filename or 'image'}: format=dicom-sr needs DICOM images (the report "
            "references the source instance)", {"filename": part.filename}) from exc


def sr_response(row: ModelRow, parts: Sequence[UploadedFile],
                answer: PredictResponse | PredictBatchResponse) -> Response:
    """One SR (``application/dicom``) or, for several files, ``multipart/related``."""
    card = row_card(row)
    thresholds = dict(zip(card.labels, card.threshold_vector(), strict=True))
    multi = card.task == "multi-label"
    results: Sequence[PredictResponse | NamedImagePrediction] = (
        answer.results if isinstance(answer, PredictBatchResponse) else [answer])
    algo = algorithm_of(row)
    documents = []
    for part, result in zip(parts, results, strict=True):
        findings = [Finding(p.label, _score(p.probability, p.vote_share), p.positive,
                            thresholds[p.label] if multi else None)
                    for p in result.predictions]
        documents.append(encode(diagnosis_sr(_source(part), findings, algo)))
    if len(documents) == 1 and isinstance(answer, PredictResponse):
        return Response(documents[0], media_type=DICOM_MEDIA)
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for doc in documents:
        body.write(f"--{boundary}\r\nContent-Type: {DICOM_MEDIA}\r\n\r\n".encode())
        body.write(doc + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    ctype = f'multipart/related; type="{DICOM_MEDIA}"; boundary={boundary}'
    return Response(body.getvalue(), media_type=ctype)


def audit_results(session: Session, db: Database, storage: Storage, tenant_id: str,
                  audit_id: str, base: str, max_bytes: int) -> list[dict[str, str]]:
    """Store the audit's summary PDF into every study its dataset was built from."""
    job = finished_audit(session, tenant_id, audit_id)
    report: dict[str, Any] = json.loads(report_path(storage, job, "json").read_text())
    dataset_id = str(job.request.get("dataset_id", ""))
    source = session.get(DicomDatasetRow, dataset_id)
    if source is None or source.tenant_id != tenant_id:
        raise ConflictError("the audited dataset was not built from stored studies "
                            "(POST /v1/dicom/datasets)", {"dataset_id": dataset_id})
    lines = summary_lines(report)
    title = f"RobustDx audit {audit_id[:12]}"
    pdf = render_pdf(title, lines)
    out = []
    for study in source.study_uids:
        first = session.scalar(select(DicomInstanceRow).where(
            DicomInstanceRow.tenant_id == tenant_id, DicomInstanceRow.study_uid == study)
            .order_by(DicomInstanceRow.created_at).limit(1))
        if first is None:
            continue  # the study was deleted since
        header = pydicom.dcmread(instance_path(storage, first), stop_before_pixels=True)
        doc = encapsulated_pdf(pdf, header, title, key=audit_id)
        stored = ingest(db, storage, tenant_id, encode(doc), source="robustdx",
                        max_bytes=max_bytes)
        out.append({
            "study_uid": stored.study_uid, "sop_uid": stored.sop_uid,
            "url": f"{base}/studies/{stored.study_uid}/series/{stored.series_uid}/"
                   f"instances/{stored.sop_uid}",
        })
    return out


def _score(probability: float | None, vote_share: float | None) -> float:
    """The model's probability; under randomized smoothing, the vote share."""
    value = probability if probability is not None else vote_share
    return float(value if value is not None else 0.0)
