"""The one table that maps domain errors to HTTP, and the JSON error handlers.

Every error response is ``{"error": {"code", "message", "details"}}``, except under
``/v2`` (the Open Inference Protocol), whose clients expect the protocol's own shape,
``{"error": "<message>"}``. No stack trace ever leaves the process. Request-shape errors
(FastAPI's validation, the multipart reader, the domain's :class:`InvalidInputError`) are
all 422 with the offending field in ``details``; the database's own refusals are mapped too
(a unique name taken by a concurrent request is 409, a locked or unreachable database 503
with ``Retry-After``), so neither reaches the client as a 500.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
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
    RateLimitedError,
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
    (RateLimitedError, 429),
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
    if isinstance(exc, RateLimitedError):
        headers = {"Retry-After": str(exc.retry_after)}
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
                    {"field": where, "errors": errors})


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type"}


def _allowed_methods(request: Request) -> str | None:
    """Every method the API documents at this path (Starlette's 405 names only those of
    the first route whose path matched, so ``OPTIONS /v1/models`` said ``Allow: POST``).
    None for a path the OpenAPI document does not describe."""
    methods: set[str] = set()
    for template, item in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\{[^}:]+:path\}", ".+", template)
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", pattern)
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in item}
    return ", ".join(sorted(methods)) if methods else None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(getattr(exc, "headers", None) or {})
    allowed = _allowed_methods(request) if exc.status_code == 405 else None
    if allowed:
        headers["Allow"] = allowed
    return _respond(request, exc.status_code, code, str(exc.detail), None, headers or None)


async def _integrity_error(_: Request, exc: Exception) -> JSONResponse:
    # Two requests raced for a unique value (a tenant or model name); the loser's
    # check-then-insert saw it free. The statement is never echoed: it may hold input.
    return JSONResponse(error_body("conflict", "the name or id is already taken"), 409)


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse(
        error_body("service_unavailable", "the database is busy or unreachable; retry"),
        503, headers={"Retry-After": "1"},
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return _respond(request, 500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RobustDxError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
