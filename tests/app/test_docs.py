"""Documentation that works on a closed network: every asset the docs pages reference is
served by the service itself, bearer auth is a security scheme, ``/`` leads to the docs."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from tests.app.http_fixtures import http_client

__all__ = ["http_client"]  # fixtures


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.refs.append(value)


def _references(html: str) -> list[str]:
    parser = _Refs()
    parser.feed(html)
    # Script bodies name URLs too (the OpenAPI document, Swagger's redirect page).
    inline = re.findall(r"""(?:url|spec-url)\s*[:=]\s*['"]([^'"]+)['"]""", html)
    return parser.refs + inline


def test_root_redirects_to_the_docs(http_client: TestClient) -> None:
    response = http_client.get("/", follow_redirects=False)
    assert response.status_code in (307, 308)
    assert response.headers["location"] == "/docs"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_every_referenced_asset_is_served_locally(http_client: TestClient, page: str) -> None:
    response = http_client.get(page)
    assert response.status_code == 200
    refs = _references(response.text)
    assert any(r.endswith(".js") for r in refs), refs
    assert "/openapi.json" in refs
    for ref in refs:
        assert ref.startswith("/"), f"{page} loads {ref} from another host"
        asset = http_client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 0, ref
    assert "cdn." not in response.text
    assert "fonts.googleapis" not in response.text


def test_swagger_assets_are_the_real_bundle(http_client: TestClient) -> None:
    js = http_client.get("/docs-assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in js.text
    assert js.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert "Redoc" in http_client.get("/docs-assets/redoc.standalone.js").text


def test_bearer_auth_is_a_security_scheme(http_client: TestClient) -> None:
    schema = http_client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert {name: (s["type"], s["scheme"]) for name, s in schemes.items()} == {
        "apiKey": ("http", "bearer"), "adminKey": ("http", "bearer"),
        "metricsToken": ("http", "bearer"),
    }
    ops = {(path, method): op for path, item in schema["paths"].items()
           for method, op in item.items()}
    assert ops[("/v1/tenants", "post")]["security"] == [{"adminKey": []}]
    assert ops[("/metrics", "get")]["security"] == [{"metricsToken": []}]
    for key in [("/v1/models", "post"), ("/v1/models/{model_id}/predict", "post"),
                ("/v1/datasets", "post"), ("/v1/audits", "get"), ("/v1/jobs/{job_id}", "get")]:
        assert ops[key]["security"] == [{"apiKey": []}], key
    for op in ops.values():
        names = [p["name"].lower() for p in op.get("parameters", []) if p["in"] == "header"]
        assert "authorization" not in names
    public = {k for k, op in ops.items() if "security" not in op}
    assert public == {("/health/live", "get"), ("/health/ready", "get"),
                      ("/v1/schemas/report", "get"), ("/v1/signing-key", "get"),
                      # The Open Inference Protocol's server health and metadata are public
                      # as in KServe and Triton; its model routes take the tenant's key.
                      ("/v2", "get"), ("/v2/health/live", "get"), ("/v2/health/ready", "get")}
