"""The model registry: storing checked uploads, tenant-scoped look-ups, downloads.

The DB-free work (hash, safe load, dry run) is :func:`models.loading.check_model_file`, run
in a sandboxed child process (:mod:`models.sandbox`);
this module stores what it accepted under ``Storage.model_dir(id)`` (``model{ext}`` and
``card.json`` with the sha256 filled in) and records a :class:`ModelRow`. Workers reuse
:func:`register_model_file` (hardened models of defense jobs) and
:func:`load_registered_model`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.db import JobRow, ModelRow
from app.core.db.tables import new_id
from app.core.settings import Settings
from app.core.storage import Storage, write_atomic
from models.card import ModelCard
from models.errors import ConflictError, InvalidParametersError, NotFoundError
from models.loading import EXTENSIONS, load_model
from models.sandbox import CheckedUpload, SandboxLimits, check_model_file_isolated
from models.wrapper import DiagnosticModel

logger = logging.getLogger(__name__)

CARD_FILE = "card.json"
EXPORTS = {"safetensors": ".safetensors", "torchscript": ".pt"}
_ACTIVE = ("queued", "running")
REMOTE = "remote"  # the format of models behind an inference endpoint (app.core.remote)


def model_path(storage: Storage, row: ModelRow) -> Path:
    """The model's file. Remote models have none (409: they are audited, not served)."""
    if row.format == REMOTE:
        raise ConflictError(
            f"model {row.id!r} is a remote model: it has no file here and is not served by "
            "this server (query its own endpoint)", {"format": REMOTE})
    return storage.model_dir(row.id) / f"model{EXTENSIONS[row.format]}"


def sandbox_limits(settings: Settings) -> SandboxLimits:
    """The upload check's limits from the settings."""
    return SandboxLimits(wall_s=settings.model_check_wall_seconds,
                         cpu_s=settings.model_check_cpu_seconds,
                         memory_bytes=settings.model_check_memory_bytes,
                         queue_s=settings.model_check_queue_seconds)


def check_upload(path: Path, card: ModelCard, limits: SandboxLimits | None) -> CheckedUpload:
    """The one check every model file goes through before it is stored: hash, safe load and
    dry run (:func:`models.loading.check_model_file`) in a child process of a small bounded
    pool (:mod:`models.sandbox`), killed past its CPU, memory or wall-time limit."""
    return check_model_file_isolated(path, card, limits=limits)


def register_model_file(
    session: Session,
    storage: Storage,
    tenant_id: str,
    path: Path,
    card: ModelCard,
    *,
    lineage: Mapping[str, Any] | None = None,
    keep_source: bool = False,
    limits: SandboxLimits | None = None,
    checked: CheckedUpload | None = None,
) -> ModelRow:
    """Check a model file (safe load + dry run, in a sandboxed child process under
    ``limits``: see :mod:`models.sandbox`) and register it for ``tenant_id``.

    ``checked``: the result of :func:`check_upload` when the caller ran it already (uploads
    run it outside the request thread pool).

    The file is moved into the store (copied with ``keep_source=True``). Nothing is left
    in the store when the file is refused. The row is flushed, not committed: the caller's
    transaction decides.

    Raises:
        UnsafeModelFileError, InvalidModelFileError, InvalidCardError: see
            :func:`models.loading.load_model`.
    """
    if checked is None:
        checked = check_upload(path, card, limits)
    model_id = new_id()
    folder = storage.model_dir(model_id)
    try:
        dest = folder / f"model{checked.extension}"
        if keep_source:
            shutil.copyfile(path, dest)
        else:
            shutil.move(path, dest)
        write_atomic(folder / CARD_FILE, checked.card.model_dump_json(indent=2).encode())
        storage.publish(folder)
        row = ModelRow(
            id=model_id,
            tenant_id=tenant_id,
            name=checked.card.name,
            format=checked.format,
            sha256=checked.sha256,
            size_bytes=checked.size_bytes,
            card=checked.card.model_dump(mode="json"),
            info=checked.info,
            lineage=dict(lineage) if lineage is not None else None,
        )
        session.add(row)
        session.flush()
    except BaseException:
        storage.remove(folder)
        raise
    logger.info(
        "registered model %s (%s, %s) for tenant %s",
        model_id,
        checked.format,
        checked.sha256[:12],
        tenant_id,
    )
    return row


def get_model(session: Session, tenant_id: str, model_id: str) -> ModelRow:
    """The tenant's model; another tenant's id is as unknown as a made-up one (404)."""
    row = session.get(ModelRow, model_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFoundError(f"model {model_id!r} not found", {"model_id": model_id})
    return row


def check_name_free(
    session: Session, tenant_id: str, name: str, except_id: str | None = None
) -> None:
    """409 when the tenant already has a model called ``name`` (other than ``except_id``).

    Uploaded models' names are unique per tenant, so a name picks one model (the CLI and
    the report name models by it).
    """
    query = select(ModelRow.id).where(ModelRow.tenant_id == tenant_id, ModelRow.name == name)
    if except_id is not None:
        query = query.where(ModelRow.id != except_id)
    existing = session.scalar(query.limit(1))
    if existing is not None:
        raise ConflictError(
            f"a model named {name!r} exists (id {existing}); names are unique per tenant: "
            "delete it or choose another name",
            {"name": name, "model_id": existing},
        )


def unused_name(session: Session, tenant_id: str, name: str, limit: int = 200) -> str:
    """``name``, or ``name #2``, ``name #3``... whichever the tenant has not used, at most
    ``limit`` characters: for models the service names itself (a defense job's hardened
    model), which must not collide with an uploaded one."""
    taken = set(session.scalars(
        select(ModelRow.name).where(ModelRow.tenant_id == tenant_id,
                                    ModelRow.name.startswith(name[: limit - 8]))
    ))
    candidate, n = name[:limit], 1
    while candidate in taken:
        n += 1
        suffix = f" #{n}"
        candidate = name[: limit - len(suffix)] + suffix
    return candidate


def find_by_sha256(session: Session, tenant_id: str, sha256: str) -> ModelRow | None:
    return session.scalar(
        select(ModelRow)
        .where(ModelRow.tenant_id == tenant_id, ModelRow.sha256 == sha256)
        .order_by(ModelRow.created_at)
        .limit(1)
    )


def list_models(
    session: Session, tenant_id: str, limit: int, offset: int
) -> tuple[list[ModelRow], int]:
    total = session.scalar(
        select(func.count()).select_from(ModelRow).where(ModelRow.tenant_id == tenant_id)
    )
    rows = session.scalars(
        select(ModelRow)
        .where(ModelRow.tenant_id == tenant_id)
        .order_by(ModelRow.created_at.desc(), ModelRow.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), int(total or 0)


def delete_model(session: Session, storage: Storage, row: ModelRow) -> None:
    """Delete the row and its files; refused (409) while a queued or running job uses it."""
    jobs = session.scalars(
        select(JobRow).where(JobRow.tenant_id == row.tenant_id, JobRow.status.in_(_ACTIVE))
    ).all()
    users = [j.id for j in jobs if (j.request or {}).get("model_id") == row.id]
    if users:
        raise ConflictError(
            f"model {row.id!r} is used by unfinished job(s) {users[:5]}; cancel them first",
            {"jobs": users},
        )
    session.delete(row)
    session.flush()
    storage.remove(storage.path("models", row.id))


def row_card(row: ModelRow) -> ModelCard:
    return ModelCard.model_validate(row.card)


def load_registered_model(
    storage: Storage, row: ModelRow, device: torch.device | str | None = None
) -> DiagnosticModel:
    """The registered model on ``device``, in eval mode (the registration dry run is trusted).

    A remote model comes back as a score-only model that queries its endpoint."""
    if row.format == REMOTE:
        from app.core.remote import load_remote_model

        return load_remote_model(row)
    path = model_path(storage, row)
    if not path.exists():
        raise NotFoundError(f"the file of model {row.id!r} is missing from the store")
    return load_model(path, row_card(row), device=device, info=row.info).model


def export_path(
    storage: Storage, row: ModelRow, fmt: str, device: torch.device | str | None = "cpu"
) -> tuple[Path, str]:
    """The file to download for ``fmt`` (``original``, ``safetensors``, ``torchscript``) and
    its file name. Exports are written once, next to the model, and reused."""
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in row.name).strip("-") or "model"
    if fmt == "original" or (fmt == "torchscript" and row.format == "torchscript"):
        return model_path(storage, row), f"{slug}{EXTENSIONS[row.format]}"
    if fmt not in EXPORTS:
        raise InvalidParametersError(
            f"unknown download format {fmt!r}; valid: original, safetensors, torchscript"
        )
    if fmt == "safetensors" and row_card(row).architecture is None:
        raise ConflictError(
            "safetensors downloads are for models built from an allow-listed architecture "
            f"(this one is a {row.format} model); use format=original or torchscript"
        )
    dest = storage.model_dir(row.id) / f"export{EXPORTS[fmt]}"
    if not dest.exists():
        from models.formats.export import export_safetensors, export_torchscript

        model = load_registered_model(storage, row, device)
        tmp = dest.with_name(f".{dest.name}.{new_id()}")
        try:
            (export_safetensors if fmt == "safetensors" else export_torchscript)(model, tmp)
            tmp.replace(dest)
            storage.publish(dest)
        finally:
            tmp.unlink(missing_ok=True)
    return dest, f"{slug}{EXPORTS[fmt]}"
