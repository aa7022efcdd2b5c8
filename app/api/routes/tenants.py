from __future__ import annotations

from fastapi import APIRouter, status

from app.api.deps import AdminDep, SessionDep
from app.api.schemas.common import ERRORS
from app.api.schemas.tenants import TenantCreate, TenantCreated
from app.core.tenants import create_tenant

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantCreated,
    responses={**ERRORS, 409: ERRORS[422] | {"description": "Name taken"}},
    summary="Create a tenant and its API key (admin key required)",
)
def post_tenant(body: TenantCreate, session: SessionDep, _: AdminDep) -> TenantCreated:
    tenant, key = create_tenant(session, body.name)
    return TenantCreated(id=tenant.id, name=tenant.name, api_key=key)
