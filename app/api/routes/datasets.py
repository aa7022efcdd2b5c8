from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status

from app.api.deps import SessionDep, SettingsDep, StorageDep, TenantDep
from app.api.schemas.common import ERRORS, ErrorResponse
from app.api.schemas.datasets import DatasetFormat, DatasetPage, DatasetPublic
from app.api.services.datasets import dataset_or_404, delete_dataset, import_upload, list_datasets

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=ERRORS)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses={413: {"model": ErrorResponse, "description": "Archive over the limit"}},
    summary="Import a dataset (zip) in one of the supported formats",
)
def post_dataset(
    session: SessionDep, storage: StorageDep, settings: SettingsDep, tenant: TenantDep,
    file: Annotated[UploadFile, File(description="A zip archive")],
    format: Annotated[DatasetFormat, Form(description="Layout of the archive")],
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> DatasetPublic:
    row = import_upload(session, storage, settings, tenant.id, file.file, file.filename,
                        format, name)
    return DatasetPublic.from_row(row)


@router.get("", response_model=DatasetPage, summary="List datasets")
def get_datasets(session: SessionDep, tenant: TenantDep,
                 limit: Annotated[int, Query(ge=1, le=200)] = 50,
                 offset: Annotated[int, Query(ge=0)] = 0) -> DatasetPage:
    rows, total = list_datasets(session, tenant.id, limit, offset)
    return DatasetPage(items=[DatasetPublic.from_row(r) for r in rows], total=total,
                       limit=limit, offset=offset)


@router.get("/{dataset_id}", response_model=DatasetPublic, summary="One dataset")
def get_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> DatasetPublic:
    return DatasetPublic.from_row(dataset_or_404(session, tenant.id, dataset_id))


@router.delete("/{dataset_id}", status_code=204, response_class=Response,
               summary="Delete a dataset")
def remove_dataset(dataset_id: str, session: SessionDep, storage: StorageDep,
                   tenant: TenantDep) -> Response:
    delete_dataset(session, storage, dataset_or_404(session, tenant.id, dataset_id))
    return Response(status_code=204)
