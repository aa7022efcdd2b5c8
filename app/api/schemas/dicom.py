"""Schemas of the DICOM configuration routes (``/v1/dicom``) and datasets from studies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.api.schemas.common import UtcDatetime
from app.core.db.tables import DicomAeRow, DicomRuleRow, DicomSettingsRow

_HOST = r"^[A-Za-z0-9.:\-]{1,255}$"


class AeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ae_title: str = Field(min_length=1, max_length=16, description="Calling AE title")
    host: str | None = Field(default=None, pattern=_HOST,
                             description="Accept it only from this IP address")


class AePublic(BaseModel):
    id: str
    ae_title: str
    host: str | None
    created_at: UtcDatetime

    @classmethod
    def from_row(cls, row: DicomAeRow) -> AePublic:
        return cls(id=row.id, ae_title=row.ae_title, host=row.host, created_at=row.created_at)


class DicomSettingsPublic(BaseModel):
    deidentify: bool = Field(description="PS3.15 Annex E Basic Profile on ingest (default on)")
    keep_dates: bool = Field(description="Retain Longitudinal Temporal Information "
                             "(Full Dates) option")

    @classmethod
    def from_row(cls, row: DicomSettingsRow) -> DicomSettingsPublic:
        return cls(deidentify=row.deidentify, keep_dates=row.keep_dates)


class DicomSettingsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deidentify: StrictBool | None = None
    keep_dates: StrictBool | None = None


class DimseDestination(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["dimse"]
    ae_title: str = Field(min_length=1, max_length=16)
    host: str = Field(pattern=_HOST)
    port: int = Field(ge=1, le=65535)


class StowDestination(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["stow"]
    url: str = Field(pattern=r"^https?://[^\s]{1,2000}$",
                     description="The STOW-RS studies URL")
    token: str | None = Field(default=None, max_length=4000, description="Bearer token")


Destination = Annotated[DimseDestination | StowDestination, Field(discriminator="kind")]


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modality: str | None = Field(default=None, pattern=r"^[A-Z0-9_ ]{1,16}$")
    calling_ae: str | None = Field(default=None, min_length=1, max_length=16)
    model_id: str = Field(min_length=1, max_length=32)
    destination: Destination | None = None


class RulePublic(BaseModel):
    id: str
    modality: str | None
    calling_ae: str | None
    model_id: str
    destination: dict[str, Any] | None = Field(description="The token, if any, is not shown")
    created_at: UtcDatetime

    @classmethod
    def from_row(cls, row: DicomRuleRow) -> RulePublic:
        dest = dict(row.destination) if row.destination else None
        if dest and dest.get("token"):
            dest["token"] = "***"
        return cls(id=row.id, modality=row.modality, calling_ae=row.calling_ae,
                   model_id=row.model_id, destination=dest, created_at=row.created_at)


class StudiesDatasetRequest(BaseModel):
    """A dataset from stored studies: the instances a QIDO query finds, labelled by a CSV
    whose key column is ``SOPInstanceUID`` or ``StudyInstanceUID`` (then every instance of
    the study takes the row's labels); the other columns follow the label CSV conventions
    of dataset upload."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    query: dict[str, str] = Field(default_factory=dict,
                                  description="QIDO matching keys at the instances level")
    labels_csv: str = Field(min_length=1, max_length=16 * 1024 * 1024)
    deidentify: bool = Field(default=True, description="De-identify the dataset's copies "
                             "(PS3.15 Annex E); instances stored de-identified stay so")
    allow_burned_in: bool = Field(default=False, description="Accept instances whose "
                                  "BurnedInAnnotation is YES")


class DicomResultsPublic(BaseModel):
    """DICOM objects RobustDx stored for a result, with their WADO-RS URLs."""

    instances: list[dict[str, str]]
