"""``/v1/datasets`` over HTTP: the streamed upload (key first, limits while streaming, only
the expected parts), imports that lock nobody out, options, tenancy and deletion."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

import models.datasets
from tests.app.asgi import asgi_request, multipart_chunks
from tests.app.http_fixtures import (
    ADMIN,
    MAX_DATASET_BYTES,
    Tenant,
    folder_zip,
    http_client,
    other,
    row_counts,
    stored_files,
    tenant,
)

__all__ = ["http_client", "other", "tenant"]  # fixtures

BOUNDARY = "rdxboundary"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def test_upload_list_get(tenant: Tenant, other: Tenant) -> None:
    body = tenant.dataset(folder_zip(("benign", "melanoma")), name="derm-check")
    assert (body["name"], body["count"]) == ("derm-check", 4)
    assert body["labels"] == ["benign", "melanoma"]
    assert body["label_counts"] == {"benign": 2, "melanoma": 2}
    assert body["created_at"].endswith("Z")
    listed = tenant.client.get("/v1/datasets", headers=tenant.auth).json()
    assert [d["id"] for d in listed["items"]] == [body["id"]]
    assert tenant.client.get(f"/v1/datasets/{body['id']}", headers=tenant.auth).json() == body
    assert other.client.get(f"/v1/datasets/{body['id']}", headers=other.auth).status_code == 404
    assert other.client.get("/v1/datasets", headers=other.auth).json()["total"] == 0


def test_name_defaults_to_the_file_name(tenant: Tenant) -> None:
    assert tenant.dataset()["name"] == "ds"


@pytest.mark.parametrize("labels", ["melanoma,benign", '["melanoma", "benign"]'])
def test_labels_field_fixes_the_order(tenant: Tenant, labels: str) -> None:
    body = tenant.dataset(folder_zip(("benign", "melanoma")), labels=labels)
    assert body["labels"] == ["melanoma", "benign"]


def test_labels_field_refuses_other_classes(tenant: Tenant) -> None:
    before = stored_files(tenant.data_dir)
    response = tenant.upload_dataset(folder_zip(("benign", "melanoma")), labels="benign,nevus")
    assert response.status_code == 422
    assert stored_files(tenant.data_dir) == before


def test_the_key_is_checked_before_the_body_is_read(tenant: Tenant) -> None:
    app = tenant.client.app
    chunks = multipart_chunks(BOUNDARY, {"format": "imagefolder"}, "file", "x.zip",
                              b"\0" * 65536, 64)
    for auth in ({}, {"Authorization": "Bearer rdx_wrong"}, ADMIN):
        answer = asgi_request(app, "POST", "/v1/datasets", {"content-type": CTYPE, **auth},
                              chunks)
        assert answer.status == 401
        assert answer.chunks_read == 0


def test_a_declared_length_over_the_limit_is_refused_unread(tenant: Tenant) -> None:
    headers = {"content-type": CTYPE, "content-length": str(int(4.3 * 1024**3)), **tenant.auth}
    chunks = multipart_chunks(BOUNDARY, {"format": "imagefolder"}, "file", "x.zip",
                              b"\0" * 65536, 64)
    answer = asgi_request(tenant.client.app, "POST", "/v1/datasets", headers, chunks)
    assert answer.status == 413
    assert answer.chunks_read == 0


def test_a_part_over_the_limit_is_refused_while_streaming(tenant: Tenant) -> None:
    """No Content-Length (chunked): the part is refused as it passes the limit, after
    about limit / chunk reads of a body 64 times longer, and nothing stays on disk."""
    before = stored_files(tenant.data_dir)
    chunk = b"\0" * 16384
    count = 64 * MAX_DATASET_BYTES // len(chunk)
    chunks = multipart_chunks(BOUNDARY, {"format": "imagefolder"}, "file", "x.zip", chunk,
                              count)
    answer = asgi_request(tenant.client.app, "POST", "/v1/datasets",
                          {"content-type": CTYPE, **tenant.auth}, chunks)
    assert answer.status == 413, answer.body
    assert answer.bytes_read <= MAX_DATASET_BYTES + 2 * len(chunk) + 1024
    assert stored_files(tenant.data_dir) == before
    assert tenant.dataset()["count"] == 4


@pytest.mark.parametrize(
    ("files", "data", "field"),
    [
        ({"file": ("d.zip", b"", "application/zip"), "extra": ("x", b"x" * 4096, "text/plain")},
         {"format": "imagefolder"}, "extra"),
        ({"file": ("d.zip", b"", "application/zip")}, {"format": "imagefolder", "owner": "x"},
         "owner"),
        ({"image": ("d.zip", b"", "application/zip")}, {"format": "imagefolder"}, "image"),
    ],
)
def test_unexpected_parts_are_refused(tenant: Tenant, files: dict[str, Any],
                                      data: dict[str, str], field: str) -> None:
    before = (row_counts(tenant.db), stored_files(tenant.data_dir))
    response = tenant.client.post("/v1/datasets", headers=tenant.auth, files=files, data=data)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == field
    assert (row_counts(tenant.db), stored_files(tenant.data_dir)) == before


def test_an_import_holds_no_write_lock(tenant: Tenant, other: Tenant,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """While tenant A's import runs (held at its start until B is done), B's writes go
    through: B creates a tenant and deletes its own dataset. Ordering, not time: B's
    answers arrive while A's import is still waiting."""
    mine = other.dataset()
    started, release = threading.Event(), threading.Event()
    real = models.datasets.import_dataset

    def slow_import(*args: Any, **kwargs: Any) -> Any:
        started.set()
        assert release.wait(120), "the other tenant's writes never finished"
        return real(*args, **kwargs)

    monkeypatch.setattr(models.datasets, "import_dataset", slow_import)
    order: list[tuple[str, int]] = []

    def upload() -> None:
        order.append(("import", tenant.upload_dataset(folder_zip(seed=3)).status_code))

    thread = threading.Thread(target=upload)
    thread.start()
    try:
        assert started.wait(60)
        created = other.client.post("/v1/tenants", json={"name": "third"}, headers=ADMIN)
        order.append(("create tenant", created.status_code))
        deleted = other.client.delete(f"/v1/datasets/{mine['id']}", headers=other.auth)
        order.append(("delete dataset", deleted.status_code))
    finally:
        release.set()
        thread.join(120)
    assert order == [("create tenant", 201), ("delete dataset", 204), ("import", 201)]


@pytest.mark.parametrize(
    ("kind", "key", "status"),
    [
        ("audit", "dataset_id", "queued"),
        ("audit", "dataset_id", "running"),
        ("defense", "train_dataset_id", "queued"),
        ("defense", "eval_dataset_id", "running"),
    ],
)
def test_a_dataset_in_use_cannot_be_deleted(tenant: Tenant, kind: str, key: str,
                                            status: str) -> None:
    dataset = tenant.dataset()
    job = tenant.add_job(kind, {"model_id": "m", key: dataset["id"]}, status=status)
    response = tenant.client.delete(f"/v1/datasets/{dataset['id']}", headers=tenant.auth)
    assert response.status_code == 409
    assert response.json()["error"]["details"]["jobs"] == [job]
    assert tenant.client.get(f"/v1/datasets/{dataset['id']}", headers=tenant.auth).status_code \
        == 200
    assert (tenant.data_dir / "datasets" / dataset["id"] / "manifest.json").is_file()


def test_a_dataset_of_finished_jobs_is_deleted(tenant: Tenant, other: Tenant) -> None:
    dataset = tenant.dataset()
    tenant.add_job("audit", {"model_id": "m", "dataset_id": dataset["id"]}, status="succeeded")
    assert other.client.delete(f"/v1/datasets/{dataset['id']}",
                               headers=other.auth).status_code == 404
    response = tenant.client.delete(f"/v1/datasets/{dataset['id']}", headers=tenant.auth)
    assert response.status_code == 204
    assert tenant.client.get(f"/v1/datasets/{dataset['id']}", headers=tenant.auth).status_code \
        == 404
    assert not (tenant.data_dir / "datasets" / dataset["id"]).exists()


def test_many_parts_are_refused_at_the_first_extra(http_client: TestClient,
                                                   tenant: Tenant) -> None:
    files = [("file", ("d.zip", b"", "application/zip"))] * 1000
    response = http_client.post("/v1/datasets", headers=tenant.auth, files=files,
                                data={"format": "imagefolder"})
    assert response.status_code == 422
    assert "part" in response.json()["error"]["message"]
    assert row_counts(tenant.db)["datasets"] == 0




def _register(tenant: Tenant, tmp_path: Any, labels: list[str], channels: int,
              size: int) -> dict[str, Any]:
    from tests.models.model_files import tiny_net, write_torchscript

    path = write_torchscript(tiny_net(channels=channels), tmp_path / f"m{channels}-{size}.pt",
                             size=size, channels=channels)
    card = {"name": f"m-{channels}-{size}-{labels[0]}", "task": "single-label",
            "labels": labels, "input": {"channels": channels, "height": size, "width": size}}
    response = tenant.client.post(
        "/v1/models", headers=tenant.auth, data={"card": json.dumps(card)},
        files={"file": (path.name, path.read_bytes(), "application/octet-stream")})
    assert response.status_code == 201, response.text
    return card


def test_an_import_decodes_once_for_the_tenants_models(tenant: Tenant, other: Tenant,
                                                       tmp_path: Any) -> None:
    from models.card import ModelCard
    from models.datasets import load_dataset
    from models.datasets.tensor_cache import input_signature

    fits = ModelCard.model_validate(_register(tenant, tmp_path, ["a", "b"], 1, 16))
    _register(tenant, tmp_path, ["x", "y"], 3, 16)  # other labels
    _register(other, tmp_path, ["a", "b"], 3, 24)  # another tenant's
    body = tenant.dataset(folder_zip(("a", "b")))
    root = tenant.data_dir / "datasets" / body["id"]
    assert [p.name for p in (root / "cache").iterdir()] == [input_signature(fits)]
    dataset = load_dataset(root)
    assert dataset.cache(fits) is not None
    assert torch.equal(dataset.tensors(fits)[0], dataset.decoded_tensors(fits)[0])
    # A dataset no model of its tenant fits gets none; its audits make one when planned.
    bare = other.dataset(folder_zip(("p", "q")))
    assert not (other.data_dir / "datasets" / bare["id"] / "cache").exists()
