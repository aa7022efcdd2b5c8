"""``/v1/datasets``: import (a streamed multipart upload), list, get, delete.

The upload is read by :mod:`app.api.services.multipart`, as model uploads are: the key is
checked before a byte of the body is read, the archive is refused as soon as it passes
``max_dataset_bytes``, and no session is held while it streams or is imported.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from app.api.deps import SessionDep, StorageDep, TenantDep, tenant_id_for
from app.api.schemas.common import ERRORS, PageDep, responses
from app.api.schemas.datasets import DatasetPage, DatasetPublic
from app.api.services.datasets import (
    dataset_or_404,
    delete_dataset,
    import_archive,
    list_datasets,
    parse_options,
)
from app.api.services.multipart import FileField, read_form
from app.api.startup import AppState
from app.core.catalogue import DATASET_FORMATS
from models.errors import InvalidInputError, PayloadTooLargeError

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=ERRORS)

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "format"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "The zip archive (a .npz for medmnist-npz)."},
                        "format": {"type": "string", "enum": list(DATASET_FORMATS),
                                   "description": "Layout of the archive."},
                        "name": {"type": "string", "minLength": 1, "maxLength": 200,
                                 "description": "Defaults to the file's name."},
                        "labels": {"type": "string",
                                   "description": "Label names in order, as a JSON list or "
                                   "comma-separated: required for a MedMNIST npz, optional "
                                   "elsewhere (fixes the order; other labels are refused)."},
                        "on_bad_files": {"type": "string", "enum": ["refuse", "skip"],
                                         "default": "refuse",
                                         "description": "refuse: a file that cannot be read "
                                         "refuses the import, listing every such file; skip: "
                                         "import the rest and list the skipped ones."},
                    },
                }
            }
        },
    }
}


def _archive_too_large(name: str | None, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the dataset archive is over the limit of {limit} bytes (max_dataset_bytes)",
        {"max_bytes": limit},
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses=responses(413, _413="The archive, a part or its headers over a limit"),
    summary="Import a dataset (multipart: file + format [+ name, labels, on_bad_files])",
    description="Every image is decoded as predict would; an unsafe or malformed archive "
    "(zip slip, links, bombs, unreadable images, CSVs naming missing files) is refused "
    "with 422 listing what is wrong, and nothing is stored.",
    openapi_extra=_UPLOAD_BODY,
)
async def post_dataset(
    request: Request,
    response: Response,
    authorization: Annotated[str | None, Header(description="Bearer <api key>")] = None,
) -> DatasetPublic:
    state: AppState = request.app.state.robustdx
    settings, storage = state.settings, state.storage
    tenant_id = await run_in_threadpool(tenant_id_for, state.db, authorization)
    form = await read_form(
        request,
        files={"file": FileField(max_bytes=settings.max_dataset_bytes, to_disk=True,
                                 too_large=_archive_too_large)},
        fields=("format", "name", "labels", "on_bad_files"),
        new_path=storage.new_upload_path,
        max_field_bytes=64 * 1024,
        max_part_header_bytes=settings.max_part_header_bytes,
    )
    try:
        upload = form.file_list("file")
        if not upload or upload[0].path is None:
            raise InvalidInputError("the form field 'file' (the archive) is missing",
                                    {"field": "file"})
        options = parse_options(form.fields, upload[0].filename)
        row = await run_in_threadpool(import_archive, state.db, storage, settings, tenant_id,
                                      upload[0].path, options)
    finally:
        form.cleanup()
    response.headers["Location"] = f"/v1/datasets/{row.id}"
    return DatasetPublic.from_row(row)


@router.get("", response_model=DatasetPage, summary="List datasets, newest first")
def get_datasets(session: SessionDep, tenant: TenantDep, page: PageDep) -> DatasetPage:
    rows, total = list_datasets(session, tenant.id, page.limit, page.offset)
    return DatasetPage(items=[DatasetPublic.from_row(r) for r in rows], total=total,
                       limit=page.limit, offset=page.offset)


@router.get("/{dataset_id}", response_model=DatasetPublic, summary="One dataset")
def get_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> DatasetPublic:
    return DatasetPublic.from_row(dataset_or_404(session, tenant.id, dataset_id))


@router.delete("/{dataset_id}", status_code=204, response_class=Response,
               responses=responses(409, _409="A queued or running job reads the dataset"),
               summary="Delete a dataset (refused while a queued or running job reads it)")
def remove_dataset(dataset_id: str, session: SessionDep, storage: StorageDep,
                   tenant: TenantDep) -> Response:
    delete_dataset(session, storage, dataset_or_404(session, tenant.id, dataset_id))
    return Response(status_code=204)
