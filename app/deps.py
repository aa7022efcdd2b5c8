"""Dependency aliases used by the routes (tests swap them with ``dependency_overrides``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from app.db import Database, Tenant, get_database
from app.services.tenants import authenticate, check_admin
from app.settings import Settings, get_settings
from app.storage import Storage

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_db(settings: SettingsDep) -> Database:
    return get_database(settings.resolved_database_url)


DatabaseDep = Annotated[Database, Depends(get_db)]


def get_session(db: DatabaseDep) -> Iterator[Session]:
    with db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_storage(settings: SettingsDep) -> Storage:
    return Storage(settings.data_dir)


StorageDep = Annotated[Storage, Depends(get_storage)]


def get_tenant(
    session: SessionDep,
    authorization: Annotated[str | None, Header(description="Bearer <api key>")] = None,
) -> Tenant:
    return authenticate(session, authorization)


TenantDep = Annotated[Tenant, Depends(get_tenant)]


def require_admin(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(description="Bearer <admin key>")] = None,
) -> None:
    check_admin(authorization, settings.admin_key)


AdminDep = Annotated[None, Depends(require_admin)]
