"""The job routes every kind shares (list, status, cancel), what a status shows (model and
dataset by id and name, UTC timestamps), paging bounds and the streamed artifacts zip."""

from __future__ import annotations

import io
import re
import zipfile

import pytest

from app.core.db import ModelRow
from app.core.storage import Storage
from tests.app.http_fixtures import Tenant, http_client, other, tenant

__all__ = ["http_client", "other", "tenant"]  # fixtures

UTC_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _model(tenant: Tenant, name: str) -> str:
    with tenant.db.session() as session:
        row = ModelRow(tenant_id=tenant.tenant_id, name=name, format="onnx", sha256="0" * 64,
                       size_bytes=1, card={}, info={})
        session.add(row)
        session.flush()
        return row.id


def test_audit_list_names_model_and_dataset(tenant: Tenant) -> None:
    dataset = tenant.dataset(name="derm-test-set")
    model_id = _model(tenant, "derm-vgg")
    job = tenant.add_job("audit", {"model_id": model_id, "dataset_id": dataset["id"]})
    page = tenant.client.get("/v1/audits", headers=tenant.auth).json()
    assert [item["id"] for item in page["items"]] == [job]
    item = page["items"][0]
    assert item["model"] == {"id": model_id, "name": "derm-vgg"}
    assert item["datasets"] == {"dataset": {"id": dataset["id"], "name": "derm-test-set"}}
    assert UTC_Z.match(item["created_at"])


def test_defense_status_names_its_datasets_and_survives_deletion(tenant: Tenant) -> None:
    train, evaluation = tenant.dataset(name="train"), tenant.dataset(name="eval")
    job = tenant.add_job("defense", {"model_id": "gone", "train_dataset_id": train["id"],
                                     "eval_dataset_id": evaluation["id"]}, status="failed")
    body = tenant.client.get(f"/v1/defenses/{job}", headers=tenant.auth).json()
    assert body["model"] == {"id": "gone", "name": None}
    assert body["datasets"] == {"train": {"id": train["id"], "name": "train"},
                                "eval": {"id": evaluation["id"], "name": "eval"}}


def test_names_of_another_tenant_never_show(tenant: Tenant, other: Tenant) -> None:
    theirs = _model(other, "secret-model")
    job = tenant.add_job("audit", {"model_id": theirs, "dataset_id": "x"})
    body = tenant.client.get(f"/v1/jobs/{job}", headers=tenant.auth).json()
    assert body["model"] == {"id": theirs, "name": None}


@pytest.mark.parametrize(("prefix", "kind"), [("/v1/audits", "audit"),
                                              ("/v1/defenses", "defense"), ("/v1/jobs", "check")])
def test_every_kind_lists_gets_and_cancels(tenant: Tenant, other: Tenant, prefix: str,
                                           kind: str) -> None:
    job = tenant.add_job(kind, {"model_id": "m"})
    unrelated = tenant.add_job("check" if kind != "check" else "audit", {"model_id": "m"})
    listed = tenant.client.get(prefix, headers=tenant.auth).json()
    ids = {item["id"] for item in listed["items"]}
    assert job in ids
    assert (unrelated in ids) == (prefix == "/v1/jobs")
    assert other.client.get(f"{prefix}/{job}", headers=other.auth).status_code == 404
    assert other.client.post(f"{prefix}/{job}/cancel", headers=other.auth).status_code == 404
    cancelled = tenant.client.post(f"{prefix}/{job}/cancel", headers=tenant.auth)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert UTC_Z.match(cancelled.json()["finished_at"])
    again = tenant.client.post(f"{prefix}/{job}/cancel", headers=tenant.auth)
    assert again.status_code == 409
    if prefix != "/v1/jobs":  # a kind's routes do not show another kind's job
        assert tenant.client.get(f"{prefix}/{unrelated}", headers=tenant.auth).status_code == 404


def test_jobs_filter_by_kind(tenant: Tenant) -> None:
    audit = tenant.add_job("audit", {})
    tenant.add_job("check", {})
    page = tenant.client.get("/v1/jobs", params={"kind": "audit"}, headers=tenant.auth).json()
    assert [i["id"] for i in page["items"]] == [audit]
    assert tenant.client.get("/v1/jobs", params={"kind": "nope"},
                             headers=tenant.auth).status_code == 422


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/audits", "/v1/defenses", "/v1/models",
                                  "/v1/datasets"])
@pytest.mark.parametrize("params", [{"offset": str(2**63)}, {"offset": "-1"},
                                    {"offset": "1000001"}, {"limit": "0"}, {"limit": "201"},
                                    {"limit": "1e3"}, {"offset": "NaN"}])
def test_paging_out_of_range_is_422(tenant: Tenant, path: str, params: dict[str, str]) -> None:
    response = tenant.client.get(path, params=params, headers=tenant.auth)
    assert response.status_code == 422
    field = next(iter(params))
    assert response.json()["error"]["details"]["field"] == f"query.{field}"


def test_paging_at_the_bounds(tenant: Tenant) -> None:
    jobs = [tenant.add_job("audit", {}) for _ in range(3)]
    page = tenant.client.get("/v1/jobs", params={"limit": 2, "offset": 1},
                             headers=tenant.auth).json()
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (3, 2, 1, 2)
    assert {i["id"] for i in page["items"]} < set(jobs)
    deep = tenant.client.get("/v1/jobs", params={"offset": 1_000_000}, headers=tenant.auth)
    assert deep.status_code == 200
    assert deep.json()["items"] == []


def test_artifacts_zip_streams_reports_and_artifacts(tenant: Tenant, other: Tenant) -> None:
    job = tenant.add_job("audit", {"model_id": "m"}, status="succeeded")
    storage = Storage(tenant.data_dir)
    (storage.job_dir(job) / "report.json").write_text('{"ok": true}')
    files = {f"adversarial/pgd/{i:03d}.png": bytes([i]) * (1000 + i) for i in range(40)}
    files["big.bin"] = bytes(range(256)) * 9000  # more than one chunk of the stream
    for name, data in files.items():
        path = storage.artifacts_dir(job) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (storage.artifacts_dir(job) / "link.png").symlink_to(tenant.data_dir / "robustdx.db")
    with tenant.client.stream("GET", f"/v1/audits/{job}/artifacts.zip",
                              headers=tenant.auth) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert "content-length" not in response.headers  # streamed, not built first
        body = b"".join(response.iter_bytes())
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.read("report.json") == b'{"ok": true}'
        assert {n for n in zf.namelist() if n.startswith("artifacts/")} == {
            f"artifacts/{n}" for n in files}
        for name, data in files.items():
            assert zf.read(f"artifacts/{name}") == data
    assert other.client.get(f"/v1/audits/{job}/artifacts.zip",
                            headers=other.auth).status_code == 404


def test_artifacts_zip_waits_for_success(tenant: Tenant) -> None:
    job = tenant.add_job("audit", {"model_id": "m"}, status="running")
    response = tenant.client.get(f"/v1/audits/{job}/artifacts.zip", headers=tenant.auth)
    assert response.status_code == 409
    assert response.json()["error"]["details"]["status"] == "running"
