"""Fixtures of the DICOM tests: an in-process API with a tenant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.app.models_fixtures import Api, make_settings, new_tenant, open_client

MAX_INSTANCE = 256 * 1024


@pytest.fixture
def dicom_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "data", max_dicom_instance_bytes=MAX_INSTANCE,
                             max_stow_instances=8, broker_url="redis://127.0.0.1:1/0")
    yield from open_client(settings)


@pytest.fixture
def hospital(dicom_client: TestClient, tmp_path: Path) -> Api:
    return Api(dicom_client, new_tenant(dicom_client, "st-quillifer"), tmp_path / "data")


@pytest.fixture
def other_hospital(dicom_client: TestClient, tmp_path: Path) -> Api:
    return Api(dicom_client, new_tenant(dicom_client, "elsewhere"), tmp_path / "data")
