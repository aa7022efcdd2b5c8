"""DICOM files with known patient data, and DICOMweb helpers, for the DICOM tests."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from app.core.dicom.send import multipart_related

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"

#: Patient data planted in every file; none of it may leave the store.
PHI = {
    "PatientName": "Zzyzx^Quentin^Marlowe",
    "PatientID": "MRN-77310-XQ",
    "PatientBirthDate": "19610203",
    "InstitutionName": "Saint Quillifer Infirmary",
    "ReferringPhysicianName": "Drabblecombe^Ottoline",
    "AccessionNumber": "ACC-99120-ZK",
}
PHI_VALUES = ("Zzyzx", "Quentin", "MRN-77310-XQ", "19610203", "Quillifer", "Drabblecombe",
              "ACC-99120-ZK")


def make_dicom(*, sop_class: str = CT, modality: str = "CT", study: str | None = None,
               series: str | None = None, sop: str | None = None, seed: int = 0,
               size: int = 32, study_date: str = "20240115", patient_id: str | None = None,
               burned_in: str | None = None, **extra: Any) -> bytes:
    """A small 16-bit greyscale image with the PHI above (also nested and private)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = sop or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.Modality = modality
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.PatientSex = "F"
    ds.StudyID = "S1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ref = Dataset()
    ref.ReferencedSOPClassUID = UID(sop_class)
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.SourceImageSequence = Sequence([ref])
    operator = Dataset()
    operator.PersonName = PHI["ReferringPhysicianName"]
    ds.OperatorIdentificationSequence = Sequence([operator])
    block = ds.private_block(0x0011, "HOSPITAL PRIVATE", create=True)
    block.add_new(0x01, "LO", PHI["PatientID"])
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    pixels = np.random.default_rng(seed).integers(0, 4096, (size, size), dtype=np.uint16)
    ds.set_pixel_data(pixels, "MONOCHROME2", 12, generate_instance_uid=False)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def without(data: bytes, keyword: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    delattr(ds, keyword)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def stow_body(parts: list[bytes]) -> tuple[bytes, dict[str, str]]:
    body, ctype = multipart_related(parts)
    return body, {"Content-Type": ctype, "Accept": "application/dicom+json"}


def values(item: dict[str, Any], tag: str) -> list[Any]:
    return list(item.get(tag, {}).get("Value", []))


@dataclass
class StowAnswer:
    status: int
    stored: list[dict[str, Any]]
    failed: list[dict[str, Any]]


def stow_answer(status: int, body: dict[str, Any]) -> StowAnswer:
    return StowAnswer(status, values(body, "00081199"), values(body, "00081198"))


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The parts of a multipart/related body (WADO-RS answers)."""
    match = re.search(r"boundary=\"?([^\";]+)\"?", content_type)
    assert match, content_type
    boundary = b"--" + match.group(1).encode()
    parts = []
    for chunk in body.split(boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, payload = chunk.partition(b"\r\n\r\n")
        parts.append(payload[:-2] if payload.endswith(b"\r\n") else payload)
    return parts
