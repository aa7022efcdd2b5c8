"""Registering the demo zoo models for the development tenant (filled in with the zoo)."""

from __future__ import annotations

from app.db import Database
from app.storage import Storage


def register_zoo(db: Database, storage: Storage, tenant_id: str) -> list[str]:
    return []
