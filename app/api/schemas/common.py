"""Shapes every route shares: the error body, the documented error statuses, paging and
the one timestamp format (UTC, ISO 8601, ``Z``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer, WithJsonSchema

from app.core.timestamps import as_utc, format_utc


class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["model '3f2a' not found"])
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _utc(value: Any) -> Any:
    return as_utc(value) if isinstance(value, datetime) else value


#: A timestamp, always answered in UTC with a ``Z``.
UtcDatetime = Annotated[
    datetime,
    BeforeValidator(_utc),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time",
                    "examples": ["2026-12-01T08:36:05.123456Z"]}),
]

_DESCRIPTIONS: dict[int, str] = {
    400: "The request could not be parsed at all (malformed HTTP framing or encoding)",
    401: "Missing or invalid credentials (`Authorization: Bearer <key>`)",
    404: "Unknown id (or another tenant's)",
    409: "Not possible in the resource's current state (or the name is taken)",
    413: "A body, part or image over its limit",
    415: "An image that is not a readable PNG, JPEG or DICOM",
    422: "Invalid input: the request's shape, a parameter, a file or a form field",
    429: "Too many requests or running jobs for this tenant; see `Retry-After`",
    503: "A dependency (database, broker, inference) is unavailable; retry later",
}


def responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for ``statuses``, each with the error body's schema.

    ``descriptions`` overrides a description by status (``_409="Name taken"``).
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        text = descriptions.get(f"_{status}", _DESCRIPTIONS[status])
        out[status] = {"model": ErrorResponse, "description": text}
    return out


#: What any authenticated route may answer: it reads a request, a key and the database.
ERRORS = responses(400, 401, 404, 422, 503)
#: Routes that take an upload (model, dataset, images).
UPLOAD_ERRORS = responses(409, 413, 415)
#: Routes that submit work or run inference (budgets and rate limits apply).
WORK_ERRORS = responses(409, 429)

#: Deepest page offset: far beyond any tenant's row count, well inside every database's
#: 64-bit OFFSET (2^63 and more used to reach the database and fail there).
MAX_OFFSET = 1_000_000
MAX_LIMIT = 200


class Page(BaseModel):
    limit: int
    offset: int


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(page_params)]
