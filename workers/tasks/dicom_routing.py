"""Routed predictions: a ``route`` job diagnoses the instances of one received study with
the rule's model, stores each result as a TID 1500 SR in the tenant's store, and sends the
SRs to the rule's destination (C-STORE or STOW-RS).

A send that fails is retried (``dicom_route_retries`` times, 1, 2, 4... seconds apart)
while the job stays ``running`` with the reason in its stage; after the last try the job
fails with that reason. Re-running is harmless: each SR's UIDs derive from its source
instance and the model, so the store keeps one copy and the PACS receives the same
instance again.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import pydicom
import torch
from celery import Task
from sqlalchemy import select

from app.core.db.tables import DicomInstanceRow
from app.core.dicom.findings import Algorithm, judge
from app.core.dicom.send import SendError, send
from app.core.dicom.sr import diagnosis_sr
from app.core.dicom.store import encode, ingest, instance_path
from app.core.registry import load_registered_model, row_card
from models.errors import InvalidInputError, RobustDxError
from models.imaging import decode_image, to_model_input
from models.wrapper import DiagnosticModel
from workers.celery_app import app
from workers.jobs import JobContext
from workers.runtime import Runtime, model_row, runtime

logger = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _model(model_id: str, sha256: str) -> DiagnosticModel:
    del sha256  # part of the key: a re-registered file is loaded again
    rt = runtime()
    return load_registered_model(rt.storage, model_row(rt, model_id), rt.device)


def _instance(rt: Runtime, tenant_id: str, sop: str) -> DicomInstanceRow | None:
    with rt.db.session() as session:
        row = session.scalar(select(DicomInstanceRow).where(
            DicomInstanceRow.tenant_id == tenant_id, DicomInstanceRow.sop_uid == sop))
        if row is not None:
            session.expunge(row)
        return row


def _predict(rt: Runtime, ctx: JobContext, tenant_id: str, request: dict[str, Any]
             ) -> tuple[list[dict[str, Any]], list[pydicom.Dataset]]:
    row = model_row(rt, request["model_id"])
    card = row_card(row)
    model = _model(row.id, row.sha256)
    algo = Algorithm(name=card.name, version=row.id, sha256=row.sha256, model_id=row.id)
    results: list[dict[str, Any]] = []
    reports: list[pydicom.Dataset] = []
    sops = list(request["sop_uids"])
    for index, sop in enumerate(sops):
        ctx.check_cancelled()
        inst = _instance(rt, tenant_id, sop)
        if inst is None:
            results.append({"sop_uid": sop, "error": "the instance is no longer stored"})
            continue
        path = instance_path(rt.storage, inst)
        try:
            decoded = decode_image(path.read_bytes(),
                                   max_bytes=rt.settings.max_dicom_instance_bytes,
                                   max_pixels=rt.settings.max_image_pixels)
        except RobustDxError as exc:
            results.append({"sop_uid": sop, "error": exc.message})
            continue
        x = to_model_input(decoded, card)[None].to(rt.device)
        with torch.inference_mode():
            probs = model.probabilities(x)[0].tolist()
        findings = judge(card, probs)
        report = diagnosis_sr(pydicom.dcmread(path, stop_before_pixels=True), findings, algo)
        ingest(rt.db, rt.storage, tenant_id, encode(report), source="robustdx",
               max_bytes=rt.settings.max_dicom_instance_bytes)
        reports.append(report)
        results.append({
            "sop_uid": sop, "sr_uid": str(report.SOPInstanceUID),
            "positive": [f.label for f in findings if f.positive],
            "probabilities": {f.label: round(f.probability, 6) for f in findings},
        })
        ctx.progress(0.9 * (index + 1) / len(sops), "predicting")
    if not reports:
        raise InvalidInputError("no instance of the study could be predicted",
                                {"instances": results[:20]})
    return results, reports


def _where(destination: dict[str, Any]) -> str:
    if destination.get("kind") == "stow":
        return str(destination.get("url", ""))
    return f"{destination.get('ae_title')}@{destination.get('host')}:{destination.get('port')}"


@app.task(name="robustdx.dicom.route", bind=True, max_retries=None)
def route(self: Task, job_id: str) -> None:
    rt = runtime()
    ctx = JobContext(rt.db, job_id, rt.settings.heartbeat_seconds)
    if ctx.is_final():
        return
    retry: SendError | None = None
    with ctx:
        ctx.start("predicting")
        job = ctx.load()
        request = dict(job.request)
        results, reports = _predict(rt, ctx, job.tenant_id, request)
        destination = request.get("destination")
        if destination:
            ctx.progress(0.95, "sending")
            try:
                send(destination, reports, rt.settings.dicom_ae_title)
            except SendError as exc:
                if self.request.retries >= rt.settings.dicom_route_retries:
                    raise SendError(f"{exc.message} (after {self.request.retries + 1} tries)"
                                    ) from exc
                retry = exc
        if retry is None:
            ctx.succeed({"study_uid": request["study_uid"], "instances": results,
                         "sent_to": _where(destination) if destination else None,
                         "tries": self.request.retries + 1})
    if retry is not None:
        attempt = self.request.retries + 1
        ctx.progress(0.95, f"send failed, retry {attempt}/{rt.settings.dicom_route_retries}")
        logger.warning("route job %s: %s; retry %d", job_id, retry.message, attempt)
        raise self.retry(countdown=2 ** (attempt - 1), exc=retry)
