"""What the API process does when it starts and stops."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.api.auth_cache import AuthorizedModels
from app.core.db import Database, get_database
from app.core.dispatcher import Dispatcher
from app.core.settings import Settings
from app.core.storage import S3Storage, Storage, open_storage
from app.core.tenants import dev_api_key, ensure_tenant

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: Settings
    db: Database
    storage: Storage
    dispatcher: Dispatcher | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    authorized: AuthorizedModels = field(default_factory=lambda: AuthorizedModels(0.0))


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def startup(settings: Settings) -> AppState:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = get_database(settings.resolved_database_url)
    storage = open_storage(settings)
    if settings.s3_create_bucket and isinstance(storage, S3Storage):
        storage.ensure_bucket()
    state = AppState(settings=settings, db=db, storage=storage,
                     authorized=AuthorizedModels(settings.auth_cache_seconds))
    if settings.environment == "development":
        # Several API processes (ROBUSTDX_API_WORKERS) start at once: seed under a lock.
        with _file_lock(settings.data_dir / ".startup.lock"):
            key = dev_api_key(settings)
            with db.session() as session:
                tenant = ensure_tenant(session, settings.dev_tenant, key)
                tenant_id = tenant.id
            if settings.register_zoo:
                from app.core.zoo import register_zoo

                try:
                    register_zoo(db, storage, tenant_id)
                except Exception:
                    logger.exception("could not register the demo zoo")
    if settings.run_dispatcher:
        state.dispatcher = Dispatcher(
            db, settings.resolved_broker_url, settings.stale_after_seconds
        )
        state.dispatcher.start()
    return state


def shutdown(state: AppState) -> None:
    if state.dispatcher is not None:
        state.dispatcher.stop()
    service = state.extras.get("inference")
    if service is not None:
        service.close()
