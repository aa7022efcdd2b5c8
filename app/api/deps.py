"""Dependency aliases used by the routes (tests swap them with ``dependency_overrides``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from app.core.db import Database, ModelRow, Tenant, get_database
from app.core.registry import get_model
from app.core.settings import Settings
from app.core.storage import Storage, open_storage
from app.core.tenants import authenticate, check_admin, check_operator


def app_settings(request: Request) -> Settings:
    """The settings the application was created with (``create_app`` stores them).

    Read from the app state rather than through ``dependency_overrides``: with any
    override set, FastAPI re-solves the dependency graph on every request (measured: about
    4 ms of CPU per predict).
    """
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]


def get_db(settings: SettingsDep) -> Database:
    return get_database(settings.resolved_database_url)


DatabaseDep = Annotated[Database, Depends(get_db)]


def get_session(db: DatabaseDep) -> Iterator[Session]:
    with db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_storage(settings: SettingsDep) -> Storage:
    return open_storage(settings)


StorageDep = Annotated[Storage, Depends(get_storage)]


def get_tenant(
    session: SessionDep,
    authorization: Annotated[str | None, Header(description="Bearer <api key>")] = None,
) -> Tenant:
    return authenticate(session, authorization)


TenantDep = Annotated[Tenant, Depends(get_tenant)]


def tenant_id_for(db: Database, authorization: str | None) -> str:
    """The key's tenant, checked in a session of its own (for upload routes, which check
    the key before reading the body and hold no session while it streams)."""
    with db.session() as session:
        return authenticate(session, authorization).id


def require_admin(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(description="Bearer <admin key>")] = None,
) -> None:
    check_admin(authorization, settings.admin_key)


AdminDep = Annotated[None, Depends(require_admin)]


def require_operator(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(description="Bearer <metrics token>")] = None,
) -> None:
    check_operator(authorization, settings.metrics_token)


OperatorDep = Annotated[None, Depends(require_operator)]
def authorized_model(db: Database, authorization: str | None, model_id: str) -> ModelRow:
    """The key's tenant's model, detached, in one session: the hot inference paths call
    this in one thread-pool hop instead of a chain of dependencies (401 first, then 404
    for another tenant's id, as ``TenantDep`` + ``model_or_404`` would)."""
    with db.session() as session:
        tenant = authenticate(session, authorization)
        row = get_model(session, tenant.id, model_id)
        session.expunge(row)
        return row
