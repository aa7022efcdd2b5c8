"""WADO-RS look-ups: the stored instances of a study, series or instance (UIDs as the
store keeps them, or as the PACS knows them when the tenant de-identifies), and their
DICOM JSON metadata with bulk data replaced by a ``BulkDataURI``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db.tables import DicomInstanceRow, DicomSettingsRow
from app.core.dicom.qido import candidates
from models.errors import NotFoundError

BULK_THRESHOLD = 1024  # bytes; larger binary values are bulk data


def find_instances(session: Session, tenant_id: str, settings: DicomSettingsRow | None,
                   study: str, series: str | None = None,
                   sop: str | None = None) -> list[DicomInstanceRow]:
    stmt = select(DicomInstanceRow).where(
        DicomInstanceRow.tenant_id == tenant_id,
        DicomInstanceRow.study_uid.in_(candidates(settings, [study])))
    if series is not None:
        stmt = stmt.where(DicomInstanceRow.series_uid.in_(candidates(settings, [series])))
    if sop is not None:
        stmt = stmt.where(DicomInstanceRow.sop_uid.in_(candidates(settings, [sop])))
    rows = list(session.scalars(stmt.order_by(DicomInstanceRow.series_uid,
                                              DicomInstanceRow.created_at)))
    if not rows:
        what = "instance" if sop else "series" if series else "study"
        raise NotFoundError(f"{what} not found")
    return rows


def metadata_json(path: Path, retrieve_url: str) -> dict[str, Any]:
    def bulk(_: DataElement) -> str:
        return retrieve_url

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        return dict(ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD,
                                    bulk_data_element_handler=bulk))
