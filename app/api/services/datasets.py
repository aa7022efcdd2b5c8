"""Dataset import and access for the API.

An upload is streamed to disk by the route (:mod:`app.api.services.multipart`), then
imported here with no database session open: the import (unzip, decode every image) may
take minutes, and on SQLite an open write transaction would lock every other tenant's
writes for that long. The row is recorded afterwards, in a session of its own that lasts
one insert. Nothing is kept when the archive is refused.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.api.schemas.jobs import DATASET_FIELDS
from app.core.catalogue import DATASET_FORMATS
from app.core.db import Database, DatasetRow, JobRow, ModelRow
from app.core.db.tables import new_id
from app.core.settings import Settings
from app.core.storage import Storage
from models.errors import ConflictError, InvalidInputError, NotFoundError

MAX_NAME = 200
MAX_LABELS = 1000
_ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class DatasetOptions:
    """What the uploader may choose (the form fields besides ``file``)."""

    format: str
    name: str
    labels: tuple[str, ...] | None = None
    #: ``refuse``: one unreadable file refuses the import (all are listed); ``skip``: the
    #: rest is imported and the skipped files are listed in the dataset's info.
    on_bad_files: str = "refuse"


def parse_options(fields: dict[str, str], filename: str | None) -> DatasetOptions:
    """The form's fields, checked: a known ``format``, a name of at most 200 characters,
    ``labels`` as a JSON list or comma-separated names. Any fault is 422 naming the field."""
    fmt = fields.get("format")
    if fmt is None:
        raise InvalidInputError("the form field 'format' is missing",
                                {"field": "format", "valid": list(DATASET_FORMATS)})
    if fmt not in DATASET_FORMATS:
        raise InvalidInputError(f"format: unknown dataset format; valid: "
                                f"{', '.join(DATASET_FORMATS)}",
                                {"field": "format", "valid": list(DATASET_FORMATS)})
    name = fields.get("name")
    if name is not None and not 1 <= len(name) <= MAX_NAME:
        raise InvalidInputError(f"name: must be 1 to {MAX_NAME} characters", {"field": "name"})
    default = Path(filename or "dataset").stem[:MAX_NAME] or "dataset"
    labels = _labels(fields["labels"]) if "labels" in fields else None
    on_bad_files = fields.get("on_bad_files", "refuse")
    if on_bad_files not in ("refuse", "skip"):
        raise InvalidInputError("on_bad_files: 'refuse' or 'skip'", {"field": "on_bad_files"})
    return DatasetOptions(format=fmt, name=name or default, labels=labels,
                          on_bad_files=on_bad_files)


def _labels(text: str) -> tuple[str, ...]:
    try:
        value: Any = json.loads(text) if text.lstrip().startswith("[") else text.split(",")
    except json.JSONDecodeError as exc:
        raise InvalidInputError("labels: not a JSON list", {"field": "labels"}) from exc
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidInputError("labels: a list of non-empty names", {"field": "labels"})
    names = tuple(v.strip() for v in value)
    if len(names) > MAX_LABELS or len(set(names)) != len(names):
        raise InvalidInputError(f"labels: at most {MAX_LABELS} distinct names",
                                {"field": "labels"})
    return names


def import_archive(db: Database, storage: Storage, settings: Settings, tenant_id: str,
                   archive: Path, options: DatasetOptions) -> DatasetRow:
    """Import ``archive`` (on disk, already within the byte limit) and record it.

    Runs without a database session until the import has finished (see module doc), then
    decodes the dataset for the tenant's models (:func:`decode_for_models`).
    """
    dataset_id, info = import_files(storage, settings, archive, options)
    row = DatasetRow(id=dataset_id, tenant_id=tenant_id, name=options.name,
                     format=options.format, sha256=str(info.get("sha256", "")), info=info)
    try:
        with db.session() as session:
            cards = tenant_model_cards(session, tenant_id)
        decode_for_models(storage, settings, dataset_id, cards)
        with db.session() as session:
            session.add(row)
    except BaseException:
        storage.remove(storage.path("datasets", dataset_id))  # the bucket's copy too
        raise
    return row


def import_files(storage: Storage, settings: Settings, archive: Path,
                 options: DatasetOptions) -> tuple[str, dict[str, Any]]:
    """Import ``archive`` into the store under a new dataset id, with no database access;
    returns the id and the dataset's info. Nothing is kept when it is refused."""
    from models.datasets import ImportLimits, import_dataset

    dataset_id = new_id()
    dest = storage.dataset_dir(dataset_id)
    limits = ImportLimits(
        max_archive_bytes=settings.max_dataset_bytes,
        max_files=settings.max_dataset_files,
        max_uncompressed_bytes=settings.max_dataset_uncompressed_bytes,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
    )
    try:
        info = _jsonable(import_dataset(archive, options.format, dest, limits=limits,
                                        labels=options.labels,
                                        on_bad_files=options.on_bad_files))  # type: ignore[arg-type]
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    storage.publish(dest)
    return dataset_id, info


def tenant_model_cards(session: Session, tenant_id: str, limit: int = 100) -> list[Any]:
    """The cards of the tenant's most recent models (as stored: JSON objects)."""
    return list(session.scalars(select(ModelRow.card).where(ModelRow.tenant_id == tenant_id)
                                .order_by(ModelRow.created_at.desc()).limit(limit)).all())


def decode_for_models(storage: Storage, settings: Settings, dataset_id: str,
                      cards: list[Any]) -> list[str]:
    """Decode a just-imported dataset once into tensor caches for the inputs of ``cards``
    (the tenant's most recent models first) whose labels fit it, ``dataset_cache_inputs``
    distinct inputs at most, so that audits of it start on decoded tensors; returns the
    cached input signatures. An audit of a model with another input makes its cache when
    it is planned."""
    from models.card import ModelCard
    from models.datasets import load_dataset
    from models.datasets.tensor_cache import build_cache, input_signature
    from models.errors import LabelMismatchError

    wanted = settings.dataset_cache_inputs
    if wanted == 0 or settings.dataset_cache_max_bytes == 0:
        return []
    dataset = load_dataset(storage.dataset_dir(dataset_id))
    done: list[str] = []
    for raw in cards:
        try:
            card = ModelCard.model_validate(raw)
        except ValueError:
            continue
        signature = input_signature(card)
        if signature in done:
            continue
        try:
            folder = build_cache(dataset, card, settings.dataset_cache_max_bytes)
        except LabelMismatchError:
            continue  # a model of other labels: it cannot audit this dataset
        if folder is None:
            continue  # too large at this model's input size
        storage.publish(folder)
        done.append(signature)
        if len(done) >= wanted:
            break
    return done


def _jsonable(info: Any) -> dict[str, Any]:
    if hasattr(info, "model_dump"):
        return dict(info.model_dump(mode="json"))
    return dict(info)


def dataset_or_404(session: Session, tenant_id: str, dataset_id: str) -> DatasetRow:
    row = session.get(DatasetRow, dataset_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFoundError(f"dataset {dataset_id!r} not found", {"dataset_id": dataset_id})
    return row


def list_datasets(session: Session, tenant_id: str, limit: int,
                  offset: int) -> tuple[list[DatasetRow], int]:
    query = select(DatasetRow).where(DatasetRow.tenant_id == tenant_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(DatasetRow.created_at.desc(), DatasetRow.id)
                           .limit(limit).offset(offset)).all()
    return list(rows), int(total)


def jobs_using(session: Session, row: DatasetRow) -> list[str]:
    """Ids of the tenant's queued or running jobs that read ``row``."""
    jobs = session.scalars(
        select(JobRow).where(JobRow.tenant_id == row.tenant_id, JobRow.status.in_(_ACTIVE))
    ).all()
    return [j.id for j in jobs
            if any((j.request or {}).get(key) == row.id for key in DATASET_FIELDS)]


def delete_dataset(session: Session, storage: Storage, row: DatasetRow) -> None:
    """Delete the row, then its files; refused (409) while a queued or running job reads it."""
    users = jobs_using(session, row)
    if users:
        raise ConflictError(
            f"dataset {row.id!r} is used by unfinished job(s) {users[:5]}; cancel them first",
            {"jobs": users},
        )
    session.delete(row)
    session.flush()
    storage.remove(storage.path("datasets", row.id))
