"""The Open Inference Protocol v2 (KServe / Triton HTTP): health, server and model
metadata, model readiness, and inference through the same tenants (Bearer keys) and the
same micro-batching lanes as ``/v1/models/{id}/predict``.

Errors under ``/v2`` take the protocol's shape, ``{"error": "<message>"}`` (see
:mod:`app.api.errors`), which is what Triton clients parse.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.auth_cache import cached_authorized_model
from app.api.deps import authorized_model
from app.api.schemas.oip import ModelMetadata, ServerMetadata
from app.api.services.inference import inference_service
from app.api.services.oip import (
    VERSION,
    ParsedInfer,
    encode_infer,
    model_metadata,
    parse_infer,
)
from app.api.services.predictions import model_loader
from app.api.startup import AppState
from app.api.timing import stage
from app.core.db import ModelRow
from app.core.registry import model_path, row_card
from models.errors import InvalidInputError, NotFoundError, PayloadTooLargeError

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

Authorization = Annotated[str | None, Header(description="Bearer <api key>")]
_ERROR = {"description": 'Protocol error body: `{"error": "<message>"}`'}
_RESPONSES: dict[int | str, dict[str, str]] = {401: _ERROR, 404: _ERROR}
_INLINE_DECODE_BYTES = 1 << 20


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.robustdx
    return state


@router.get("", response_model=ServerMetadata, summary="Server metadata")
def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="robustdx", version="0.1.0", extensions=["binary_tensor_data"])


@router.get("/health/live", summary="The server is live")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="The server can serve (database and store usable)",
            responses={503: _ERROR})
def ready(request: Request) -> JSONResponse:
    state = _state(request)
    try:
        state.db.ping()
        state.storage.ping()
    except Exception:  # readiness reports every failure alike, without internals
        return JSONResponse({"error": "not ready"}, status_code=503)
    return JSONResponse({"ready": True})


def _model(request: Request, authorization: str | None, model_id: str,
           version: str | None) -> ModelRow:
    row = authorized_model(_state(request).db, authorization, model_id)  # 401 first
    if version is not None and version != VERSION:
        raise NotFoundError(f"model {model_id!r} has no version {version!r}")
    return row


@router.get("/models/{model_id}", response_model=ModelMetadata, responses=_RESPONSES,
            summary="Model metadata: input and output tensors")
@router.get("/models/{model_id}/versions/{version}", response_model=ModelMetadata,
            responses=_RESPONSES, include_in_schema=False)
def get_model_metadata(request: Request, model_id: str, authorization: Authorization = None,
                       version: str | None = None) -> ModelMetadata:
    return model_metadata(_model(request, authorization, model_id, version))


@router.get("/models/{model_id}/ready", responses=_RESPONSES,
            summary="The model is registered and its file is in the store")
@router.get("/models/{model_id}/versions/{version}/ready", responses=_RESPONSES,
            include_in_schema=False)
def get_model_ready(request: Request, model_id: str, authorization: Authorization = None,
                    version: str | None = None) -> JSONResponse:
    row = _model(request, authorization, model_id, version)
    if not model_path(_state(request).storage, row).exists():
        return JSONResponse({"error": f"model {model_id!r} is not ready"}, status_code=400)
    return JSONResponse({"name": row.id, "ready": True})


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the request is larger than the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the request is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _header_length(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit():
        raise InvalidInputError("Inference-Header-Content-Length must be a byte count")
    return int(value)


@router.post("/models/{model_id}/infer", responses={**_RESPONSES, 400: _ERROR, 413: _ERROR},
             summary="Inference: image tensor in, probabilities out (JSON or binary tensors)")
@router.post("/models/{model_id}/versions/{version}/infer", include_in_schema=False)
async def infer(
    request: Request,
    model_id: str,
    authorization: Authorization = None,
    inference_header_content_length: Annotated[str | None, Header()] = None,
    version: str | None = None,
) -> Response:
    state = _state(request)
    service = inference_service(state)
    ticket = service.expect(model_id)  # first, so a forming batch waits for this request
    try:
        with stage("auth"):
            row = await cached_authorized_model(state.authorized, state.db, authorization,
                                                model_id)
            if version is not None and version != VERSION:
                raise NotFoundError(f"model {model_id!r} has no version {version!r}")
        settings = state.settings
        with stage("read"):
            body = await _read_body(request, settings.oip_max_request_bytes)
        card = row_card(row)
        header_length = _header_length(inference_header_content_length)

        def decode() -> ParsedInfer:
            with stage("decode"):
                return parse_infer(body, header_length, card, settings.max_files_per_request)

        # A small binary tensor parses in tens of microseconds: cheaper on the event loop
        # than a thread-pool hop (which waits for a thread and the GIL under load). JSON
        # tensors and large bodies parse in the pool, off the loop.
        small = header_length is not None and len(body) <= _INLINE_DECODE_BYTES
        parsed = decode() if small else await run_in_threadpool(decode)
        loader = model_loader(model_path(state.storage, row), card, dict(row.info),
                              service.device)
        images = parsed.images
        with stage("infer"):  # queue wait + forward pass on the model's lane
            rows = await service.predict(row.id, loader, len(images), lambda: images, ticket)
        with stage("encode"):
            content, headers = encode_infer(row.id, parsed.request_id, rows,
                                            parsed.binary_output)
    finally:
        if ticket is not None:
            ticket.release()
    return Response(content, headers=headers)
