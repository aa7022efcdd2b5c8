"""``predict?format=fhir``: the diagnosis as a FHIR R4 Bundle (see :mod:`app.core.fhir`)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from fastapi.responses import JSONResponse

from app.api.schemas.models import NamedImagePrediction, PredictBatchResponse, PredictResponse
from app.api.services.multipart import UploadedFile
from app.core import fhir
from app.core.db import ModelRow
from app.core.registry import row_card

FHIR_JSON = "application/fhir+json"


def study_uid(part: UploadedFile) -> str | None:
    """The Study Instance UID of a DICOM upload (``None`` for PNG, JPEG or a bad header)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(io.BytesIO(part.read()), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, TypeError, OSError, EOFError, KeyError):
        return None
    value = header.get("StudyInstanceUID")
    return str(value) if value else None


def fhir_response(row: ModelRow, parts: Sequence[UploadedFile],
                  answer: PredictResponse | PredictBatchResponse) -> JSONResponse:
    card = row_card(row)
    thresholds = (dict(zip(card.labels, card.threshold_vector(), strict=True))
                  if card.task == "multi-label" else None)
    results: Sequence[PredictResponse | NamedImagePrediction] = (
        answer.results if isinstance(answer, PredictBatchResponse) else [answer])
    images = []
    for part, result in zip(parts, results, strict=True):
        predictions = [{"label": p.label, "positive": p.positive,
                        "probability": p.probability if p.probability is not None
                        else p.vote_share} for p in result.predictions]
        images.append((predictions, study_uid(part)))
    return JSONResponse(fhir.prediction_bundle(fhir.model_fields(row), images, thresholds),
                        media_type=FHIR_JSON)
