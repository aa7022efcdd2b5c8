"""Per-process resources of a worker: settings, database, storage, device."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from app.core.db import Database, ModelRow, get_database
from app.core.settings import Settings, get_settings
from app.core.storage import Storage, open_storage
from models.device import resolve_device
from models.errors import NotFoundError


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    db: Database
    storage: Storage
    device: torch.device


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = get_settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    return Runtime(
        settings=settings,
        db=get_database(settings.resolved_database_url),
        storage=open_storage(settings),
        device=resolve_device(settings.device),
    )


def model_row(rt: Runtime, model_id: str) -> ModelRow:
    """The registered model a job names, detached from its session."""
    with rt.db.session() as session:
        row = session.get(ModelRow, model_id)
        if row is None:
            raise NotFoundError(f"model {model_id} no longer exists")
        session.expunge(row)
        return row
