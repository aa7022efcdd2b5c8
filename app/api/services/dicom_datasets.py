"""Datasets from stored studies: a QIDO query picks the instances, a labels CSV keyed by
SOP or Study Instance UID labels them, and the result is imported exactly like an
uploaded ``dicom`` archive (same checks, same decoder, same manifest).

The CSV's key column is renamed to the importer's ``file`` column and each key is replaced
by the instance files it names; keys may be given as stored or as the PACS knows them
(mapped by the tenant's pseudonyms). Copies are de-identified (PS3.15 Annex E) unless the
request says otherwise; instances flagged ``BurnedInAnnotation = YES`` are refused unless
allowed, since no header profile removes text from pixels.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Sequence

from sqlalchemy.orm import Session

from app.api.schemas.dicom import StudiesDatasetRequest
from app.api.services.datasets import (
    DatasetOptions,
    decode_for_models,
    import_files,
    tenant_model_cards,
)
from app.core.db import DatasetRow
from app.core.db.tables import DicomDatasetRow, DicomInstanceRow, DicomSettingsRow
from app.core.dicom.deid import Pseudonymizer, deidentify
from app.core.dicom.qido import candidates, filtered, parse_query
from app.core.dicom.sop import IMAGE_SOP_CLASSES
from app.core.dicom.store import encode, instance_path, parse
from app.core.settings import Settings
from app.core.storage import Storage
from models.errors import InvalidDatasetError

SOP_KEYS = ("sopinstanceuid", "sop_instance_uid", "00080018")
STUDY_KEYS = ("studyinstanceuid", "study_instance_uid", "0020000d")


def _key_column(header: Sequence[str]) -> tuple[int, str]:
    lowered = [h.strip().lower() for h in header]
    for keys, level in ((SOP_KEYS, "sop"), (STUDY_KEYS, "study")):
        for key in keys:
            if key in lowered:
                return lowered.index(key), level
    raise InvalidDatasetError("the labels CSV needs a SOPInstanceUID or StudyInstanceUID "
                              "column", {"header": list(header)[:50]})


def _rows(text: str) -> tuple[list[str], list[list[str]]]:
    rows = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise InvalidDatasetError("the labels CSV needs a header and at least one row")
    return rows[0], rows[1:]


def _instances(session: Session, tenant_id: str, request: StudiesDatasetRequest,
               settings: DicomSettingsRow, limit: int) -> list[DicomInstanceRow]:
    query = parse_query(request.query.items())
    stmt = filtered(tenant_id, query, settings, "instances").where(
        DicomInstanceRow.sop_class_uid.in_(sorted(IMAGE_SOP_CLASSES)))
    rows: list[DicomInstanceRow] = list(session.scalars(
        stmt.order_by(DicomInstanceRow.created_at).limit(limit + 1)))
    if not rows:
        raise InvalidDatasetError("the query finds no stored image instances")
    if len(rows) > limit:
        raise InvalidDatasetError(f"the query finds more than {limit} instances")
    return rows


def _labelled(rows: list[DicomInstanceRow], header: list[str], body: list[list[str]],
              settings: DicomSettingsRow) -> list[tuple[DicomInstanceRow, list[str]]]:
    col, level = _key_column(header)
    by_key: dict[str, list[DicomInstanceRow]] = {}
    for row in rows:
        by_key.setdefault(row.sop_uid if level == "sop" else row.study_uid, []).append(row)
    out, missing = [], []
    for number, line in enumerate(body, start=2):
        key = line[col].strip() if col < len(line) else ""
        found = next((by_key[k] for k in candidates(settings, [key]) if k in by_key), None)
        if found is None:
            missing.append(number)  # the line, not the key: it may be an identifier
            continue
        out += [(row, line) for row in found]
    if missing:
        raise InvalidDatasetError(
            f"{len(missing)} CSV rows match no instance of the query (lines "
            f"{', '.join(map(str, missing[:20]))})", {"lines": missing[:100]})
    return out


def build_zip(storage: Storage, labelled: list[tuple[DicomInstanceRow, list[str]]],
              header: list[str], key_col: int, settings: DicomSettingsRow,
              request: StudiesDatasetRequest) -> bytes:
    burned = [r.sop_uid for r, _ in labelled if r.burned_in == "YES"]
    if burned and not request.allow_burned_in:
        raise InvalidDatasetError(
            f"{len(burned)} instances may carry burned-in annotation (BurnedInAnnotation "
            "YES); set allow_burned_in to use them", {"instances": burned[:20]})
    pseudo = Pseudonymizer(settings.secret)
    buf = io.BytesIO()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["file", *[h for i, h in enumerate(header) if i != key_col]])
    seen: set[str] = set()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for row, line in labelled:
            if row.sop_uid in seen:
                continue
            seen.add(row.sop_uid)
            data = instance_path(storage, row).read_bytes()
            if request.deidentify and not settings.deidentify:
                ds = parse(data)
                deidentify(ds, pseudo, keep_dates=settings.keep_dates)
                data = encode(ds)
            name = f"dicom/{len(seen):06d}.dcm"
            zf.writestr(name, data)
            writer.writerow([name, *[c for i, c in enumerate(line) if i != key_col]])
        zf.writestr("labels.csv", out.getvalue())
    return buf.getvalue()


def dataset_from_studies(session: Session, storage: Storage, settings: Settings,
                         tenant_id: str, dicom: DicomSettingsRow,
                         request: StudiesDatasetRequest) -> DatasetRow:
    header, body = _rows(request.labels_csv)
    key_col, _ = _key_column(header)
    rows = _instances(session, tenant_id, request, dicom, settings.max_dataset_files)
    labelled = _labelled(rows, header, body, dicom)
    archive = build_zip(storage, labelled, header, key_col, dicom, request)
    tmp = storage.new_upload_path(".zip")
    try:
        tmp.write_bytes(archive)
        options = DatasetOptions(format="dicom", name=request.name or "studies")
        dataset_id, info = import_files(storage, settings, tmp, options)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        decode_for_models(storage, settings, dataset_id, tenant_model_cards(session, tenant_id))
    except BaseException:
        storage.remove(storage.path("datasets", dataset_id))
        raise
    row = DatasetRow(id=dataset_id, tenant_id=tenant_id, name=options.name, format="dicom",
                     sha256=str(info.get("sha256", "")), info=info)
    session.add(row)
    session.flush()
    studies = sorted({r.study_uid for r, _ in labelled})
    session.add(DicomDatasetRow(dataset_id=row.id, tenant_id=tenant_id, study_uids=studies,
                                query=dict(request.query)))
    session.flush()
    return row
