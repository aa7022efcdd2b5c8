"""The inference paths' cache of successful key and model checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.api.auth_cache import AuthorizedModels
from app.core.db import ModelRow
from tests.app.models_fixtures import Api, api, client, png_bytes
from tests.models.model_files import card_dict, tiny_net, write_torchscript

__all__ = ["api", "client"]  # fixtures


def test_entries_expire_and_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [10.0]
    monkeypatch.setattr("app.api.auth_cache.time.monotonic", lambda: clock[0])
    cache = AuthorizedModels(ttl_seconds=2.0)
    row = ModelRow(id="m1")
    cache.put("Bearer k", "m1", row)
    assert cache.get("Bearer k", "m1") is row
    assert cache.get("Bearer other", "m1") is None
    assert cache.get(None, "m1") is None
    clock[0] = 12.5
    assert cache.get("Bearer k", "m1") is None
    cache.put("Bearer k", "m1", row)
    cache.forget_model("m1")
    assert cache.get("Bearer k", "m1") is None
    off = AuthorizedModels(ttl_seconds=0.0)
    off.put("Bearer k", "m1", row)
    assert off.get("Bearer k", "m1") is None


def test_a_flood_of_keys_never_grows_the_cache() -> None:
    cache = AuthorizedModels(ttl_seconds=60.0, max_entries=3)
    for i in range(10):
        cache.put(f"Bearer k{i}", "m", ModelRow(id="m"))
    assert len(cache._rows) <= 3


def test_a_deleted_model_stops_answering_at_once(api: Api, tmp_path: Path) -> None:
    model_id = api.register(write_torchscript(tiny_net(), tmp_path / "m.pt"), card_dict())["id"]
    assert api.predict(model_id, ("x.png", png_bytes(1))).status_code == 200
    assert api.client.delete(f"/v1/models/{model_id}", headers=api.auth).status_code == 204
    assert api.predict(model_id, ("x.png", png_bytes(1))).status_code == 404


def test_a_wrong_key_is_never_answered_from_the_cache(api: Api, tmp_path: Path) -> None:
    model_id = api.register(write_torchscript(tiny_net(), tmp_path / "m.pt"), card_dict())["id"]
    assert api.predict(model_id, ("x.png", png_bytes(1))).status_code == 200
    r = api.client.post(f"/v1/models/{model_id}/predict",
                        headers={"Authorization": "Bearer not-a-key"},
                        files={"file": ("x.png", png_bytes(1))})
    assert r.status_code == 401
