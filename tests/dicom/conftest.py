"""Fixtures of the DICOM tests: an in-process API with a tenant."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from tests.app.models_fixtures import Api, make_settings, new_tenant, open_client

MAX_INSTANCE = 256 * 1024


def dicom_settings(data_dir: Path, database_url: str | None = None) -> Settings:
    return make_settings(data_dir, max_dicom_instance_bytes=MAX_INSTANCE, max_stow_instances=8,
                         broker_url="redis://127.0.0.1:1/0", database_url=database_url)


@pytest.fixture
def dicom_client(tmp_path: Path) -> Iterator[TestClient]:
    yield from open_client(dicom_settings(tmp_path / "data"))


@pytest.fixture
def hospital(dicom_client: TestClient, tmp_path: Path) -> Api:
    # Unique names: on PostgreSQL the database outlives one test.
    name = f"st-quillifer-{uuid.uuid4().hex[:8]}"
    return Api(dicom_client, new_tenant(dicom_client, name), tmp_path / "data")


@pytest.fixture
def other_hospital(dicom_client: TestClient, tmp_path: Path) -> Api:
    name = f"elsewhere-{uuid.uuid4().hex[:8]}"
    return Api(dicom_client, new_tenant(dicom_client, name), tmp_path / "data")
