"""Remote models registered against RobustDx's own Open Inference Protocol endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from app.core.db import ModelRow, get_database
from app.core.remote import load_remote_model
from app.core.settings import DEV_ADMIN_KEY, Settings
from models.remote import QueryBudget
from tests.app.models_fixtures import make_settings
from tests.models.model_files import SIZE, TinyNet, card_dict, tiny_net, write_torchscript
from tests.support.live_server import live_api


class Site:
    def __init__(self, url: str, settings: Settings, key: str, local_id: str,
                 net: TinyNet) -> None:
        self.url, self.settings, self.key, self.local_id, self.net = (
            url, settings, key, local_id, net)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def register(self, **body: Any) -> httpx.Response:
        payload = {"url": self.url, "model": self.local_id, "card": card_dict(name="remote"),
                   "bearer_token": self.key} | body
        return httpx.post(f"{self.url}/v1/remote-models", json=payload, headers=self.auth,
                          timeout=30)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("remote")
    settings = make_settings(tmp / "data", remote_allowed_hosts=["127.0.0.1"],
                             remote_allow_private_networks=True)
    net = tiny_net(seed=5)
    path = write_torchscript(net, tmp / "m.pt")
    with live_api(settings) as url:
        r = httpx.post(f"{url}/v1/tenants", json={"name": "st-mary"},
                       headers={"Authorization": f"Bearer {DEV_ADMIN_KEY}"})
        key = r.json()["api_key"]
        with path.open("rb") as fh:
            r = httpx.post(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"},
                           files={"file": ("m.pt", fh)}, data={"card": json.dumps(card_dict())})
        assert r.status_code == 201, r.text
        yield Site(url, settings, key, r.json()["id"], net)


def test_a_remote_model_answers_what_the_served_model_answers(site: Site) -> None:
    r = site.register()
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["format"] == "remote"
    assert body["info"]["remote"] == {"url": site.url, "model": site.local_id, "version": None,
                                      "outputs": "probabilities", "input": "image",
                                      "output": "probabilities"}
    assert site.key not in r.text  # the endpoint's token is never returned
    assert site.key not in httpx.get(f"{site.url}/v1/models/{body['id']}",
                                     headers=site.auth).text
    with get_database(site.settings.resolved_database_url).session() as session:
        row = session.get(ModelRow, body["id"])
        assert row is not None
        session.expunge(row)
    budget = QueryBudget(limit=50)
    model = load_remote_model(row, site.settings, budget)
    x = torch.rand(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = torch.softmax(site.net((x - 0.5) / 0.25), 1)
        got = torch.softmax(model(x), 1)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
    assert budget.queries == 5


@pytest.mark.parametrize(("body", "message"), [
    ({"url": "http://localhost:1"}, "not on the remote model allow-list"),
    ({"url": "gopher://127.0.0.1"}, "must be http:// or https://"),
    ({"model": "../../v1/tenants"}, "String should match pattern"),
    ({"bearer_token": "wrong"}, "the remote model answered 401"),
    ({"model": "0" * 32}, "the remote model answered 404"),
    ({"card": card_dict(channels=1)}, "the card needs FP32 [N, 1, 32, 32]"),
    ({"card": card_dict(labels=("a", "b", "c"))}, "2 outputs per image"),
])
def test_bad_remote_models_are_refused(site: Site, body: dict[str, Any], message: str) -> None:
    r = site.register(**body)
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]["message"]


def test_private_addresses_need_the_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", remote_allowed_hosts=["127.0.0.1"])
    with live_api(settings) as url:
        key = httpx.post(f"{url}/v1/tenants", json={"name": "t"},
                         headers={"Authorization": f"Bearer {DEV_ADMIN_KEY}"}).json()["api_key"]
        r = httpx.post(f"{url}/v1/remote-models", headers={"Authorization": f"Bearer {key}"},
                       json={"url": url, "model": "m", "card": card_dict()})
    assert r.status_code == 422
    assert "non-public address" in r.json()["error"]["message"]


def test_remote_models_are_audited_with_scores_only_and_never_served(site: Site) -> None:
    remote = site.register().json()["id"]
    audit = {"model_id": remote, "dataset_id": "0" * 32,
             "attacks": [{"name": "pgd", "params": {"eps": 0.03}}]}
    r = httpx.post(f"{site.url}/v1/audits", json=audit, headers=site.auth)
    assert r.status_code == 422
    assert "pgd need gradients; use square" in r.json()["error"]["message"]
    r = httpx.post(f"{site.url}/v1/audits", headers=site.auth, json={
        **audit, "attacks": [{"name": "square"}], "analyses": [{"name": "gradcam"}]})
    assert r.status_code == 422
    assert "gradcam need gradients or internal activations" in r.json()["error"]["message"]
    r = httpx.post(f"{site.url}/v1/defenses", headers=site.auth, json={
        "model_id": remote, "train_dataset_id": "x", "eval_dataset_id": "x",
        "method": "pgd_at"})
    assert r.status_code == 409
    assert "remote model" in r.json()["error"]["message"]
    predict = httpx.post(f"{site.url}/v1/models/{remote}/predict", headers=site.auth,
                         files={"file": ("x.png", b"\x89PNG")})
    assert predict.status_code == 409
    download = httpx.get(f"{site.url}/v1/models/{remote}/download", headers=site.auth)
    assert download.status_code == 409
    ready = httpx.get(f"{site.url}/v2/models/{remote}/ready", headers=site.auth)
    assert ready.status_code == 409
    assert isinstance(ready.json()["error"], str)
