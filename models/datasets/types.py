"""Import limits, the dataset summary and the manifest written for every stored dataset."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.card import Task

DatasetFormat = Literal["imagefolder", "csv", "medmnist-npz", "dicom"]
FORMATS: tuple[str, ...] = ("imagefolder", "csv", "medmnist-npz", "dicom")

MANIFEST = "manifest.json"
FILES_DIR = "files"
MANIFEST_VERSION = 1


class ImportLimits(BaseModel):
    """What an uploaded archive may hold. All are checked before anything is extracted,
    and again while extracting (an entry may not inflate past the size it declares)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_archive_bytes: int = Field(default=4 * 1024**3, gt=0)
    max_files: int = Field(default=200_000, gt=0)
    max_uncompressed_bytes: int = Field(default=16 * 1024**3, gt=0)
    max_image_bytes: int = Field(default=32 * 1024**2, gt=0)
    max_image_pixels: int = Field(default=64 * 1024**2, gt=0)
    max_csv_bytes: int = Field(default=256 * 1024**2, gt=0)


class DatasetInfo(BaseModel):
    """The summary of an imported dataset (JSON-able; what ``POST /v1/datasets`` returns).

    ``label_counts``: images per class (single-label) or positives per finding
    (multi-label). ``implicit_negatives``: a finding the dataset never names is negative
    for every image (the ChestX-ray14 ``Finding Labels`` convention), so a model may have
    more findings than the dataset names.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str
    count: int
    task: Task
    label_names: tuple[str, ...]
    label_counts: dict[str, int]
    sha256: str
    splits: dict[str, int] | None = None
    has_masks: bool = False
    implicit_negatives: bool = False
    image_formats: dict[str, int] = Field(default_factory=dict)
    ignored_files: int = 0


class ManifestItem(BaseModel):
    """One image: its stored file (relative to the dataset folder) and its labels.

    Single-label: ``label`` is the class index into ``label_names``. Multi-label:
    ``findings`` lists the indices of the positive findings.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    label: int | None = None
    findings: tuple[int, ...] | None = None
    split: str | None = None
    mask: str | None = None
    source: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = MANIFEST_VERSION
    info: DatasetInfo
    limits: ImportLimits
    items: tuple[ManifestItem, ...]
