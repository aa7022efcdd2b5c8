"""Dataset import: stream the zip to disk, import it safely, record it. Nothing is kept
when the archive is refused."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.db import DatasetRow
from app.core.settings import Settings
from app.core.storage import Storage
from models.errors import NotFoundError, PayloadTooLargeError

CHUNK = 1024 * 1024


def stream_to_disk(source: BinaryIO, dest: Path, limit: int, what: str) -> int:
    """Copy an upload to ``dest`` in chunks, refusing it as soon as it passes ``limit``."""
    size = 0
    try:
        with dest.open("wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(
                        f"{what} is larger than the limit of {limit} bytes", {"limit": limit}
                    )
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return size


def import_upload(
    session: Session, storage: Storage, settings: Settings, tenant_id: str, upload: BinaryIO,
    filename: str | None, fmt: str, name: str | None,
) -> DatasetRow:
    from models.datasets import ImportLimits, import_dataset

    tmp = storage.new_upload_path(".zip")
    stream_to_disk(upload, tmp, settings.max_dataset_bytes, "the dataset archive")
    row = DatasetRow(tenant_id=tenant_id, name=name or filename or "dataset", format=fmt,
                     sha256="", info={})
    session.add(row)
    session.flush()
    dest = storage.dataset_dir(row.id)
    limits = ImportLimits(
        max_files=settings.max_dataset_files,
        max_uncompressed_bytes=settings.max_dataset_uncompressed_bytes,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
    )
    try:
        info = import_dataset(tmp, fmt, dest, limits=limits)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        session.rollback()
        raise
    finally:
        tmp.unlink(missing_ok=True)
    storage.publish(dest)
    row.info = _jsonable(info)
    row.sha256 = str(row.info.get("sha256", ""))
    session.flush()
    return row


def _jsonable(info: Any) -> dict[str, Any]:
    if hasattr(info, "to_json"):
        return dict(info.to_json())
    if hasattr(info, "model_dump"):
        return dict(info.model_dump(mode="json"))
    from dataclasses import asdict, is_dataclass

    if is_dataclass(info) and not isinstance(info, type):
        return dict(asdict(info))
    return dict(info)


def dataset_or_404(session: Session, tenant_id: str, dataset_id: str) -> DatasetRow:
    row = session.get(DatasetRow, dataset_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFoundError(f"dataset {dataset_id!r} not found")
    return row


def list_datasets(session: Session, tenant_id: str, limit: int,
                  offset: int) -> tuple[list[DatasetRow], int]:
    query = select(DatasetRow).where(DatasetRow.tenant_id == tenant_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(DatasetRow.created_at.desc()).limit(limit)
                           .offset(offset)).all()
    return list(rows), int(total)


def delete_dataset(session: Session, storage: Storage, row: DatasetRow) -> None:
    storage.remove(storage.path("datasets", row.id))
    session.delete(row)
