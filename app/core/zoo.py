"""Registering the demo zoo models for the development tenant.

Each zoo model (:func:`models.zoo.list_zoo`: safetensors weights for an allow-listed
architecture and a card) goes through the same safe registration as an upload. It is
idempotent by sha256: a model whose weights the tenant already has is not registered
again, so restarting the service does not duplicate the zoo.
"""

from __future__ import annotations

import logging

from app.core.db import Database
from app.core.registry import find_by_sha256, register_model_file
from app.core.storage import Storage
from models.errors import RobustDxError
from models.loading import sha256_file

logger = logging.getLogger(__name__)


def register_zoo(db: Database, storage: Storage, tenant_id: str) -> list[str]:
    """Register every zoo model for ``tenant_id`` once; returns their model ids in zoo order.

    A zoo model that fails its checks is logged and skipped; the others are registered.
    """
    from models.zoo import list_zoo

    ids: list[str] = []
    for entry in list_zoo():
        digest = sha256_file(entry.weights_path)
        with db.session() as session:
            existing = find_by_sha256(session, tenant_id, digest)
            if existing is not None:
                ids.append(existing.id)
                continue
            try:
                row = register_model_file(
                    session,
                    storage,
                    tenant_id,
                    entry.weights_path,
                    entry.card,
                    lineage={"source": "zoo", "zoo_name": entry.name},
                    keep_source=True,
                )
            except RobustDxError as exc:
                logger.error("zoo model %s was not registered: %s", entry.name, exc.message)
                continue
            ids.append(row.id)
            logger.info("registered zoo model %s as %s", entry.name, row.id)
    return ids
