"""Fixtures and helpers for the model registry and predict API tests.

The app runs in-process (``TestClient``) on a temporary data folder with SQLite, no
dispatcher and no zoo; tenants are created through ``POST /v1/tenants`` with the admin key.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from app.api.main import create_app
from app.core.settings import DEV_ADMIN_KEY, Settings

MAX_MODEL_BYTES = 4 * 1024**2
MAX_IMAGE_BYTES = 512 * 1024
MAX_FILES = 6


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "run_dispatcher": False,
        "register_zoo": False,
        "environment": "test",
        # A test database is new: migrate it as `robustdx db upgrade` would.
        "auto_upgrade_database": True,
        "device": "cpu",
        "max_model_bytes": MAX_MODEL_BYTES,
        "max_image_bytes": MAX_IMAGE_BYTES,
        "max_files_per_request": MAX_FILES,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Api:
    """A tenant's view of the API."""

    client: TestClient
    key: str
    data_dir: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def upload(
        self, path: Path | None, card: dict[str, Any] | str, content: bytes | None = None
    ) -> httpx.Response:
        data = content if content is not None else (path.read_bytes() if path else b"")
        name = path.name if path else "model.bin"
        card_text = card if isinstance(card, str) else json.dumps(card)
        return self.client.post(
            "/v1/models",
            headers=self.auth,
            files={"file": (name, data, "application/octet-stream")},
            data={"card": card_text},
        )

    def register(self, path: Path, card: dict[str, Any]) -> dict[str, Any]:
        response = self.upload(path, card)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def predict(
        self, model_id: str, *images: tuple[str, bytes], several: bool = False, **params: Any
    ) -> httpx.Response:
        field = "files" if several or len(images) > 1 else "file"
        return self.client.post(
            f"/v1/models/{model_id}/predict",
            headers=self.auth,
            params=params,
            files=[(field, (name, data, "application/octet-stream")) for name, data in images],
        )


def new_tenant(client: TestClient, name: str) -> str:
    response = client.post(
        "/v1/tenants", json={"name": name}, headers={"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["api_key"]
    return key


def open_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from open_client(make_settings(tmp_path / "data"))


@pytest.fixture
def api(client: TestClient, tmp_path: Path) -> Api:
    return Api(client, new_tenant(client, "st-mary"), tmp_path / "data")


@pytest.fixture
def other_api(client: TestClient, tmp_path: Path) -> Api:
    return Api(client, new_tenant(client, "other-hospital"), tmp_path / "data")


# ----------------------------------------------------------------------------- images


def png_bytes(seed: int = 0, size: int = 32, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int = 0, size: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height``; its pixel data is a token (a bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def dicom_bytes(seed: int = 0, size: int = 32, with_pixels: bool = True) -> bytes:
    """A 16-bit MONOCHROME2 DX file with a rescale and a window (or no pixel data)."""
    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientName = "Phantom^Test"
    if with_pixels:
        stored = rng.integers(0, 4096, (size, size), dtype=np.uint16)
        ds.set_pixel_data(stored, "MONOCHROME2", 12, generate_instance_uid=False)
        ds.RescaleSlope = 1
        ds.RescaleIntercept = -1024
        ds.WindowCenter = 1000
        ds.WindowWidth = 3000
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
