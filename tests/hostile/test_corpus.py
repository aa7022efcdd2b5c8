"""Every case of the corpus: a JSON ``{"error": ...}`` with its 4xx status, nothing stored
(rows and files counted before and after), no server path in the answer, and a request
of the same kind that works right after it."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.core.db import Database, get_database
from tests.app.http_fixtures import folder_zip, row_counts, stored_files
from tests.app.models_fixtures import png_bytes
from tests.hostile import cases_datasets, cases_files, cases_http, cases_jobs
from tests.hostile.corpus import GROUPS, Case, Request, Target

CASES: list[Case] = [*cases_files.CASES, *cases_datasets.CASES, *cases_http.CASES,
                     *cases_jobs.CASES]


def _params() -> list[object]:
    return [pytest.param(c, id=f"{c.group.replace(' ', '-')}:{c.id}",
                         marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail
                         else []) for c in CASES]


def send(client: TestClient, target: Target, request: Request) -> httpx.Response:
    headers = {**(target.auth if request.authenticated else {}), **request.headers}
    kwargs: dict[str, object] = {"headers": headers, "params": request.params}
    if request.json is not None:
        kwargs["content"] = json.dumps(request.json).encode()  # NaN and Infinity allowed
        headers.setdefault("Content-Type", "application/json")
    elif request.content is not None:
        kwargs["content"] = request.content
    else:
        kwargs["files"], kwargs["data"] = request.files, request.data
    return client.request(request.method, request.path, **kwargs)  # type: ignore[arg-type, unused-ignore]


def works_afterwards(client: TestClient, target: Target, group: str) -> None:
    """A good request of the case's kind is answered as usual."""
    auth = target.auth
    if group in ("images", "http"):
        response = client.post(f"/v1/models/{target.model_id}/predict", headers=auth,
                               files={"file": ("ok.png", png_bytes(5))})
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 2
    elif group == "model files":
        model = cases_files._torchscript(target)
        card = json.dumps({**target.card, "name": f"ok-{uuid.uuid4().hex[:8]}"})
        response = client.post("/v1/models", headers=auth, files={"file": ("m.pt", model)},
                               data={"card": card})
        assert response.status_code == 201, response.text
        assert client.delete(f"/v1/models/{response.json()['id']}",
                             headers=auth).status_code == 204
    elif group == "datasets":
        response = client.post("/v1/datasets", headers=auth, data={"format": "imagefolder"},
                               files={"file": ("d.zip", folder_zip(("benign", "malignant")))})
        assert response.status_code == 201, response.text
        assert client.delete(f"/v1/datasets/{response.json()['id']}",
                             headers=auth).status_code == 204
    else:
        response = send(client, target, cases_jobs.audit(target))
        assert response.status_code == 202, response.text
        cancelled = client.post(f"/v1/audits/{response.json()['id']}/cancel", headers=auth)
        assert cancelled.json()["status"] == "cancelled"


def test_the_corpus_is_large_and_covers_every_group() -> None:
    counts = Counter(c.group for c in CASES)
    assert len(CASES) >= 60
    assert set(counts) == set(GROUPS)
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", _params())
def test_bad_input_gets_a_clear_4xx(hostile: tuple[TestClient, Target, Path],
                                    case: Case) -> None:
    client, target, data_dir = hostile
    before = (row_counts(_db(data_dir)), stored_files(data_dir))
    response = send(client, target, case.build(target))
    low, high = case.status
    assert low <= response.status_code <= high, response.text[:500]
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"]
    assert body["error"]["message"]
    assert str(data_dir) not in response.text
    assert str(target.scratch) not in response.text
    assert (row_counts(_db(data_dir)), stored_files(data_dir)) == before
    works_afterwards(client, target, case.group)


def _db(data_dir: Path) -> Database:
    return get_database(f"sqlite:///{(data_dir / 'robustdx.db').resolve()}")
