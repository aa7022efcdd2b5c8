"""QIDO-RS (PS3.18 10.6) over the instance index: query parsing, matching and the
``application/dicom+json`` answers for the studies, series and instances levels.

Matching keys (by keyword or by tag, ``00100020``): ``PatientID`` (single value, ``*``/``?``
wildcards), ``StudyDate`` (``YYYYMMDD``, ``A-B``, ``-B``, ``A-``), ``Modality`` (at the
studies level, the study has a series of it; also ``ModalitiesInStudy``),
``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID`` (comma-separated lists),
``SOPClassUID``; and ``limit``, ``offset``, ``includefield``, ``fuzzymatching``.
Any other key is refused, as are malformed dates and numbers.

With de-identification on, a PatientID or UID given as the PACS knows it (the original)
is mapped by the tenant's keyed pseudonyms before matching, so the hospital can query by
the identifiers it has while the store keeps only the pseudonyms.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.core.db.tables import DicomInstanceRow, DicomSettingsRow
from app.core.dicom.deid import Pseudonymizer
from models.errors import InvalidInputError

Level = Literal["studies", "series", "instances"]
MATCH_KEYS = frozenset({
    "PatientID", "StudyDate", "Modality", "ModalitiesInStudy", "StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
})
CONTROL_KEYS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
MAX_LIMIT = 1000
STUDY_KEYWORDS = (
    "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "PatientName",
    "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "StudyDescription", "PatientIdentityRemoved",
)
SERIES_KEYWORDS = ("StudyInstanceUID", "Modality", "SeriesInstanceUID", "SeriesNumber",
                   "SeriesDescription")


@dataclass
class Query:
    patient_id: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    modality: str | None = None
    uids: dict[str, list[str]] = field(default_factory=dict)
    limit: int = 100
    offset: int = 0


def _key(raw: str) -> str:
    if len(raw) == 8 and all(c in "0123456789abcdefABCDEF" for c in raw):
        keyword = keyword_for_tag(int(raw, 16))
        return keyword or raw
    return raw


def _date(value: str) -> str:
    try:
        dt.datetime.strptime(value, "%Y%m%d")
    except ValueError as exc:
        raise InvalidInputError(
            "StudyDate must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end open)",
            {"key": "StudyDate"}) from exc
    return value


def _int(key: str, value: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise InvalidInputError(f"{key} must be an integer in [{low}, {high}]", {"key": key})
    return int(value)


def parse_query(params: Iterable[tuple[str, str]]) -> Query:
    """Raises InvalidInputError on unknown keys, malformed dates or numbers."""
    query = Query()
    for raw_key, value in params:
        key = _key(raw_key)
        if key in CONTROL_KEYS:
            if key == "limit":
                query.limit = _int("limit", value, 1, MAX_LIMIT)
            elif key == "offset":
                query.offset = _int("offset", value, 0, 10**9)
            continue
        if key not in MATCH_KEYS:
            raise InvalidInputError(
                f"unknown QIDO key {raw_key[:64]!r}; supported: "
                f"{', '.join(sorted(MATCH_KEYS | CONTROL_KEYS))}",
                {"key": raw_key[:64], "supported": sorted(MATCH_KEYS | CONTROL_KEYS)})
        _set(query, key, value.strip())
    return query


def _set(query: Query, key: str, value: str) -> None:
    if key == "PatientID":
        query.patient_id = value[:64]
    elif key == "StudyDate":
        if "-" in value:
            start, _, end = value.partition("-")
            if not start and not end:
                raise InvalidInputError("StudyDate range '-' has no end", {"key": key})
            query.date_from = _date(start) if start else None
            query.date_to = _date(end) if end else None
        else:
            query.date_from = query.date_to = _date(value)
    elif key in ("Modality", "ModalitiesInStudy"):
        query.modality = value[:16]
    else:
        uids = [u.strip() for u in value.split(",") if u.strip()]
        query.uids.setdefault(key, []).extend(u[:64] for u in uids)


_COLUMN = {
    "StudyInstanceUID": DicomInstanceRow.study_uid,
    "SeriesInstanceUID": DicomInstanceRow.series_uid,
    "SOPInstanceUID": DicomInstanceRow.sop_uid,
    "SOPClassUID": DicomInstanceRow.sop_class_uid,
}


def candidates(settings: DicomSettingsRow | None, uids: Sequence[str]) -> list[str]:
    """The UIDs as given and, with de-identification on, as the store keeps them."""
    out = list(uids)
    if settings is not None and settings.deidentify:
        pseudo = Pseudonymizer(settings.secret)
        out += [pseudo.uid(u) for u in uids]
    return out


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def filtered(tenant_id: str, query: Query, settings: DicomSettingsRow | None,
             level: Level) -> Select[Any]:
    stmt = select(DicomInstanceRow).where(DicomInstanceRow.tenant_id == tenant_id)
    if query.patient_id:
        pid = query.patient_id
        if "*" in pid or "?" in pid:
            stmt = stmt.where(DicomInstanceRow.patient_id.like(_like(pid), escape="\\"))
        else:
            ids = [pid]
            if settings is not None and settings.deidentify:
                ids.append(Pseudonymizer(settings.secret).patient_id(pid))
            stmt = stmt.where(DicomInstanceRow.patient_id.in_(ids))
    if query.date_from:
        stmt = stmt.where(DicomInstanceRow.study_date >= query.date_from)
    if query.date_to:
        stmt = stmt.where(DicomInstanceRow.study_date <= query.date_to,
                          DicomInstanceRow.study_date != "")
    if query.modality:
        if level == "studies":
            with_modality = select(DicomInstanceRow.study_uid).where(
                DicomInstanceRow.tenant_id == tenant_id,
                DicomInstanceRow.modality == query.modality)
            stmt = stmt.where(DicomInstanceRow.study_uid.in_(with_modality))
        else:
            stmt = stmt.where(DicomInstanceRow.modality == query.modality)
    for key, uids in query.uids.items():
        values = uids if key == "SOPClassUID" else candidates(settings, uids)
        stmt = stmt.where(_COLUMN[key].in_(values))
    return stmt


def search(session: Session, tenant_id: str, query: Query, settings: DicomSettingsRow | None,
           level: Level) -> list[list[DicomInstanceRow]]:
    """Groups of index rows, one per study, series or instance of the page, in the order
    they were first stored."""
    stmt = filtered(tenant_id, query, settings, level)
    if level == "instances":
        found: Sequence[DicomInstanceRow] = session.scalars(
            stmt.order_by(DicomInstanceRow.created_at, DicomInstanceRow.id)
            .limit(query.limit).offset(query.offset)).all()
        return [[row] for row in found]
    column = DicomInstanceRow.study_uid if level == "studies" else DicomInstanceRow.series_uid
    sub = stmt.subquery()
    key = sub.c.study_uid if level == "studies" else sub.c.series_uid
    page = session.execute(
        select(key, func.min(sub.c.created_at).label("first"))
        .group_by(key).order_by("first", key).limit(query.limit).offset(query.offset)
    ).all()
    keys = [k for k, _ in page]
    if not keys:
        return []
    rows: Sequence[DicomInstanceRow] = session.scalars(
        select(DicomInstanceRow).where(DicomInstanceRow.tenant_id == tenant_id,
                                       column.in_(keys))
        .order_by(DicomInstanceRow.created_at, DicomInstanceRow.id)).all()
    groups: dict[str, list[DicomInstanceRow]] = {k: [] for k in keys}
    for row in rows:
        groups[row.study_uid if level == "studies" else row.series_uid].append(row)
    return [groups[k] for k in keys]


def _tag(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return f"{tag:08X}"


def _pick(attrs: dict[str, Any], keywords: Sequence[str]) -> dict[str, Any]:
    wanted = {_tag(k) for k in keywords}
    return {t: v for t, v in attrs.items() if t in wanted}


def _put(item: dict[str, Any], keyword: str, vr: str, values: list[Any]) -> None:
    item[_tag(keyword)] = {"vr": vr, "Value": values} if values else {"vr": vr}


def study_json(rows: Sequence[DicomInstanceRow], base: str) -> dict[str, Any]:
    item = _pick(rows[0].attrs, STUDY_KEYWORDS)
    modalities = sorted({r.modality for r in rows if r.modality})
    _put(item, "ModalitiesInStudy", "CS", list(modalities))
    _put(item, "NumberOfStudyRelatedSeries", "IS", [len({r.series_uid for r in rows})])
    _put(item, "NumberOfStudyRelatedInstances", "IS", [len(rows)])
    _put(item, "RetrieveURL", "UR", [f"{base}/studies/{rows[0].study_uid}"])
    return dict(sorted(item.items()))


def series_json(rows: Sequence[DicomInstanceRow], base: str) -> dict[str, Any]:
    item = _pick(rows[0].attrs, SERIES_KEYWORDS)
    _put(item, "NumberOfSeriesRelatedInstances", "IS", [len(rows)])
    first = rows[0]
    _put(item, "RetrieveURL", "UR", [f"{base}/studies/{first.study_uid}/series/{first.series_uid}"])
    return dict(sorted(item.items()))


def instance_json(row: DicomInstanceRow, base: str) -> dict[str, Any]:
    item = dict(row.attrs)
    url = f"{base}/studies/{row.study_uid}/series/{row.series_uid}/instances/{row.sop_uid}"
    _put(item, "RetrieveURL", "UR", [url])
    return dict(sorted(item.items()))
