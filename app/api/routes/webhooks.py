"""Webhook endpoints of a tenant and the deliveries made to them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.api.deps import SessionDep, SettingsDep, TenantDep
from app.api.schemas.common import ERRORS
from app.api.schemas.webhooks import (
    DeliveryPage,
    DeliveryPublic,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookPublic,
)
from app.core import webhooks

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=ERRORS)


def _public(row: webhooks.WebhookRow) -> WebhookPublic:
    return WebhookPublic(id=row.id, url=row.url, events=list(row.events),
                         created_at=row.created_at)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated,
             summary="Register an endpoint for job events")
def post_webhook(body: WebhookCreate, response: Response, session: SessionDep,
                 settings: SettingsDep, tenant: TenantDep) -> WebhookCreated:
    row = webhooks.create_webhook(session, settings, tenant.id, body.url, list(body.events))
    response.headers["Location"] = f"/v1/webhooks/{row.id}"
    return WebhookCreated(**_public(row).model_dump(), secret=row.secret)


@router.get("", response_model=WebhookPage, summary="List the tenant's endpoints")
def get_webhooks(session: SessionDep, tenant: TenantDep) -> WebhookPage:
    return WebhookPage(items=[_public(r) for r in webhooks.list_webhooks(session, tenant.id)])


@router.get("/{webhook_id}", response_model=WebhookPublic, summary="One endpoint")
def get_webhook(webhook_id: str, session: SessionDep, tenant: TenantDep) -> WebhookPublic:
    return _public(webhooks.get_webhook(session, tenant.id, webhook_id))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove an endpoint (its pending deliveries are dropped)")
def delete_webhook(webhook_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    session.delete(webhooks.get_webhook(session, tenant.id, webhook_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage,
            summary="Deliveries to an endpoint, newest first, with their answers")
def get_deliveries(webhook_id: str, session: SessionDep, tenant: TenantDep,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50,
                   offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> DeliveryPage:
    hook = webhooks.get_webhook(session, tenant.id, webhook_id)
    rows = webhooks.list_deliveries(session, hook, limit, offset)
    items = [DeliveryPublic.model_validate(r, from_attributes=True) for r in rows]
    return DeliveryPage(items=items, limit=limit, offset=offset)
