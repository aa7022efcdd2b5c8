"""A tenant's DICOM configuration: accepted AE titles, ingest settings, routing rules."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import ModelRow
from app.core.db.tables import DicomAeRow, DicomRuleRow, DicomSettingsRow
from models.errors import ConflictError, InvalidInputError, NotFoundError

#: AE titles: up to 16 characters of the default repertoire, no backslash or control
#: characters (PS3.5 6.2, AE); leading and trailing spaces are not significant.
_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def check_ae_title(value: str, what: str = "ae_title") -> str:
    title = value.strip()
    if not title or not _AE.match(title):
        raise InvalidInputError(f"{what} must be 1-16 printable ASCII characters without "
                                "a backslash", {"field": what})
    return title


def add_ae(session: Session, tenant_id: str, ae_title: str, host: str | None) -> DicomAeRow:
    title = check_ae_title(ae_title)
    if session.scalar(select(DicomAeRow).where(DicomAeRow.ae_title == title)) is not None:
        raise ConflictError(f"the AE title {title!r} is already registered",
                            {"ae_title": title})
    row = DicomAeRow(tenant_id=tenant_id, ae_title=title, host=host or None)
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise ConflictError(f"the AE title {title!r} is already registered") from exc
    return row


def list_aes(session: Session, tenant_id: str) -> list[DicomAeRow]:
    return list(session.scalars(select(DicomAeRow).where(DicomAeRow.tenant_id == tenant_id)
                                .order_by(DicomAeRow.ae_title)))


def delete_ae(session: Session, tenant_id: str, ae_id: str) -> None:
    row = session.get(DicomAeRow, ae_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFoundError(f"AE {ae_id!r} not found")
    session.delete(row)


def update_settings(session: Session, row: DicomSettingsRow, deidentify: bool | None,
                    keep_dates: bool | None) -> DicomSettingsRow:
    row = session.merge(row)
    if deidentify is not None:
        row.deidentify = deidentify
    if keep_dates is not None:
        row.keep_dates = keep_dates
    session.flush()
    return row


def add_rule(session: Session, tenant_id: str, modality: str | None, calling_ae: str | None,
             model_id: str, destination: dict[str, Any] | None) -> DicomRuleRow:
    model = session.get(ModelRow, model_id)
    if model is None or model.tenant_id != tenant_id:
        raise NotFoundError(f"model {model_id!r} not found")
    if modality is None and calling_ae is None:
        raise InvalidInputError("a rule needs a modality, a calling_ae, or both")
    row = DicomRuleRow(tenant_id=tenant_id, modality=modality, model_id=model_id,
                       calling_ae=check_ae_title(calling_ae, "calling_ae") if calling_ae
                       else None, destination=destination)
    session.add(row)
    session.flush()
    return row


def list_rules(session: Session, tenant_id: str) -> list[DicomRuleRow]:
    return list(session.scalars(select(DicomRuleRow).where(DicomRuleRow.tenant_id == tenant_id)
                                .order_by(DicomRuleRow.created_at)))


def delete_rule(session: Session, tenant_id: str, rule_id: str) -> None:
    row = session.get(DicomRuleRow, rule_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFoundError(f"rule {rule_id!r} not found")
    session.delete(row)
