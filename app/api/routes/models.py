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
from app.api.deps import SessionDep, StorageDep, TenantDep, tenant_id_for
from app.api.schemas.common import ERRORS, PageDep, responses
from app.api.schemas.models import (
    CARD_EXAMPLE,
    DownloadFormat,
    ModelPage,
    ModelPublic,
    PredictBatchResponse,
    PredictResponse,
)
from app.api.services.inference import InferenceService, Ticket, inference_service
from app.api.services.model_checks import model_checks
from app.api.services.multipart import FileField, read_form
from app.api.services.predictions import (
    ImageLimits,
    SmoothingRequest,
    charge,
    decode_limiter,
    predict_limiter,
    predict_uploads,
)
from app.api.startup import AppState
from app.api.timing import stage
from app.core.db import Database, ModelRow
from app.core.registry import (
    check_name_free,
    check_upload,
    delete_model,
    export_path,
    get_model,
    list_models,
    register_model_file,
    sandbox_limits,
)
from app.core.storage import Storage
from models.errors import (
    ConflictError,
    ImageTooLargeError,
    InvalidInputError,
    PayloadTooLargeError,
)
from models.loading import parse_card
from models.sandbox import CheckedUpload

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERRORS)

_UPLOAD = responses(409, 413, 429, _409="A model of that name exists (names are unique per "
                    "tenant)", _413="The file, a part or its headers over a limit")
_PREDICT: dict[int | str, dict[str, Any]] = {
    200: {"content": {
        "application/json": {},
        "application/fhir+json": {"schema": {"type": "object"},
                                  "description": "format=fhir: a FHIR R4 Bundle"},
        "application/dicom": {"schema": {"type": "string", "format": "binary"},
                              "description": "format=dicom-sr: a DICOM SR"},
        "multipart/related": {"schema": {"type": "string", "format": "binary"},
                              "description": "format=dicom-sr with several files"},
    }},
    **responses(413, 415, 429, 503),
}
_409 = responses(409, _409="Not possible in the model's state")

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


def _register(
    db: Database, storage: Storage, tenant_id: str, path: Path, checked: CheckedUpload
) -> ModelRow:
    with db.session() as session:
        # Checked after the file's own checks (a bad file is 422 whatever its name) and
        # after the insert, whose write lock orders concurrent uploads of one name.
        row = register_model_file(session, storage, tenant_id, path, checked.card,
                                  checked=checked)
        try:
            check_name_free(session, tenant_id, checked.card.name, except_id=row.id)
        except ConflictError:
            storage.remove(storage.model_dir(row.id))
            raise
        return row



@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelPublic,
    responses=_UPLOAD,
    summary="Register a model (multipart: file + card)",
    description="The file is checked without running any of its code, loaded, and given a "
    "dry run at the card's input size in a sandboxed process: outputs that do not match "
    "the card's labels, NaNs, a wrong input size, or no input gradient are refused (422), "
    "and so is a model past its CPU, memory or wall-time limit. The card's `name` is "
    "unique per tenant: a second model of the same name is refused (409); delete the old "
    "one or choose a new name (e.g. with a version: `chest-densenet-v2`). A few uploads "
    "are checked at a time; when too many wait, the upload is refused with 429 and "
    "Retry-After.",
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
    tenant_id = await run_in_threadpool(tenant_id_for, state.db, authorization)
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
        max_part_header_bytes=settings.max_part_header_bytes,
    )
    try:
        upload = form.file_list("file")
        if not upload:
            raise InvalidInputError("the form field 'file' (the model file) is missing")
        if "card" not in form.fields:
            raise InvalidInputError("the form field 'card' (the model card as JSON) is missing")
        card = parse_card(form.fields["card"])
        path = upload[0].path
        assert path is not None
        limits = sandbox_limits(settings)
        # The check (load + dry run of the tenant's code) runs in a sandboxed child, waited
        # for in its own bounded pool, never in the thread pool every other route needs.
        checked = await model_checks(state).run(lambda: check_upload(path, card, limits))
        row = await run_in_threadpool(_register, state.db, storage, tenant_id, path, checked)
    finally:
        await run_in_threadpool(form.cleanup)
    response.headers["Location"] = f"/v1/models/{row.id}"
    return ModelPublic.from_row(row)


@router.get("", response_model=ModelPage, summary="List the tenant's models, newest first")
def get_models(session: SessionDep, tenant: TenantDep, page: PageDep) -> ModelPage:
    rows, total = list_models(session, tenant.id, page.limit, page.offset)
    return ModelPage(
        items=[ModelPublic.from_row(r) for r in rows], total=total, limit=page.limit,
        offset=page.offset,
    )


@router.get("/{model_id}", response_model=ModelPublic, summary="One model")
def get_one_model(row: ModelDep) -> ModelPublic:
    return ModelPublic.from_row(row)


@router.delete(
    "/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_409,
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
        **_409,
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
    responses=_PREDICT,
    summary="Diagnose one image (`file`) or several (`files`)",
    description="Images are PNG, JPEG or DICOM (read from the content), converted to the "
    "card's channels and size. Concurrent requests are micro-batched. With "
    "`defense=smoothing`, the answer is the majority vote over `n` noisy copies "
    "(Gaussian, `sigma` in [0, 1] pixel units) with its certificate (Cohen et al. 2019): "
    "`vote_share` replaces `probability`, and `smoothing.warnings` says when the vote "
    "disagrees with the plain diagnosis. Each tenant's predicts are rate-limited (429 with "
    "Retry-After) and `n` x files is capped (422, max_smoothing_samples).",
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
    format: Annotated[
        Literal["json", "dicom-sr", "fhir"],
        Query(description="`dicom-sr`: a TID 1500 DICOM SR per (DICOM) image; `fhir`: a "
              "FHIR R4 Bundle (DiagnosticReport, one Observation per finding, the Device)"),
    ] = "json",
) -> PredictResponse | PredictBatchResponse | Response:
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
            format,
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
    fmt: str = "json",
) -> PredictResponse | PredictBatchResponse | Response:
    with stage("auth"):
        row = await cached_authorized_model(state.authorized, state.db, authorization,
                                            model_id)
    # An empty bucket is refused before a byte of the body is read.
    predict_limiter(state).require(row.tenant_id)
    settings = state.settings
    limit = settings.max_image_bytes
    # Files go to disk as they arrive (never a request's 64 files held in memory); each is
    # read back when it is decoded, one at a time.
    with stage("read"):
        form = await read_form(
            request,
            files={
                "file": FileField(max_bytes=limit, to_disk=True, too_large=_image_too_large),
                "files": FileField(
                    max_bytes=limit,
                    max_count=settings.max_files_per_request,
                    to_disk=True,
                    too_large=_image_too_large,
                ),
            },
            max_part_header_bytes=settings.max_part_header_bytes,
            new_path=state.storage.new_upload_path,
        )
    try:
        single, several = form.file_list("file"), form.file_list("files")
        if single and several:
            raise InvalidInputError("send one 'file' or several 'files', not both")
        if not single and not several:
            raise InvalidInputError("no image: send the form field 'file' (or 'files')")
        charge(state, row.tenant_id, len(single or several), smoothing)
        with stage("predict"):  # decode + queue wait + forward pass
            answer = await predict_uploads(
                service,
                state.storage,
                row,
                single or several,
                single=bool(single),
                limits=ImageLimits(settings.max_image_bytes, settings.max_image_pixels),
                smoothing=smoothing,
                chunk=settings.smoothing_chunk_size,
                ticket=ticket,
                disconnected=request.is_disconnected,
                decoders=decode_limiter(state, row.tenant_id),
            )
        if fmt == "dicom-sr":
            from app.api.services.dicom_results import sr_response

            return await run_in_threadpool(sr_response, row, single or several, answer)
        if fmt == "fhir":
            from app.api.services.fhir_results import fhir_response

            return await run_in_threadpool(fhir_response, row, single or several, answer)
        return answer
    finally:
        await run_in_threadpool(form.cleanup)
