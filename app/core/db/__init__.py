"""Database access: the ORM tables and the engine/session factory.

Used by the API and, for job state, by the workers (the database is the source of truth).
Nothing here imports FastAPI.
"""

from app.core.db.migrate import open_database
from app.core.db.session import Database, get_database
from app.core.db.tables import (
    ApiKey,
    Base,
    DatasetRow,
    DispatcherLease,
    JobRow,
    ModelRow,
    ShardRow,
    Tenant,
)

__all__ = [
    "ApiKey",
    "Base",
    "Database",
    "DatasetRow",
    "DispatcherLease",
    "JobRow",
    "ModelRow",
    "ShardRow",
    "Tenant",
    "get_database",
    "open_database",
]
