"""Idempotency-Key: concurrent duplicates create one resource and get one answer; another
body under the same key is refused; keys are per credential, bounded, and expire."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select, update

from app.api.main import create_app
from app.core.db import Tenant, get_database
from app.core.db.tables import IdempotencyKey
from app.core.settings import DEV_ADMIN_KEY
from tests.app.models_fixtures import make_settings

ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}


@contextlib.contextmanager
def live_api(data_dir: Path) -> Iterator[str]:
    """The real app on uvicorn in a thread (requests really run concurrently)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(make_settings(data_dir)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                break
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def api_url(tmp_path: Path) -> Iterator[str]:
    with live_api(tmp_path / "data") as url:
        yield url


def _tenants(tmp_path: Path, name: str) -> int:
    db = get_database(f"sqlite:///{(tmp_path / 'data' / 'robustdx.db').resolve()}")
    with db.session() as session:
        return int(session.scalar(select(func.count()).where(Tenant.name == name)) or 0)


def _create(url: str, name: str, key: str | None) -> httpx.Response:
    headers = dict(ADMIN, **({"Idempotency-Key": key} if key else {}))
    return httpx.post(f"{url}/v1/tenants", json={"name": name}, headers=headers, timeout=60)


def test_concurrent_duplicates_create_one_tenant(api_url: str, tmp_path: Path) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: _create(api_url, "st-mary", "create-st-mary-1"),
                                  range(8)))
    assert [r.status_code for r in responses] == [201] * 8
    bodies = [r.json() for r in responses]
    assert len({b["id"] for b in bodies}) == 1
    assert len({b["api_key"] for b in bodies}) == 1  # the very first answer, replayed
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 7
    assert _tenants(tmp_path, "st-mary") == 1
    # Without the header the same request is a new creation (and here a name conflict).
    assert _create(api_url, "st-mary", None).status_code == 409


def test_same_key_with_another_body_is_a_conflict(api_url: str) -> None:
    assert _create(api_url, "first", "k-1").status_code == 201
    reused = _create(api_url, "second", "k-1")
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


def test_a_failed_request_keeps_nothing_so_its_retry_runs(api_url: str, tmp_path: Path) -> None:
    assert _create(api_url, "taken", None).status_code == 201
    first = _create(api_url, "taken", "k-fail")
    assert first.status_code == 409  # the name conflict, not a replay
    assert first.json()["error"]["code"] == "conflict"
    db = get_database(f"sqlite:///{(tmp_path / 'data' / 'robustdx.db').resolve()}")

    def kept() -> int:
        with db.session() as session:
            return int(session.scalar(select(func.count()).select_from(IdempotencyKey)) or 0)

    # The key is released once the request has ended (just after its answer).
    for _ in range(100):
        if kept() == 0:
            break
        time.sleep(0.05)
    assert kept() == 0
    retry = _create(api_url, "taken", "k-fail")
    assert retry.status_code == 409
    assert retry.headers.get("idempotent-replayed") is None


def test_keys_are_scoped_by_credential(api_url: str) -> None:
    key_a = _create(api_url, "tenant-a", None).json()["api_key"]
    key_b = _create(api_url, "tenant-b", None).json()["api_key"]
    body = {"model_id": "m", "dataset_id": "d", "attacks": [{"name": "fgsm",
                                                             "params": {"eps": 0.01}}]}
    for key in (key_a, key_b):
        response = httpx.post(f"{api_url}/v1/audits", json=body, timeout=60,
                              headers={"Authorization": f"Bearer {key}",
                                       "Idempotency-Key": "shared-key"})
        # Each tenant's own answer (the model is unknown to both), never the other's.
        assert response.status_code == 404
        assert response.headers.get("idempotent-replayed") is None


@pytest.mark.parametrize("key", ["x" * 256, "with space", "tab\there", "é"])
def test_malformed_keys_are_refused(api_url: str, tmp_path: Path, key: str) -> None:
    response = httpx.post(f"{api_url}/v1/tenants", timeout=60,
                          content=json.dumps({"name": "never"}).encode(),
                          headers={**ADMIN, "Content-Type": "application/json",
                                   "Idempotency-Key": key.encode()})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_idempotency_key"
    assert _tenants(tmp_path, "never") == 0
    assert _create(api_url, "after-bad-key", "good-key").status_code == 201


def test_an_expired_key_creates_again(api_url: str, tmp_path: Path) -> None:
    first = _create(api_url, "expiring", "k-exp")
    assert first.status_code == 201
    db = get_database(f"sqlite:///{(tmp_path / 'data' / 'robustdx.db').resolve()}")
    with db.session() as session:
        session.execute(update(IdempotencyKey).values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    again = _create(api_url, "expiring", "k-exp")
    assert again.status_code == 409  # ran again: the name now exists
    assert again.json()["error"]["code"] == "conflict"


def test_multipart_retries_match_across_boundaries(api_url: str) -> None:
    """Two clients sending the same form draw different boundaries; it is one request."""
    key = _create(api_url, "uploader", None).json()["api_key"]
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "upload-1"}
    answers = []
    for boundary in ("boundary-one-aaaa", "another-boundary-bbbbbbbbbbbb"):
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"card\"\r\n\r\n{{}}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"m.pt\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                f"not a model\r\n--{boundary}--\r\n").encode()
        answers.append(httpx.post(
            f"{api_url}/v1/models", content=body, timeout=60,
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}))
    # A refused upload is not kept, so both ran and both were refused the same way.
    assert [a.status_code for a in answers] == [422, 422]
    assert answers[0].json()["error"]["code"] == answers[1].json()["error"]["code"]
