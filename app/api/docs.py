"""Interactive documentation that works on a closed network, and the security schemes.

Swagger UI and ReDoc are served from the files the ``fastapi-offline`` package ships
(``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js``, ``favicon.png``)
under ``/docs-assets``; no page the service serves loads anything from another host.

Every route that reads ``Authorization`` declares it as an HTTP bearer security scheme
instead of a header parameter (OpenAPI ignores header parameters named
``Authorization``), so Swagger UI's "Authorize" button sets it: ``apiKey`` for tenants,
``adminKey`` for tenant creation, ``metricsToken`` for ``/metrics``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_URL = "/docs-assets"

#: The bearer token a route reads, by the description of its ``Authorization`` header.
SCHEMES: dict[str, tuple[str, str]] = {
    "Bearer <api key>": ("apiKey", "A tenant's API key (`rdx_...`)."),
    "Bearer <admin key>": ("adminKey", "The operator's admin key (ROBUSTDX_ADMIN_KEY)."),
    "Bearer <metrics token>": ("metricsToken", "The metrics token (ROBUSTDX_METRICS_TOKEN)."),
}


def _with_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Move every ``Authorization`` header parameter into a security requirement."""
    used: set[str] = set()
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            params = operation.get("parameters", [])
            auth = [p for p in params if p.get("in") == "header"
                    and p.get("name", "").lower() == "authorization"]
            if not auth:
                continue
            operation["parameters"] = [p for p in params if p not in auth]
            if not operation["parameters"]:
                del operation["parameters"]
            described = auth[0].get("description", "Bearer <api key>")
            name = SCHEMES.get(described, SCHEMES["Bearer <api key>"])[0]
            operation["security"] = [{name: []}]
            used.add(name)
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    for name, text in SCHEMES.values():
        if name in used:
            schemes[name] = {"type": "http", "scheme": "bearer", "description": text}
    return schema


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI), ``/redoc``, their assets, ``/`` redirecting to ``/docs``, and
    the OpenAPI document with its security schemes. Needs ``docs_url=redoc_url=None``."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_security(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            ))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs", status_code=307)

    @app.get("/docs", include_in_schema=False)
    def swagger(request: Request) -> HTMLResponse:
        root_path = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root_path}/openapi.json",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root_path}/docs/oauth2-redirect",
            swagger_js_url=f"{root_path}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root_path}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root_path}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root_path = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root_path}/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root_path}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root_path}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
