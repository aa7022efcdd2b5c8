"""Why an instance was refused, as a domain error carrying its DICOM status.

Each refusal is an :class:`~models.errors.InvalidInputError` (or a payload error) so the
HTTP layer maps it once; ``status`` is the C-STORE status / STOW-RS failure reason
(PS3.4 Annex B.2.3, PS3.18 Table 10.5.3-1) the DIMSE and DICOMweb paths answer with.
Messages never quote header values: they may be patient data.
"""

from __future__ import annotations

from models.errors import InvalidInputError, PayloadTooLargeError

#: C-STORE statuses and STOW-RS failure reasons.
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # used for "over the size limit"
DATASET_MISMATCH = 0xA900  # a required attribute is missing or malformed
CANNOT_UNDERSTAND = 0xC000  # not DICOM at all
SOP_CLASS_NOT_SUPPORTED = 0x0122
DUPLICATE_CONFLICT = 0x0111  # same SOP Instance UID, different content
PROCESSING_FAILURE = 0x0110


class DicomRefusedError(InvalidInputError):
    """An instance that is not stored; ``status`` is the DICOM failure code."""

    code = "dicom_refused"

    def __init__(self, message: str, status: int, details: dict[str, object] | None = None):
        super().__init__(message, {"dicom_status": f"{status:04X}", **(details or {})})
        self.status = status


class DicomTooLargeError(PayloadTooLargeError):
    """An instance over ``max_dicom_instance_bytes``."""

    status = OUT_OF_RESOURCES
