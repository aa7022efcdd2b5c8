"""Per-tenant budgets over HTTP: audit cost (422 with the estimate, nothing stored), the cap on
active jobs (429 with Retry-After, per tenant), the predict rate limit and the smoothing cap,
and cancel answering ``cancelling`` while a started job winds down."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.core import jobs as jobs_module
from app.core.db import JobRow
from models.phantoms.export import write_phantom_archive
from tests.app.models_fixtures import Api, make_settings, new_tenant, open_client, png_bytes
from tests.models.model_files import card_dict, tiny_net, write_torchscript

IMAGES = 12


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[Any]]]:
    """Published tasks, recorded instead of sent (no broker in these tests)."""
    published: list[tuple[str, list[Any]]] = []
    monkeypatch.setattr(jobs_module, "send_task",
                        lambda url, name, args: published.append((name, args)))
    return published


@pytest.fixture
def budget_client(tmp_path: Path) -> Iterator[TestClient]:
    yield from open_client(make_settings(
        tmp_path / "data", max_audit_cost=100_000, max_active_jobs_per_tenant=2,
        active_jobs_retry_after_seconds=17, predict_rate_per_second=0.001,
        predict_burst=200, max_smoothing_samples=100, max_files_per_request=4,
    ))


def _setup(client: TestClient, tmp_path: Path, name: str) -> tuple[Api, str, str]:
    api = Api(client, new_tenant(client, name), tmp_path / "data")
    model_id = api.register(write_torchscript(tiny_net(), tmp_path / f"{name}.pt"),
                            card_dict(("benign", "melanoma")))["id"]
    archive = tmp_path / f"{name}.zip"
    write_phantom_archive("derm", IMAGES, 32, "imagefolder", archive, seed=1)
    with archive.open("rb") as fh:
        r = client.post("/v1/datasets", headers=api.auth, files={"file": ("d.zip", fh)},
                        data={"format": "imagefolder"})
    assert r.status_code == 201, r.text
    return api, model_id, r.json()["id"]


def _audit(api: Api, model_id: str, dataset_id: str, **attack: Any) -> Any:
    body = {"model_id": model_id, "dataset_id": dataset_id,
            "attacks": [{"name": "pgd", "params": {"eps": "4/255", "steps": 5}, **attack}],
            "analyses": ["quantitative"], "options": {"min_eps": False}}
    return api.client.post("/v1/audits", headers=api.auth, json=body)


def _jobs(api: Api) -> int:
    return int(api.client.get("/v1/jobs", headers=api.auth).json()["total"])


def test_an_audit_over_budget_is_refused_with_its_estimate(
    budget_client: TestClient, tmp_path: Path, sent: list[Any]
) -> None:
    api, model_id, dataset_id = _setup(budget_client, tmp_path, "a")
    # Each parameter within its own bound (1000 steps, 20 restarts), the product over budget.
    huge = {"params": {"eps": ["1/255", "2/255", "4/255"], "steps": 1000, "restarts": 20}}
    r = _audit(api, model_id, dataset_id, **huge)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert error["details"]["limit"] == 100_000
    estimate = error["details"]["estimate"]
    assert estimate["images"] == IMAGES
    assert estimate["attacks"][0]["cost"] == IMAGES * 3 * 1000 * 20
    assert estimate["total"] == IMAGES + IMAGES * 3 * 1000 * 20
    assert _jobs(api) == 0
    assert sent == []
    ok = _audit(api, model_id, dataset_id)  # 12 + 12 x 5: well within the budget
    assert ok.status_code == 202, ok.text
    assert [name for name, _ in sent] == ["robustdx.audit.plan"]


def test_active_jobs_are_capped_per_tenant(
    budget_client: TestClient, tmp_path: Path, sent: list[Any]
) -> None:
    api, model_id, dataset_id = _setup(budget_client, tmp_path, "a")
    first = _audit(api, model_id, dataset_id).json()["id"]
    assert _audit(api, model_id, dataset_id).status_code == 202
    refused = _audit(api, model_id, dataset_id)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "17"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["details"]["active_jobs"] == 2
    check = budget_client.post(f"/v1/models/{model_id}/check", headers=api.auth)
    assert check.status_code == 429  # every kind of job counts
    other, other_model, other_dataset = _setup(budget_client, tmp_path, "b")
    assert _audit(other, other_model, other_dataset).status_code == 202  # B is not affected
    cancelled = api.client.post(f"/v1/jobs/{first}/cancel", headers=api.auth).json()
    assert cancelled["status"] == "cancelled"  # never started: ends at once
    assert _audit(api, model_id, dataset_id).status_code == 202
    assert _jobs(api) == 3


def test_cancel_of_a_started_job_answers_cancelling(
    budget_client: TestClient, tmp_path: Path, sent: list[Any]
) -> None:
    api, model_id, dataset_id = _setup(budget_client, tmp_path, "a")
    job_id = _audit(api, model_id, dataset_id).json()["id"]
    db = budget_client.app.state.robustdx.db  # type: ignore[attr-defined]
    with db.session() as s:  # a worker has started it
        s.execute(update(JobRow).where(JobRow.id == job_id).values(
            status="running", stage="attacking", started_at=datetime.now(UTC)))
    r = api.client.post(f"/v1/audits/{job_id}/cancel", headers=api.auth)
    assert r.status_code == 200
    assert r.json()["status"] == "cancelling"
    assert api.client.get(f"/v1/jobs/{job_id}", headers=api.auth).json()["status"] == (
        "cancelling")
    with db.session() as s:  # the worker stopped and recorded it
        s.execute(update(JobRow).where(JobRow.id == job_id).values(status="cancelled"))
    assert api.client.get(f"/v1/jobs/{job_id}", headers=api.auth).json()["status"] == (
        "cancelled")
    again = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth)
    assert again.status_code == 409


def test_predict_is_rate_limited_per_tenant_and_smoothing_is_capped(
    budget_client: TestClient, tmp_path: Path
) -> None:
    a = Api(budget_client, new_tenant(budget_client, "a"), tmp_path / "data")
    b = Api(budget_client, new_tenant(budget_client, "b"), tmp_path / "data")
    path = write_torchscript(tiny_net(), tmp_path / "m.pt")
    model_a, model_b = (x.register(path, card_dict())["id"] for x in (a, b))
    over = a.predict(model_a, ("x.png", png_bytes()), defense="smoothing", n=101, seed=0)
    assert over.status_code == 422
    assert over.json()["error"]["code"] == "budget_exceeded"
    assert over.json()["error"]["details"]["samples"] == 101
    many = a.predict(model_a, *[(f"{i}.png", png_bytes(i)) for i in range(2)],
                     defense="smoothing", n=51, seed=0)
    assert many.status_code == 422  # 2 files x n=51 = 102 noisy copies: over the cap of 100
    assert many.json()["error"]["details"]["samples"] == 102
    # The burst of 200 image passes: one smoothed image costs 16 + n.
    for _ in range(2):
        ok = a.predict(model_a, ("x.png", png_bytes()), defense="smoothing", n=84, seed=0)
        assert ok.status_code == 200, ok.text
    limited = a.predict(model_a, ("x.png", png_bytes()))
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["details"]["retry_after"] == int(limited.headers["Retry-After"])
    assert b.predict(model_b, ("x.png", png_bytes())).status_code == 200
