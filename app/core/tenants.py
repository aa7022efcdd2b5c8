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
from models.errors import AuthenticationError, ConflictError, NotFoundError

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


def bearer_token(authorization: str | None, what: str = "api key") -> str:
    """The token of ``Authorization: Bearer <token>``, or 401 for any other shape.

    The scheme is case-insensitive (RFC 9110, section 11.1); ``Basic``, a bare token or an
    empty one are refused rather than read as a key.
    """
    if not authorization:
        raise AuthenticationError(f"missing Authorization header; use 'Bearer <{what}>'")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthenticationError(f"Authorization must be 'Bearer <{what}>'")
    return token


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets. Their SHA-256 digests are compared, so
    neither the content nor the length of ``expected`` shows in the timing."""
    return hmac.compare_digest(hash_key(given).encode(), hash_key(expected).encode())


def authenticate(session: Session, authorization: str | None) -> Tenant:
    """Resolve ``Authorization: Bearer <key>`` to a tenant, or raise 401.

    Keys are looked up by their SHA-256 hash, so no stored key is compared byte by byte.
    """
    key = bearer_token(authorization)
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None:
        raise AuthenticationError("invalid API key")
    tenant = session.get(Tenant, row.tenant_id)
    if tenant is None:
        raise AuthenticationError("invalid API key")
    return tenant


def check_admin(authorization: str | None, admin_key: str) -> None:
    """401 unless ``authorization`` is ``Bearer <admin key>`` (compared in constant time)."""
    key = bearer_token(authorization, "admin key")
    if not same_secret(key, admin_key):
        raise AuthenticationError("this endpoint needs the admin key")


def check_operator(authorization: str | None, metrics_token: str | None) -> None:
    """Allow the operator's views (``/metrics``) only with ``Bearer <metrics token>``.

    Raises:
        AuthenticationError: no credential, a malformed one, or the wrong token.
        NotFoundError: a credential was given but no token is configured: the views are
            off (they count every tenant's jobs and requests, so they are never public).
    """
    token = bearer_token(authorization, "metrics token")
    if not metrics_token:
        raise NotFoundError("metrics are disabled; the operator enables them by setting "
                            "ROBUSTDX_METRICS_TOKEN")
    if not same_secret(token, metrics_token):
        raise AuthenticationError("this endpoint needs the metrics token")


def dev_api_key(settings: Settings) -> str:
    """The development tenant's key, created once and kept in ``data_dir/dev-api-key``."""
    path = settings.data_dir / "dev-api-key"
    if path.exists():
        return path.read_text().strip()
    key = new_api_key()
    write_atomic(path, key.encode())
    os.chmod(path, 0o600)
    return key
