"""The model registry over HTTP: every format, bad uploads (each followed by a request that
proves the service still serves), tenancy, delete, downloads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.core.db.migrate import upgrade as upgrade_schema
from models.loading import sha256_file
from tests.app.models_fixtures import (
    MAX_MODEL_BYTES,
    Api,
    api,
    client,
    other_api,
    png_bytes,
)
from tests.models.model_files import (
    architecture_state,
    card_dict,
    tiny_net,
    write_export,
    write_malicious_pickle,
    write_malicious_pth,
    write_onnx,
    write_pth,
    write_safetensors,
    write_torchscript,
)

__all__ = ["api", "client", "other_api"]  # fixtures


def assert_serving(api: Api, model_id: str) -> None:
    """The service still answers a good request after a bad one."""
    response = api.predict(model_id, ("ok.png", png_bytes(7)))
    assert response.status_code == 200, response.text
    probs = [p["probability"] for p in response.json()["predictions"]]
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)


@pytest.fixture
def model_id(api: Api, tmp_path: Path) -> str:
    return str(api.register(write_torchscript(tiny_net(), tmp_path / "good.pt"), card_dict())["id"])


def stored_model_dirs(api: Api) -> set[str]:
    root = api.data_dir / "models"
    return {p.name for p in root.iterdir()} if root.exists() else set()


def leftover_uploads(api: Api) -> list[Path]:
    root = api.data_dir / "uploads"
    return list(root.iterdir()) if root.exists() else []


# ----------------------------------------------------------------------------- formats


FORMATS: dict[str, tuple[Callable[[Path], Path], dict[str, Any]]] = {
    "torchscript": (lambda d: write_torchscript(tiny_net(), d / "m.pt"), {}),
    "torch-export": (lambda d: write_export(tiny_net(), d / "m.pt2", dynamic=False), {}),
    "onnx": (lambda d: write_onnx(tiny_net(), d / "m.onnx"), {}),
    "safetensors": (
        lambda d: write_safetensors(architecture_state(), d / "w.safetensors"),
        {"architecture": "small_cnn"},
    ),
    "pth": (lambda d: write_pth(architecture_state(), d / "w.pth"), {"architecture": "small_cnn"}),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_register_every_format(api: Api, tmp_path: Path, fmt: str) -> None:
    write, extra = FORMATS[fmt]
    path = write(tmp_path)
    response = api.upload(path, card_dict(name=f"tiny-{fmt}", **extra))
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/models/{body['id']}"
    assert body["format"] == fmt
    assert body["sha256"] == sha256_file(path) == body["card"]["sha256"]
    assert body["size_bytes"] == path.stat().st_size
    assert body["info"]["head"] == "softmax"
    assert body["info"]["output_width"] == 2
    assert body["info"]["fixed_batch"] == (2 if fmt == "torch-export" else None)
    # Stored: the file as uploaded and the card with its sha256.
    folder = api.data_dir / "models" / body["id"]
    stored = [p for p in folder.iterdir() if p.name.startswith("model")]
    assert len(stored) == 1
    assert stored[0].read_bytes() == path.read_bytes()
    assert json.loads((folder / "card.json").read_text())["sha256"] == body["sha256"]
    assert leftover_uploads(api) == []
    again = api.client.get(f"/v1/models/{body['id']}", headers=api.auth)
    assert again.status_code == 200
    assert again.json() == body
    download = api.client.get(f"/v1/models/{body['id']}/download", headers=api.auth)
    assert download.status_code == 200
    assert download.content == path.read_bytes()
    assert_serving(api, body["id"])


def test_list_is_tenant_scoped_and_paged(api: Api, other_api: Api, tmp_path: Path) -> None:
    path = write_torchscript(tiny_net(), tmp_path / "m.pt")
    ids = [api.register(path, card_dict(name=f"m{i}"))["id"] for i in range(3)]
    other_api.register(path, card_dict(name="theirs"))
    page = api.client.get("/v1/models", params={"limit": 2}, headers=api.auth).json()
    assert page["total"] == 3
    assert len(page["items"]) == 2
    rest = api.client.get("/v1/models", params={"limit": 2, "offset": 2}, headers=api.auth).json()
    seen = [m["id"] for m in page["items"] + rest["items"]]
    assert sorted(seen) == sorted(ids)
    assert all(m["name"] != "theirs" for m in page["items"] + rest["items"])


# ----------------------------------------------------------------------------- bad uploads


def test_pickle_model_is_refused_and_runs_no_code(api: Api, model_id: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    before = stored_model_dirs(api)
    for path in (
        write_malicious_pickle(tmp_path / "model.pkl", marker),
        write_malicious_pth(tmp_path / "model.pth", marker),
    ):
        response = api.upload(path, card_dict(architecture="small_cnn"))
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "unsafe_model_file"
        assert "pickl" in response.json()["error"]["message"]
        assert not marker.exists()
    assert stored_model_dirs(api) == before
    assert leftover_uploads(api) == []
    assert_serving(api, model_id)


def test_torchscript_with_wrong_number_of_labels(api: Api, model_id: str, tmp_path: Path) -> None:
    path = write_torchscript(tiny_net(outputs=3), tmp_path / "three.pt")
    response = api.upload(path, card_dict())
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_model_file"
    assert "outputs 3 value(s)" in error["message"]
    assert "need 2" in error["message"]
    assert leftover_uploads(api) == []
    assert_serving(api, model_id)


def test_unknown_architecture(api: Api, model_id: str, tmp_path: Path) -> None:
    path = write_safetensors(architecture_state(), tmp_path / "w.safetensors")
    response = api.upload(path, card_dict(architecture="alexnet-9000"))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_card"
    assert "unknown architecture 'alexnet-9000'" in error["message"]
    assert "resnet18" in error["details"]["valid"]
    assert_serving(api, model_id)


def test_card_with_a_missing_field(api: Api, model_id: str, tmp_path: Path) -> None:
    card = card_dict()
    del card["labels"]
    response = api.upload(write_torchscript(tiny_net(), tmp_path / "m.pt"), card)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_card"
    assert "labels: Field required" in error["message"]
    missing = {"loc": "labels", "msg": "Field required", "type": "missing"}
    assert missing in error["details"]["errors"]
    assert leftover_uploads(api) == []
    assert_serving(api, model_id)


@pytest.mark.parametrize(
    ("content", "code"),
    [(b"", "invalid_model_file"), (b"just some text\n", "invalid_model_file")],
)
def test_empty_and_unrecognised_model_files(
    api: Api, model_id: str, content: bytes, code: str
) -> None:
    response = api.upload(None, card_dict(), content=content)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert_serving(api, model_id)


def test_model_over_the_size_limit_is_refused_while_streaming(api: Api, model_id: str) -> None:
    before = stored_model_dirs(api)
    response = api.upload(None, card_dict(), content=b"\0" * (MAX_MODEL_BYTES + 1))
    assert response.status_code == 413
    assert "max_model_bytes" in response.json()["error"]["message"]
    assert leftover_uploads(api) == []
    assert stored_model_dirs(api) == before
    assert_serving(api, model_id)


def test_missing_parts_and_wrong_body(api: Api, model_id: str, tmp_path: Path) -> None:
    path = write_torchscript(tiny_net(), tmp_path / "m.pt")
    no_card = api.client.post(
        "/v1/models", headers=api.auth, files={"file": ("m.pt", path.read_bytes())}
    )
    assert no_card.status_code == 422
    assert "'card'" in no_card.json()["error"]["message"]
    typo = api.client.post(
        "/v1/models",
        headers=api.auth,
        files={"model": ("m.pt", path.read_bytes())},
        data={"card": json.dumps(card_dict())},
    )
    assert typo.status_code == 422
    assert "unexpected form field 'model'" in typo.text
    as_json = api.client.post("/v1/models", headers=api.auth, json=card_dict())
    assert as_json.status_code == 422
    assert "multipart/form-data" in as_json.text
    bad_json = api.upload(path, "{not json")
    assert bad_json.status_code == 422
    assert "not valid JSON" in bad_json.text
    assert leftover_uploads(api) == []
    assert_serving(api, model_id)


# ----------------------------------------------------------------------------- auth and tenancy


def test_no_key_or_wrong_key(api: Api, model_id: str, client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer rdx_wrong"}):
        for method, url in (
            ("GET", "/v1/models"),
            ("GET", f"/v1/models/{model_id}"),
            ("POST", "/v1/models"),
            ("POST", f"/v1/models/{model_id}/predict"),
            ("DELETE", f"/v1/models/{model_id}"),
        ):
            response = client.request(method, url, headers=headers)
            assert response.status_code == 401, (method, url, response.text)
            assert response.json()["error"]["code"] == "unauthenticated"
    assert_serving(api, model_id)


def test_unknown_model_id(api: Api, model_id: str) -> None:
    for method, url in (
        ("GET", "/v1/models/nope"),
        ("DELETE", "/v1/models/nope"),
        ("GET", "/v1/models/nope/download"),
    ):
        response = api.client.request(method, url, headers=api.auth)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    response = api.predict("nope", ("a.png", png_bytes()))
    assert response.status_code == 404
    assert_serving(api, model_id)


def test_another_tenants_model_is_not_found(api: Api, other_api: Api, model_id: str) -> None:
    for method, url in (
        ("GET", f"/v1/models/{model_id}"),
        ("DELETE", f"/v1/models/{model_id}"),
        ("GET", f"/v1/models/{model_id}/download"),
    ):
        response = other_api.client.request(method, url, headers=other_api.auth)
        assert response.status_code == 404, (method, url)
    assert other_api.predict(model_id, ("a.png", png_bytes())).status_code == 404
    assert other_api.client.get("/v1/models", headers=other_api.auth).json()["total"] == 0
    assert_serving(api, model_id)


# ----------------------------------------------------------------------------- delete, download


def test_delete_removes_files_and_evicts(api: Api, model_id: str, tmp_path: Path) -> None:
    assert_serving(api, model_id)  # loads it into the inference cache
    service = api.client.app.state.robustdx.extras["inference"]  # type: ignore[attr-defined]
    assert model_id in service.cached()
    response = api.client.delete(f"/v1/models/{model_id}", headers=api.auth)
    assert response.status_code == 204
    assert model_id not in service.cached()
    assert not (api.data_dir / "models" / model_id).exists()
    assert api.client.get(f"/v1/models/{model_id}", headers=api.auth).status_code == 404
    assert api.predict(model_id, ("a.png", png_bytes())).status_code == 404
    other = api.register(write_torchscript(tiny_net(), tmp_path / "n.pt"), card_dict())
    assert_serving(api, other["id"])


def test_download_exports_reload_to_the_same_predictions(api: Api, tmp_path: Path) -> None:
    card = card_dict(architecture="small_cnn")
    original = api.register(
        write_safetensors(architecture_state(), tmp_path / "w.safetensors"), card
    )
    image = ("x.png", png_bytes(3))
    expected = api.predict(original["id"], image).json()["predictions"]
    for fmt in ("safetensors", "torchscript"):
        response = api.client.get(
            f"/v1/models/{original['id']}/download", params={"format": fmt}, headers=api.auth
        )
        assert response.status_code == 200, response.text
        exported = tmp_path / f"export-{fmt}"
        exported.write_bytes(response.content)
        again = api.register(exported, {**card, "name": f"re-{fmt}"})
        assert again["format"] == fmt
        got = api.predict(again["id"], image).json()["predictions"]
        for a, b in zip(got, expected, strict=True):
            assert a["label"] == b["label"]
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_safetensors_download_needs_an_architecture(api: Api, model_id: str) -> None:
    response = api.client.get(
        f"/v1/models/{model_id}/download", params={"format": "safetensors"}, headers=api.auth
    )
    assert response.status_code == 409
    assert "architecture" in response.json()["error"]["message"]
    bad = api.client.get(
        f"/v1/models/{model_id}/download", params={"format": "pickle"}, headers=api.auth
    )
    assert bad.status_code == 422
    assert_serving(api, model_id)


def test_openapi_documents_the_multipart_bodies(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    upload = doc["paths"]["/v1/models"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["required"] == ["file", "card"]
    predict = doc["paths"]["/v1/models/{model_id}/predict"]["post"]
    assert set(
        predict["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    ) == {"file", "files"}
    assert {"413", "415", "401", "404", "422"} <= set(predict["responses"])


def test_registered_model_gives_the_direct_forward(api: Api, tmp_path: Path) -> None:
    """The registry serves exactly the uploaded network (no silent re-initialisation)."""
    net = tiny_net(seed=5)
    body = api.register(write_torchscript(net, tmp_path / "m.pt"), card_dict())
    from models.card import ModelCard
    from models.imaging import decode_image, to_model_input

    data = png_bytes(11)
    x = to_model_input(
        decode_image(data, max_bytes=1 << 20, max_pixels=1 << 20),
        ModelCard.model_validate(card_dict()),
    )[None]
    with torch.no_grad():
        expected = torch.softmax(net((x - 0.5) / 0.25), dim=1)[0].tolist()
    got = [p["probability"] for p in api.predict(body["id"], ("x.png", data)).json()["predictions"]]
    assert got == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------------------- zoo


def test_zoo_registration_is_idempotent_by_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.zoo
    from app.core.db import ModelRow, get_database
    from app.core.storage import Storage
    from app.core.tenants import create_tenant
    from app.core.zoo import register_zoo
    from models.card import ModelCard
    from models.zoo import ZooEntry

    good = ZooEntry(
        "lesions",
        ModelCard.model_validate(card_dict(name="zoo-lesions", architecture="small_cnn")),
        write_safetensors(architecture_state(seed=1), tmp_path / "lesions.safetensors"),
    )
    broken = ZooEntry(  # a card that does not fit its weights: logged and skipped
        "broken",
        ModelCard.model_validate(card_dict(name="zoo-broken", architecture="resnet18")),
        write_safetensors(architecture_state(seed=2), tmp_path / "broken.safetensors"),
    )
    monkeypatch.setattr(models.zoo, "list_zoo", lambda: [broken, good])
    db = get_database(f"sqlite:///{tmp_path / 'zoo.db'}")
    upgrade_schema(db)
    storage = Storage(tmp_path / "store")
    with db.session() as session:
        tenant_id = create_tenant(session, "dev")[0].id
    first = register_zoo(db, storage, tenant_id)
    again = register_zoo(db, storage, tenant_id)
    assert first == again
    assert len(first) == 1
    with db.session() as session:
        row = session.get(ModelRow, first[0])
        assert row is not None
        assert row.sha256 == sha256_file(good.weights_path)
        assert row.lineage == {"source": "zoo", "zoo_name": "lesions"}
        assert session.query(ModelRow).count() == 1
    assert good.weights_path.exists()  # copied, not moved out of the zoo
