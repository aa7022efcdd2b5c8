"""A small HTTP client for the RobustDx API, used by the CLI, the demo and harnesses."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx

FINAL = ("succeeded", "failed", "cancelled")


class ApiError(RuntimeError):
    """The service answered with an error status (or a name matched nothing)."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        message = error.get("message", body) if isinstance(error, dict) else error
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body


class ServiceUnreachableError(RuntimeError):
    """No answer from the service at all (refused connection, DNS, timeout)."""


def default_url() -> str:
    """``ROBUSTDX_URL``, else the local service on ``PORT`` (8000), as ``make run`` starts it."""
    return os.environ.get("ROBUSTDX_URL") or f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"


def default_key(data_dir: Path | None = None) -> str | None:
    key = os.environ.get("ROBUSTDX_API_KEY")
    if key:
        return key
    path = (data_dir or Path(os.environ.get("ROBUSTDX_DATA_DIR", "data"))) / "dev-api-key"
    return path.read_text().strip() if path.exists() else None


def parse_value(text: str) -> Any:
    """A ``--param`` value: a boolean, a number, a fraction (``8/255``), JSON (a list or an
    object, such as ``eval_attacks=[{"name": "fgsm"}]``), else the text itself."""
    if text.lstrip().startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
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
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnreachableError(
                f"cannot reach the RobustDx service at {self.url} ({type(exc).__name__}); "
                "is it running? (make run, or set --url / ROBUSTDX_URL)") from exc

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
        return self._json(self._send("GET", path, params=params or None))

    def post(self, path: str, json: Any = None, idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._json(self._send("POST", path, json=json, headers=headers))

    def delete(self, path: str) -> None:
        self._json(self._send("DELETE", path))

    def upload_dataset(self, path: Path, fmt: str, name: str | None = None) -> dict[str, Any]:
        with path.open("rb") as fh:
            data = {"format": fmt} | ({"name": name} if name else {})
            files = {"file": (path.name, fh, "application/zip")}
            return dict(self._json(self._send("POST", "/v1/datasets", data=data, files=files)))

    def upload_model(self, path: Path, card: dict[str, Any]) -> dict[str, Any]:
        import json

        with path.open("rb") as fh:
            files = {"file": (path.name, fh, "application/octet-stream")}
            return dict(self._json(self._send("POST", "/v1/models", files=files,
                                              data={"card": json.dumps(card)})))

    def predict(self, model_id: str, paths: list[Path], **params: Any) -> dict[str, Any]:
        field = "files" if len(paths) > 1 else "file"
        handles = [p.open("rb") for p in paths]
        try:
            files = [(field, (p.name, fh, "application/octet-stream"))
                     for p, fh in zip(paths, handles, strict=True)]
            return dict(self._json(self._send("POST", f"/v1/models/{model_id}/predict",
                                              files=files, params=params or None)))
        finally:
            for fh in handles:
                fh.close()

    def _find(self, kind: str, name_or_id: str) -> dict[str, Any]:
        """A resource by id, or by name (the newest of that name)."""
        offset = 0
        while True:
            page = self.get(f"/v1/{kind}", limit=200, offset=offset)
            for item in page["items"]:
                if name_or_id in (item["id"], item.get("name")):
                    return dict(item)
            offset += len(page["items"])
            if not page["items"] or offset >= page.get("total", offset):
                break
        what = kind.rstrip("s")
        raise ApiError(404, {"error": {"message": f"no {what} with id or name {name_or_id!r}"}})

    def find_model(self, name_or_id: str) -> dict[str, Any]:
        return self._find("models", name_or_id)

    def find_dataset(self, name_or_id: str) -> dict[str, Any]:
        return self._find("datasets", name_or_id)

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

    def download(self, path: str, dest: Path, **params: Any) -> Path:
        """Stream ``path`` into ``dest`` (written whole or not at all)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        try:
            with self.http.stream("GET", path, params=params or None) as response:
                if response.status_code >= 400:
                    response.read()
                    self._json(response)
                with partial.open("wb") as fh:
                    for chunk in response.iter_bytes(1 << 20):
                        fh.write(chunk)
        except httpx.TransportError as exc:
            raise ServiceUnreachableError(
                f"cannot reach the RobustDx service at {self.url} ({type(exc).__name__})"
            ) from exc
        partial.replace(dest)
        return dest
