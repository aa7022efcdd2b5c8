from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.core.db import DatasetRow

DatasetFormat = Literal["imagefolder", "csv", "medmnist-npz", "dicom"]


class DatasetPublic(BaseModel):
    id: str
    name: str
    format: DatasetFormat
    sha256: str
    count: int = Field(description="Number of images.")
    task: str
    labels: list[str]
    label_counts: dict[str, int]
    info: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: DatasetRow) -> DatasetPublic:
        info = row.info
        return cls(
            id=row.id, name=row.name, format=row.format,
            sha256=row.sha256, count=int(info.get("count", 0)), task=str(info.get("task", "")),
            labels=list(info.get("label_names", info.get("labels", []))),
            label_counts=dict(info.get("label_counts", {})), info=info,
            created_at=row.created_at,
        )


class DatasetPage(BaseModel):
    items: list[DatasetPublic]
    total: int
    limit: int
    offset: int
