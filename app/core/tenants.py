"""Tenants and their API keys. Keys are shown once and stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import ApiKey, Tenant
from app.core.settings import Settings
from app.core.storage import write_atomic
from models.errors import AuthenticationError, ConflictError

KEY_PREFIX = "rdx_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_tenant(session: Session, name: str, api_key: str | None = None) -> tuple[Tenant, str]:
    """Create a tenant and its first key; returns the plaintext key (never stored)."""
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise ConflictError(f"tenant {name!r} already exists")
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    key = api_key or new_api_key()
    session.add(ApiKey(tenant_id=tenant.id, key_hash=hash_key(key), prefix=key[:8]))
    session.flush()
    return tenant, key


def ensure_tenant(session: Session, name: str, api_key: str) -> Tenant:
    """Idempotently create a tenant with a known key (the development tenant)."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant, _ = create_tenant(session, name, api_key)
        return tenant
    digest = hash_key(api_key)
    if session.scalar(select(ApiKey).where(ApiKey.key_hash == digest)) is None:
        session.add(ApiKey(tenant_id=tenant.id, key_hash=digest, prefix=api_key[:8]))
    return tenant


def authenticate(session: Session, authorization: str | None) -> Tenant:
    """Resolve ``Authorization: Bearer <key>`` to a tenant, or raise 401."""
    if not authorization:
        raise AuthenticationError("missing Authorization header; use 'Bearer <api key>'")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationError("Authorization must be 'Bearer <api key>'")
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key.strip())))
    if row is None:
        raise AuthenticationError("invalid API key")
    tenant = session.get(Tenant, row.tenant_id)
    if tenant is None:
        raise AuthenticationError("invalid API key")
    return tenant


def check_admin(authorization: str | None, admin_key: str) -> None:
    _, _, key = (authorization or "").partition(" ")
    if not key or not hmac.compare_digest(key.strip().encode(), admin_key.encode()):
        raise AuthenticationError("this endpoint needs the admin key")


def dev_api_key(settings: Settings) -> str:
    """The development tenant's key, created once and kept in ``data_dir/dev-api-key``."""
    path = settings.data_dir / "dev-api-key"
    if path.exists():
        return path.read_text().strip()
    key = new_api_key()
    write_atomic(path, key.encode())
    os.chmod(path, 0o600)
    return key
