"""The one table that maps domain errors to HTTP, and the JSON error handlers.

Every error response is ``{"error": {"code", "message", "details"}}``; no stack trace
ever leaves the process.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import (
    AuthenticationError,
    ConflictError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    RobustDxError,
    ServiceUnavailableError,
)

logger = logging.getLogger(__name__)

#: Most specific class first; the first match wins.
STATUS_BY_ERROR: list[tuple[type[RobustDxError], int]] = [
    (ImageTooLargeError, 413),
    (InvalidImageError, 415),
    (InvalidInputError, 422),
    (PayloadTooLargeError, 413),
    (AuthenticationError, 401),
    (NotFoundError, 404),
    (ConflictError, 409),
    (ServiceUnavailableError, 503),
]


def status_for(exc: RobustDxError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 400


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RobustDxError)
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status, headers=headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return JSONResponse(
        error_body("invalid_request", f"{where}: {first['msg']}", {"errors": errors}), 422
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code)


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error"), 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RobustDxError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
