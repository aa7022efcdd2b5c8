"""A small HTTP client for the RobustDx API, used by the CLI, the demo and harnesses."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx

FINAL = ("succeeded", "failed", "cancelled")


class ApiError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status}: {error.get('message', body)}")
        self.status = status
        self.body = body


def default_key(data_dir: Path | None = None) -> str | None:
    key = os.environ.get("ROBUSTDX_API_KEY")
    if key:
        return key
    path = (data_dir or Path(os.environ.get("ROBUSTDX_DATA_DIR", "data"))) / "dev-api-key"
    return path.read_text().strip() if path.exists() else None


def parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "/" in text:
        try:
            return float(Fraction(text))
        except (ValueError, ZeroDivisionError):
            return text
    return text


def parse_attack(spec: str) -> dict[str, Any]:
    """``pgd:eps=4/255,steps=10`` -> ``{"name": "pgd", "params": {"eps": 0.0157, "steps": 10}}``.

    Several eps values are written with ``|``: ``pgd:eps=2/255|4/255|8/255``.
    """
    name, _, rest = spec.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"attack parameter {item!r} must be key=value")
        values = [parse_value(v) for v in value.split("|")]
        params[key.strip()] = values if len(values) > 1 else values[0]
    return {"name": name.strip(), "params": params}


class Client:
    def __init__(self, url: str, key: str | None, timeout: float = 120.0) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self.http.get(path, params=params or None))

    def post(self, path: str, json: Any) -> Any:
        return self._json(self.http.post(path, json=json))

    def upload_dataset(self, path: Path, fmt: str, name: str | None = None) -> dict[str, Any]:
        with path.open("rb") as fh:
            data = {"format": fmt} | ({"name": name} if name else {})
            files = {"file": (path.name, fh, "application/zip")}
            return dict(self._json(self.http.post("/v1/datasets", data=data, files=files)))

    def find_model(self, name_or_id: str) -> dict[str, Any]:
        page = self.get("/v1/models", limit=200)
        for item in page["items"]:
            if name_or_id in (item["id"], item["name"]):
                return dict(item)
        raise ApiError(404, {"error": {"message": f"no model named {name_or_id!r}"}})

    def wait(self, job_id: str, on_progress: Callable[[dict[str, Any]], None] | None = None,
             poll: float = 1.0, timeout: float = 24 * 3600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = dict(self.get(f"/v1/jobs/{job_id}"))
            if on_progress is not None:
                on_progress(status)
            if status["status"] in FINAL:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status['status']}")
            time.sleep(poll)

    def download(self, path: str, dest: Path) -> Path:
        response = self.http.get(path)
        if response.status_code >= 400:
            self._json(response)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(response.content)
        return dest
