"""Fixtures for the HTTP-surface tests: the app in-process on SQLite in a temporary
folder, two tenants, small dataset archives, and jobs written straight to the database
(no broker: submission and dispatch have tests of their own)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.db import Database, DatasetRow, JobRow, ModelRow, get_database
from app.core.settings import DEV_ADMIN_KEY
from models.imaging import encode_png
from tests.app.models_fixtures import make_settings, new_tenant

#: A port nothing listens on: jobs stay queued, nothing reaches a shared broker.
NO_BROKER = "redis://127.0.0.1:9/0"
ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
MAX_DATASET_BYTES = 256 * 1024


def http_settings(data_dir: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {"broker_url": NO_BROKER, "max_dataset_bytes": MAX_DATASET_BYTES}
    values.update(overrides)
    return make_settings(data_dir, **values)


@dataclass
class Tenant:
    client: TestClient
    key: str
    data_dir: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def db(self) -> Database:
        return get_database(f"sqlite:///{(self.data_dir / 'robustdx.db').resolve()}")

    @property
    def tenant_id(self) -> str:
        from app.core.tenants import authenticate

        with self.db.session() as session:
            return authenticate(session, f"Bearer {self.key}").id

    def upload_dataset(self, archive: bytes, fmt: str = "imagefolder",
                       **fields: str) -> httpx.Response:
        return self.client.post(
            "/v1/datasets", headers=self.auth,
            files={"file": ("ds.zip", archive, "application/zip")},
            data={"format": fmt, **fields},
        )

    def dataset(self, archive: bytes | None = None, **fields: str) -> dict[str, Any]:
        response = self.upload_dataset(archive or folder_zip(), **fields)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def add_job(self, kind: str, request: dict[str, Any], status: str = "queued") -> str:
        with self.db.session() as session:
            job = JobRow(tenant_id=self.tenant_id, kind=kind, request=request, status=status,
                         stage=status)
            session.add(job)
            session.flush()
            return job.id


def folder_zip(classes: tuple[str, ...] = ("a", "b"), per_class: int = 2, seed: int = 0,
               extra: dict[str, bytes] | None = None) -> bytes:
    """An imagefolder archive of tiny grey PNGs."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for label in classes:
            for i in range(per_class):
                zf.writestr(f"{label}/{i}.png",
                            encode_png(rng.integers(0, 256, (16, 16), dtype=np.uint8)))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def row_counts(db: Database) -> dict[str, int]:
    """Rows of every tenant-owned table (a refused request must add none)."""
    from sqlalchemy import func, select

    with db.session() as session:
        return {table.__tablename__: int(session.scalar(
                    select(func.count()).select_from(table)) or 0)
                for table in (ModelRow, DatasetRow, JobRow)}


def stored_files(data_dir: Path) -> set[str]:
    """Every file under the data folder except the database's own."""
    return {str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
            if p.is_file() and not p.name.startswith("robustdx.db")
            and p.name != ".startup.lock"}


@pytest.fixture
def http_client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app_for(tmp_path / "data")) as client:
        yield client


def create_app_for(data_dir: Path, **overrides: Any) -> Any:
    from app.api.main import create_app

    return create_app(http_settings(data_dir, **overrides))


@pytest.fixture
def tenant(http_client: TestClient, tmp_path: Path) -> Tenant:
    return Tenant(http_client, new_tenant(http_client, "st-mary"), tmp_path / "data")


@pytest.fixture
def other(http_client: TestClient, tmp_path: Path) -> Tenant:
    return Tenant(http_client, new_tenant(http_client, "other-hospital"), tmp_path / "data")
