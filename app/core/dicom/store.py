"""The per-tenant DICOM instance store: one ``ingest`` for STOW-RS, C-STORE and RobustDx's
own results, the QIDO index rows, and the files under ``dicom/{tenant}/{study}/{series}/``.

An instance is parsed (PS3.10 file with meta header), checked (SOP Instance, Study and
Series UIDs present and well-formed; a SOP class we accept; under the size limit),
de-identified when the tenant's settings say so, and written atomically before its index
row is committed. A second copy of an instance (same SOP Instance UID after
de-identification, same bytes) is stored once; a different instance under a UID already
stored is refused. Nothing is kept from a refused instance.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import Database
from app.core.db.tables import DicomInstanceRow, DicomSettingsRow
from app.core.dicom.deid import Pseudonymizer, burned_in_flag, deidentify
from app.core.dicom.errors import (
    CANNOT_UNDERSTAND,
    DATASET_MISMATCH,
    SOP_CLASS_NOT_SUPPORTED,
    DicomRefusedError,
    DicomTooLargeError,
)
from app.core.dicom.logs import install as _withhold_values
from app.core.dicom.sop import ACCEPTED_SOP_CLASSES
from app.core.storage import Storage, write_atomic

logger = logging.getLogger(__name__)
_withhold_values()

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: Header attributes kept in the QIDO index (study, series and instance level).
INDEX_KEYWORDS = (
    "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "PatientName",
    "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "StudyDescription", "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
    "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
    "BitsAllocated", "BurnedInAnnotation", "PatientIdentityRemoved",
)


@dataclass(frozen=True)
class Stored:
    """What was stored (UIDs as stored, i.e. after de-identification)."""

    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    modality: str
    duplicate: bool


def tenant_settings(db: Database, tenant_id: str) -> DicomSettingsRow:
    """The tenant's ingest settings, created (de-identification on) on first use."""
    with db.session() as session:
        row = session.get(DicomSettingsRow, tenant_id)
        if row is not None:
            session.expunge(row)
            return row
    try:
        with db.session() as session:
            row = DicomSettingsRow(tenant_id=tenant_id, secret=secrets.token_hex(32))
            session.add(row)
    except IntegrityError:  # another process created it first
        pass
    with db.session() as session:
        row = session.get(DicomSettingsRow, tenant_id)
        assert row is not None
        session.expunge(row)
        return row


def parse(data: bytes) -> Dataset:
    """A PS3.10 file; anything else is refused with 0xC000. Header warnings are silenced:
    pydicom quotes the offending values, which may be patient data."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
            ds.ensure_file_meta()
            _ = ds.get("SOPInstanceUID")  # decode the header now, inside the guard
    except Exception as exc:  # pydicom raises many kinds for non-DICOM bytes
        raise DicomRefusedError("not a DICOM file (PS3.10 with a meta header)",
                           CANNOT_UNDERSTAND) from exc
    return ds


def _uid_of(ds: Dataset, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip()
    if not value:
        raise DicomRefusedError(f"the instance has no {keyword}", DATASET_MISMATCH,
                           {"missing": keyword})
    if len(value) > 64 or not _UID.match(value):
        raise DicomRefusedError(f"the instance's {keyword} is not a valid UID", DATASET_MISMATCH,
                           {"invalid": keyword})
    return value


def check(ds: Dataset) -> None:
    for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
        _uid_of(ds, keyword)
    if str(ds.SOPClassUID) not in ACCEPTED_SOP_CLASSES:
        raise DicomRefusedError("this SOP class is not accepted", SOP_CLASS_NOT_SUPPORTED,
                           {"sop_class_uid": str(ds.SOPClassUID)})


def index_attrs(ds: Dataset) -> dict[str, object]:
    sub = Dataset()
    for keyword in INDEX_KEYWORDS:
        if keyword in ds:
            sub[keyword] = ds[keyword]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(sub.to_json_dict())


def encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def ingest(
    db: Database,
    storage: Storage,
    tenant_id: str,
    data: bytes,
    *,
    source: str,
    max_bytes: int,
) -> Stored:
    """Check, de-identify (per the tenant's settings) and store one instance.

    ``source``: ``stow``, ``dimse:<calling AE>`` or ``robustdx`` (our own results, never
    de-identified again). Raises :class:`DicomRefusedError` / :class:`DicomTooLargeError`.
    """
    if len(data) > max_bytes:
        raise DicomTooLargeError(f"the instance is over the limit of {max_bytes} bytes",
                            {"max_bytes": max_bytes, "dicom_status": "A700"})
    ds = parse(data)
    check(ds)
    settings = tenant_settings(db, tenant_id)
    if settings.deidentify and source != "robustdx":
        deidentify(ds, Pseudonymizer(settings.secret), keep_dates=settings.keep_dates)
        data = encode(ds)
    return _store(db, storage, tenant_id, ds, data, source)


def _store(db: Database, storage: Storage, tenant_id: str, ds: Dataset, data: bytes,
           source: str) -> Stored:
    sop, study, series = (str(ds.SOPInstanceUID), str(ds.StudyInstanceUID),
                          str(ds.SeriesInstanceUID))
    digest = hashlib.sha256(data).hexdigest()
    stored = Stored(str(ds.SOPClassUID), sop, study, series,
                    str(ds.get("Modality", "") or "")[:16], duplicate=False)
    with db.session() as session:
        existing = _existing(session, tenant_id, sop)
    if existing is not None:
        return _duplicate(existing, digest, stored)
    relative = f"dicom/{tenant_id}/{study}/{series}/{sop}.dcm"
    path = storage.root / relative
    write_atomic(path, data)
    row = DicomInstanceRow(
        tenant_id=tenant_id, study_uid=study, series_uid=series, sop_uid=sop,
        sop_class_uid=stored.sop_class_uid, modality=stored.modality,
        patient_id=str(ds.get("PatientID", "") or "")[:64],
        study_date=str(ds.get("StudyDate", "") or "")[:8], burned_in=burned_in_flag(ds),
        source=source[:32], sha256=digest, size_bytes=len(data), path=relative,
        attrs=index_attrs(ds),
    )
    try:
        with db.session() as session:
            session.add(row)
    except IntegrityError:
        # Stored concurrently by another request: keep theirs (same path, same bytes
        # when it is really the same instance).
        with db.session() as session:
            existing = _existing(session, tenant_id, sop)
        if existing is None:
            raise
        return _duplicate(existing, digest, stored)
    logger.info("stored instance %s (%s, %d bytes, %s)", sop, stored.modality, len(data),
                source.split(":", 1)[0])
    return stored


def _existing(session: Session, tenant_id: str, sop: str) -> DicomInstanceRow | None:
    row = session.scalar(select(DicomInstanceRow).where(
        DicomInstanceRow.tenant_id == tenant_id, DicomInstanceRow.sop_uid == sop))
    if row is not None:
        session.expunge(row)
    return row


def _duplicate(existing: DicomInstanceRow, digest: str, stored: Stored) -> Stored:
    # A SOP Instance UID names one instance (PS3.5 9.1): a second copy, even in another
    # transfer syntax, is the same instance; the first one stored is kept.
    del existing, digest
    return Stored(stored.sop_class_uid, stored.sop_uid, stored.study_uid, stored.series_uid,
                  stored.modality, duplicate=True)


def instance_path(storage: Storage, row: DicomInstanceRow) -> Path:
    return storage.root / row.path
