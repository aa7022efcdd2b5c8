"""Credentials: the Bearer scheme everywhere, the admin key, the metrics token."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.settings import DEV_ADMIN_KEY
from app.core.tenants import same_secret
from tests.app.http_fixtures import ADMIN, Tenant, create_app_for, http_client, other, tenant

__all__ = ["http_client", "other", "tenant"]  # fixtures


def _basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"admin:{secret}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [
        _basic(DEV_ADMIN_KEY),
        f"Basic {DEV_ADMIN_KEY}",
        f"Token {DEV_ADMIN_KEY}",
        DEV_ADMIN_KEY,
        f"Bearer{DEV_ADMIN_KEY}",
        f"Bearer {DEV_ADMIN_KEY} extra",
        "Bearer ",
        f"Bearer {DEV_ADMIN_KEY}x",
    ],
)
def test_admin_key_needs_the_bearer_scheme(http_client: TestClient, authorization: str) -> None:
    response = http_client.post("/v1/tenants", json={"name": "mallory"},
                                headers={"Authorization": authorization})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response.headers["www-authenticate"] == "Bearer"
    # Nothing was created: the name is still free for the real admin.
    ok = http_client.post("/v1/tenants", json={"name": "mallory"}, headers=ADMIN)
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(http_client: TestClient, scheme: str) -> None:
    response = http_client.post("/v1/tenants", json={"name": f"t-{scheme}"},
                                headers={"Authorization": f"{scheme} {DEV_ADMIN_KEY}"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("shape", ["Basic {}", "{}", "Token {}", "Bearer {} {}"])
def test_tenant_keys_need_the_bearer_scheme(tenant: Tenant, shape: str) -> None:
    authorization = shape.format(tenant.key, tenant.key)
    response = tenant.client.get("/v1/datasets", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert tenant.client.get("/v1/datasets", headers=tenant.auth).status_code == 200


def test_the_admin_key_is_not_a_tenant_key_and_back(tenant: Tenant) -> None:
    assert tenant.client.get("/v1/datasets", headers=ADMIN).status_code == 401
    response = tenant.client.post("/v1/tenants", json={"name": "x"}, headers=tenant.auth)
    assert response.status_code == 401


def test_same_secret() -> None:
    assert same_secret("abc", "abc")
    assert not same_secret("abc", "abd")
    assert not same_secret("abc", "abcd")
    assert not same_secret("", "abc")


def test_metrics_are_off_without_a_token(tenant: Tenant) -> None:
    """No token configured: whatever the credential, nothing is shown (401 without one,
    404 with one: the route is off)."""
    tenant.add_job("audit", {"model_id": "m"})
    for headers, status in (({}, 401), (tenant.auth, 404), (ADMIN, 404),
                            ({"Authorization": "Bearer anything"}, 404)):
        response = tenant.client.get("/metrics", headers=headers)
        assert response.status_code == status
        assert "robustdx_jobs" not in response.text
        assert response.json()["error"]["code"] == ("not_found" if status == 404
                                                    else "unauthenticated")


def test_metrics_need_the_operator_token(tmp_path: Path) -> None:
    from tests.app.models_fixtures import new_tenant

    with TestClient(create_app_for(tmp_path / "data", metrics_token="op-token")) as client:
        key = new_tenant(client, "st-mary")
        Tenant(client, key, tmp_path / "data").add_job("audit", {"model_id": "m"})
        for headers in ({}, {"Authorization": f"Bearer {key}"}, ADMIN,
                        {"Authorization": "Basic op-token"}, {"Authorization": "Bearer op"}):
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert "robustdx_jobs" not in response.text
        response = client.get("/metrics", headers={"Authorization": "Bearer op-token"})
        assert response.status_code == 200
        assert 'robustdx_jobs{kind="audit",status="queued"} 1.0' in response.text
