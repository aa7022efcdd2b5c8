"""Import limits, the dataset summary and the manifest written for every stored dataset."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.card import Task
from models.imaging.limits import DecodeLimits

DatasetFormat = Literal["imagefolder", "csv", "medmnist-npz", "dicom"]
FORMATS: tuple[str, ...] = ("imagefolder", "csv", "medmnist-npz", "dicom")

MANIFEST = "manifest.json"
FILES_DIR = "files"
MANIFEST_VERSION = 1


OnBadFiles = Literal["refuse", "skip"]
ON_BAD_FILES: tuple[str, ...] = ("refuse", "skip")


class ImportLimits(BaseModel):
    """What an uploaded archive may hold. All are checked before anything is extracted,
    and again while extracting (an entry may not inflate past the size it declares).

    ``max_image_bytes``, ``max_image_pixels`` and ``max_jpeg_scans`` are the decoder's
    per-image limits (:meth:`decode_limits`); ``max_total_pixels`` caps the pixels of the
    whole import; ``max_csv_rows`` and ``max_csv_bytes`` cap the label CSV, read as a
    stream. Loading a stored dataset uses the limits it was imported with.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_archive_bytes: int = Field(default=4 * 1024**3, gt=0)
    max_files: int = Field(default=200_000, gt=0)
    max_uncompressed_bytes: int = Field(default=16 * 1024**3, gt=0)
    max_image_bytes: int = Field(default=32 * 1024**2, gt=0)
    max_image_pixels: int = Field(default=64 * 1024**2, gt=0)
    max_jpeg_scans: int = Field(default=64, gt=0)
    max_total_pixels: int = Field(default=256 * 1024**3, gt=0)
    max_csv_bytes: int = Field(default=64 * 1024**2, gt=0)
    max_csv_rows: int = Field(default=1_000_000, gt=0)

    def decode_limits(self) -> DecodeLimits:
        """The decoder's limits for one image of this dataset (and the import's total)."""
        return DecodeLimits(
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
            max_jpeg_scans=self.max_jpeg_scans,
            max_total_pixels=self.max_total_pixels,
        )


class BadFile(BaseModel):
    """A file an import could not use, and why (the decoder's message)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    error: str


class DatasetInfo(BaseModel):
    """The summary of an imported dataset (JSON-able; what ``POST /v1/datasets`` returns).

    ``label_counts``: images per class (single-label) or positives per finding
    (multi-label). ``skipped_files`` (the first 50) and ``skipped_count``: images left out
    by an import with ``on_bad_files="skip"``. ``metadata_keys``: the per-image metadata
    kept (:meth:`StoredDataset.metadata`); ``metadata_dropped``: keys left out for having
    too many distinct values to be group labels, or past the key cap.
    ``implicit_negatives``: a finding the dataset never names is negative for every image
    (the ChestX-ray14 ``Finding Labels`` convention), so a model may have more findings
    than the dataset names.
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
    skipped_files: tuple[BadFile, ...] = ()
    skipped_count: int = 0
    metadata_keys: tuple[str, ...] = ()
    metadata_dropped: tuple[str, ...] = ()


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
    metadata: dict[str, str] = Field(default_factory=dict)


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = MANIFEST_VERSION
    info: DatasetInfo
    limits: ImportLimits
    items: tuple[ManifestItem, ...]
