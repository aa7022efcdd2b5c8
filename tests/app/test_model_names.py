"""Model names are unique per tenant: a second upload of a taken name is 409 and stores
nothing; other tenants and deleted names are free; a bad file is 422 whatever its name."""

from __future__ import annotations

from pathlib import Path

from tests.app.models_fixtures import Api, api, client, other_api
from tests.models.model_files import card_dict, tiny_net, write_malicious_pickle, write_torchscript

__all__ = ["api", "client", "other_api"]  # fixtures


def _files(api: Api) -> set[str]:
    return {str(p.relative_to(api.data_dir)) for p in api.data_dir.rglob("*")
            if p.is_file() and "robustdx.db" not in p.name}


def test_a_taken_name_is_409_and_stores_nothing(api: Api, other_api: Api, tmp_path: Path) -> None:
    path = write_torchscript(tiny_net(), tmp_path / "m.pt")
    first = api.register(path, card_dict(name="chest-v1"))
    before = _files(api)
    response = api.upload(path, card_dict(name="chest-v1"))
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["details"] == {"name": "chest-v1", "model_id": first["id"]}
    assert _files(api) == before
    listed = api.client.get("/v1/models", headers=api.auth).json()
    assert [m["id"] for m in listed["items"]] == [first["id"]]
    # Another name, another tenant: both fine.
    assert api.upload(path, card_dict(name="chest-v2")).status_code == 201
    assert other_api.upload(path, card_dict(name="chest-v1")).status_code == 201


def test_a_deleted_name_is_free_again(api: Api, tmp_path: Path) -> None:
    path = write_torchscript(tiny_net(), tmp_path / "m.pt")
    first = api.register(path, card_dict(name="derm"))
    assert api.client.delete(f"/v1/models/{first['id']}", headers=api.auth).status_code == 204
    assert api.upload(path, card_dict(name="derm")).status_code == 201


def test_a_bad_file_is_422_even_with_a_taken_name(api: Api, tmp_path: Path) -> None:
    api.register(write_torchscript(tiny_net(), tmp_path / "m.pt"), card_dict(name="derm"))
    bad = write_malicious_pickle(tmp_path / "x.pkl", tmp_path / "marker")
    response = api.upload(bad, card_dict(name="derm", architecture="small_cnn"))
    assert response.status_code == 422


def test_names_the_service_gives_never_collide(api: Api, tmp_path: Path) -> None:
    from app.core.db import get_database
    from app.core.registry import unused_name
    from app.core.tenants import authenticate

    path = write_torchscript(tiny_net(), tmp_path / "m.pt")
    api.register(path, card_dict(name="derm (pgd_at)"))
    api.register(path, card_dict(name="derm (pgd_at) #2"))
    db = get_database(f"sqlite:///{(api.data_dir / 'robustdx.db').resolve()}")
    with db.session() as session:
        tenant_id = authenticate(session, f"Bearer {api.key}").id
        assert unused_name(session, tenant_id, "derm (pgd_at)") == "derm (pgd_at) #3"
        assert unused_name(session, tenant_id, "chest") == "chest"
        long = unused_name(session, tenant_id, "d" * 300)
        assert long == "d" * 200
