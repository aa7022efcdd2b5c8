"""``/v1/models``: register, list, get, delete, download, and predict.

Uploads are read by :mod:`app.api.services.multipart` (limits enforced while streaming), so
these routes declare their multipart bodies in ``openapi_extra`` rather than as ``Form``
parameters. Loading, dry runs and database work run in the thread pool; forward passes
run on the inference lanes (:mod:`app.api.services.inference`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from app.api.auth_cache import cached_authorized_model
from app.api.deps import SessionDep, StorageDep, TenantDep, authorized_model
from app.api.schemas.common import ERRORS, ErrorResponse
from app.api.schemas.models import (
    CARD_EXAMPLE,
    DownloadFormat,
    ModelPage,
    ModelPublic,
    PredictBatchResponse,
    PredictResponse,
)
from app.api.services.inference import InferenceService, Ticket, inference_service
from app.api.services.multipart import FileField, read_form
from app.api.services.predictions import ImageLimits, SmoothingRequest, predict_uploads
from app.api.startup import AppState
from app.api.timing import stage
from app.core.db import Database, ModelRow
from app.core.registry import (
    delete_model,
    export_path,
    get_model,
    list_models,
    register_model_file,
)
from app.core.storage import Storage
from app.core.tenants import authenticate
from models.card import ModelCard
from models.device import resolve_device
from models.errors import ImageTooLargeError, InvalidInputError, PayloadTooLargeError
from models.loading import parse_card

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERRORS)

_413 = {"model": ErrorResponse, "description": "Upload over its size limit"}
_415 = {"model": ErrorResponse, "description": "Not a PNG, JPEG or DICOM image"}
_409 = {"model": ErrorResponse, "description": "Not possible in the model's state"}

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "card"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "torch.export .pt2, TorchScript, ONNX, or "
                            "safetensors/.pth weights for card.architecture. Pickles are "
                            "refused.",
                        },
                        "card": {
                            "type": "string",
                            "description": "The model card as JSON (see ModelCard).",
                            "example": json.dumps(CARD_EXAMPLE),
                        },
                    },
                }
            }
        },
    }
}

_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "One PNG, JPEG or DICOM image; the answer is "
                            "PredictResponse.",
                        },
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Several images (up to max_files_per_request); "
                            "the answer is PredictBatchResponse, one result per file in "
                            "upload order.",
                        },
                    },
                }
            }
        },
    }
}


def _model_too_large(name: str | None, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the model file is over the limit of {limit} bytes (max_model_bytes)",
        {"filename": name, "max_bytes": limit},
    )


def _image_too_large(name: str | None, limit: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{name or 'image'}: over the image limit of {limit} bytes (max_image_bytes)",
        {"filename": name, "max_bytes": limit},
    )


def model_or_404(model_id: str, session: SessionDep, tenant: TenantDep) -> ModelRow:
    return get_model(session, tenant.id, model_id)


ModelDep = Annotated[ModelRow, Depends(model_or_404)]


def _tenant_id(db: Database, authorization: str | None) -> str:
    with db.session() as session:
        return authenticate(session, authorization).id


def _register(
    db: Database, storage: Storage, tenant_id: str, path: Path, card: ModelCard, device: str
) -> ModelRow:
    with db.session() as session:
        return register_model_file(
            session, storage, tenant_id, path, card, device=resolve_device(device)
        )


_authorized_model = authorized_model


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelPublic,
    responses={413: _413},
    summary="Register a model (multipart: file + card)",
    description="The file is checked without running any of its code, loaded, and given a "
    "dry run at the card's input size: outputs that do not match the card's labels, "
    "NaNs, a wrong input size, or no input gradient are refused (422).",
    openapi_extra=_UPLOAD_BODY,
)
async def post_model(
    request: Request,
    response: Response,
    authorization: Annotated[str | None, Header(description="Bearer <api key>")] = None,
) -> ModelPublic:
    # No SessionDep here: its session would hold a database connection (and a read
    # transaction) open for the whole upload, which may take minutes. The key is checked
    # in a short session before a byte of the body is read; the model is registered in
    # another once the file is on disk.
    state: AppState = request.app.state.robustdx
    settings, storage = state.settings, state.storage
    tenant_id = await run_in_threadpool(_tenant_id, state.db, authorization)
    form = await read_form(
        request,
        files={
            "file": FileField(
                max_bytes=settings.max_model_bytes,
                to_disk=True,
                too_large=_model_too_large,
            )
        },
        fields=("card",),
        new_path=storage.new_upload_path,
        max_field_bytes=256 * 1024,
    )
    try:
        upload = form.file_list("file")
        if not upload:
            raise InvalidInputError("the form field 'file' (the model file) is missing")
        if "card" not in form.fields:
            raise InvalidInputError("the form field 'card' (the model card as JSON) is missing")
        card = parse_card(form.fields["card"])
        assert upload[0].path is not None
        row = await run_in_threadpool(
            _register, state.db, storage, tenant_id, upload[0].path, card, settings.device
        )
    finally:
        form.cleanup()
    response.headers["Location"] = f"/v1/models/{row.id}"
    return ModelPublic.from_row(row)


@router.get("", response_model=ModelPage, summary="List the tenant's models, newest first")
def get_models(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ModelPage:
    rows, total = list_models(session, tenant.id, limit, offset)
    return ModelPage(
        items=[ModelPublic.from_row(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{model_id}", response_model=ModelPublic, summary="One model")
def get_one_model(row: ModelDep) -> ModelPublic:
    return ModelPublic.from_row(row)


@router.delete(
    "/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={409: _409},
    summary="Delete a model and its files",
)
def delete_one_model(
    row: ModelDep, session: SessionDep, storage: StorageDep, request: Request
) -> Response:
    model_id = row.id
    delete_model(session, storage, row)
    request.app.state.robustdx.authorized.forget_model(model_id)
    service = request.app.state.robustdx.extras.get("inference")
    if isinstance(service, InferenceService):
        service.evict(model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{model_id}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The model file"},
        409: _409,
    },
    summary="Download the model (original file, safetensors weights, or TorchScript)",
    description="`safetensors`: `model.net.state_dict()` (architecture models only). "
    "`torchscript`: the network scripted, or traced at the card's size. Both take "
    "normalized images: re-upload them with the same card.",
)
def download_model(
    row: ModelDep,
    storage: StorageDep,
    format: DownloadFormat = "original",
) -> FileResponse:
    path, filename = export_path(storage, row, format)
    return FileResponse(path, media_type="application/octet-stream", filename=filename)


@router.post(
    "/{model_id}/predict",
    response_model=PredictResponse | PredictBatchResponse,
    responses={413: _413, 415: _415},
    summary="Diagnose one image (`file`) or several (`files`)",
    description="Images are PNG, JPEG or DICOM (read from the content), converted to the "
    "card's channels and size. Concurrent requests are micro-batched. With "
    "`defense=smoothing`, the answer is the majority vote over `n` noisy copies "
    "(Gaussian, `sigma` in [0, 1] pixel units) with its certificate (Cohen et al. 2019): "
    "`probability` is then the vote share.",
    openapi_extra=_PREDICT_BODY,
)
async def predict(
    request: Request,
    model_id: str,
    authorization: Annotated[str | None, Header(description="Bearer <api key>")] = None,
    defense: Annotated[
        Literal["smoothing"] | None, Query(description="`smoothing`: randomized smoothing")
    ] = None,
    sigma: Annotated[float, Query(gt=0.0, le=1.0, description="Noise std, pixel units")] = 0.12,
    n: Annotated[int, Query(ge=1, le=10_000, description="Noisy copies counted")] = 100,
    alpha: Annotated[float, Query(gt=0.0, lt=0.5, description="Certificate failure rate")] = 0.001,
    seed: Annotated[int | None, Query(ge=0, description="Seed of the noise")] = None,
) -> PredictResponse | PredictBatchResponse:
    # The hot path takes no sub-dependencies: the key check and the model look-up run in
    # one thread-pool hop. ``TenantDep`` + ``model_or_404`` do the same checks (401, then
    # 404 for another tenant's id) through a chain of synchronous dependencies, each a
    # thread-pool round trip, and FastAPI re-analyses every sub-dependency on every request
    # while any dependency override is set (milliseconds of CPU per request).
    state: AppState = request.app.state.robustdx
    service = inference_service(state)
    # Announced before anything else, so a forming batch waits for this request.
    ticket = service.expect(model_id)
    try:
        return await _predict(
            request,
            state,
            service,
            ticket,
            model_id,
            authorization,
            SmoothingRequest(sigma, n, alpha, seed) if defense == "smoothing" else None,
        )
    finally:
        if ticket is not None:
            ticket.release()


async def _predict(
    request: Request,
    state: AppState,
    service: InferenceService,
    ticket: Ticket | None,
    model_id: str,
    authorization: str | None,
    smoothing: SmoothingRequest | None,
) -> PredictResponse | PredictBatchResponse:
    with stage("auth"):
        row = await cached_authorized_model(state.authorized, state.db, authorization, model_id)
    settings = state.settings
    limit = settings.max_image_bytes
    with stage("read"):
        form = await read_form(
            request,
            files={
                "file": FileField(max_bytes=limit, too_large=_image_too_large),
                "files": FileField(
                    max_bytes=limit,
                    max_count=settings.max_files_per_request,
                    too_large=_image_too_large,
                ),
            },
        )
    single, several = form.file_list("file"), form.file_list("files")
    if single and several:
        raise InvalidInputError("send one 'file' or several 'files', not both")
    if not single and not several:
        raise InvalidInputError("no image: send the form field 'file' (or 'files')")
    with stage("predict"):  # decode + queue wait + forward pass
        return await predict_uploads(
            service,
            state.storage,
            row,
            single or several,
            single=bool(single),
            limits=ImageLimits(settings.max_image_bytes, settings.max_image_pixels),
            smoothing=smoothing,
            smoothing_batch=max(settings.batch_max_size, 128),
            ticket=ticket,
        )
