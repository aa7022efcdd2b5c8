"""C-ECHO and C-STORE from dcmtk's echoscu and storescu, as a modality would send them:
registered AE titles are served, anyone else is rejected at association time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from tests.app.models_fixtures import Api
from tests.dicom.support import RT_PLAN, make_dicom, values
from tests.dicom.tools import need, run, scp_server


@pytest.fixture
def scp(hospital: Api) -> Iterator[Any]:
    settings = hospital.client.app.state.settings  # type: ignore[attr-defined]
    with scp_server(settings) as server:
        yield server


def register(api: Api, ae: str, host: str | None = "127.0.0.1") -> None:
    response = api.client.post("/v1/dicom/aes", json={"ae_title": ae, "host": host},
                               headers=api.auth)
    assert response.status_code == 201, response.text


def echo(scp: Any, calling: str, called: str = "ROBUSTDX"):
    return run([need("echoscu"), "-aet", calling, "-aec", called, "127.0.0.1",
                str(scp.test_port)])


def store(scp: Any, calling: str, *files: Path):
    return run([need("storescu"), "-aet", calling, "-aec", "ROBUSTDX", "127.0.0.1",
                str(scp.test_port), *map(str, files)])


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def studies(api: Api) -> list[dict]:
    return api.client.get("/dicomweb/studies", headers=api.auth).json()


def test_echo_from_a_registered_ae(hospital: Api, scp: Any) -> None:
    register(hospital, "MODALITY1")
    result = echo(scp, "MODALITY1")
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_and_wrong_aes_are_rejected(hospital: Api, scp: Any) -> None:
    register(hospital, "MODALITY1")
    stranger = echo(scp, "STRANGER")
    assert stranger.returncode != 0
    assert "Calling AE Title Not Recognized" in stranger.stdout + stranger.stderr
    wrong_called = echo(scp, "MODALITY1", called="SOMEONEELSE")
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stdout + wrong_called.stderr


def test_a_registered_host_must_match(hospital: Api, scp: Any) -> None:
    register(hospital, "FARAWAY", host="10.123.45.67")
    result = echo(scp, "FARAWAY")
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stdout + result.stderr


def test_store_lands_in_the_tenant_store(hospital: Api, other_hospital: Api, scp: Any,
                                         tmp_path: Path) -> None:
    register(hospital, "MODALITY1")
    study = generate_uid()
    files = [write(tmp_path, f"{i}.dcm", make_dicom(study=study, seed=i)) for i in range(2)]
    result = store(scp, "MODALITY1", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    [found] = studies(hospital)
    assert values(found, "00201208") == [2]
    assert values(found, "00120062") == ["YES"]  # de-identified like STOW-RS instances
    found_by_original = hospital.client.get(
        "/dicomweb/studies", params={"StudyInstanceUID": study}, headers=hospital.auth).json()
    assert len(found_by_original) == 1
    assert studies(other_hospital) == []


def test_store_from_a_stranger_stores_nothing(hospital: Api, scp: Any,
                                              tmp_path: Path) -> None:
    register(hospital, "MODALITY1")
    result = store(scp, "STRANGER", write(tmp_path, "a.dcm", make_dicom()))
    assert result.returncode != 0
    assert studies(hospital) == []
    assert not (hospital.data_dir / "dicom").exists()


def test_a_sop_class_we_do_not_accept_is_refused(hospital: Api, scp: Any,
                                                 tmp_path: Path) -> None:
    register(hospital, "MODALITY1")
    plan = write(tmp_path, "plan.dcm", make_dicom(sop_class=RT_PLAN, modality="RTPLAN"))
    result = store(scp, "MODALITY1", plan)
    assert result.returncode != 0
    assert "no presentation context" in (result.stdout + result.stderr).lower()
    assert studies(hospital) == []


def test_ae_titles_are_one_tenant_each(hospital: Api, other_hospital: Api) -> None:
    register(hospital, "MODALITY1")
    response = other_hospital.client.post("/v1/dicom/aes", json={"ae_title": "MODALITY1"},
                                          headers=other_hospital.auth)
    assert response.status_code == 409
    bad = hospital.client.post("/v1/dicom/aes", json={"ae_title": "BAD\\AE"},
                               headers=hospital.auth)
    assert bad.status_code == 422
    listed = hospital.client.get("/v1/dicom/aes", headers=hospital.auth).json()
    assert [a["ae_title"] for a in listed] == ["MODALITY1"]
    assert other_hospital.client.get("/v1/dicom/aes", headers=other_hospital.auth).json() == []
