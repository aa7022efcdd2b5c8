"""The one table that maps domain errors to HTTP, and the JSON error handlers.

Every error response is ``{"error": {"code", "message", "details"}}``, except under
``/v2`` (the Open Inference Protocol), whose clients expect the protocol's own shape,
``{"error": "<message>"}``. No stack trace ever leaves the process.
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
    QueryBudgetExceededError,
    RemoteModelError,
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
    (RemoteModelError, 502),
    (QueryBudgetExceededError, 429),
]


def status_for(exc: RobustDxError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 400


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


OIP_PREFIX = "/v2"


def _respond(request: Request, status: int, code: str, message: str, details: Any = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    path = request.url.path
    if path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/"):
        return JSONResponse({"error": message}, status, headers=headers)
    return JSONResponse(error_body(code, message, details), status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RobustDxError)
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return _respond(request, status, exc.code, exc.message, exc.details, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return _respond(request, 422, "invalid_request", f"{where}: {first['msg']}",
                    {"errors": errors})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _respond(request, exc.status_code, code, str(exc.detail))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return _respond(request, 500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RobustDxError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
