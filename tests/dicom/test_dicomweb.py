"""DICOMweb over HTTP: STOW-RS answers per instance, refusals store nothing, QIDO matching,
WADO-RS retrieval and metadata, tenant isolation."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from app.core.dicom.deid import Pseudonymizer
from tests.app.models_fixtures import Api, open_client
from tests.dicom.conftest import MAX_INSTANCE, dicom_settings
from tests.dicom.support import (
    MR,
    PHI,
    RT_PLAN,
    make_dicom,
    split_multipart,
    stow_answer,
    stow_body,
    values,
    without,
)


@pytest.fixture
def dicom_client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    """Here on SQLite and on PostgreSQL (the QIDO queries group and page in SQL)."""
    yield from open_client(dicom_settings(tmp_path / "data", database_url))


def stow(api: Api, parts: list[bytes]):
    body, headers = stow_body(parts)
    response = api.client.post("/dicomweb/studies", content=body,
                               headers={**api.auth, **headers})
    return response


def stored_files(api: Api) -> list[Path]:
    return sorted((api.data_dir / "dicom").rglob("*.dcm"))


def qido(api: Api, path: str = "/dicomweb/studies", **params: str) -> list[dict]:
    response = api.client.get(path, params=params, headers=api.auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    return response.json()


def test_stow_stores_and_answers_the_standard_response(hospital: Api) -> None:
    study = generate_uid()
    parts = [make_dicom(study=study, seed=i) for i in range(3)]
    response = stow(hospital, parts)
    assert response.status_code == 200, response.text
    answer = stow_answer(200, response.json())
    assert len(answer.stored) == 3
    assert answer.failed == []
    pseudo_study = stored_study(hospital, study)
    url = values(answer.stored[0], "00081190")[0]
    assert f"/dicomweb/studies/{pseudo_study}/series/" in url
    assert values(response.json(), "00081190")[0].endswith(f"/studies/{pseudo_study}")
    assert len(stored_files(hospital)) == 3


def stored_study(api: Api, original: str) -> str:
    """The study UID as the tenant's store keeps it (de-identification is on)."""
    found = qido(api, StudyInstanceUID=original)
    assert len(found) == 1
    return str(values(found[0], "0020000D")[0])


def test_failures_are_answered_per_instance_and_store_nothing(hospital: Api) -> None:
    good = make_dicom()
    no_uid = without(make_dicom(), "SOPInstanceUID")
    rt_plan = make_dicom(sop_class=RT_PLAN, modality="RTPLAN")
    too_big = make_dicom(size=400)
    assert len(too_big) > MAX_INSTANCE
    response = stow(hospital, [b"this is not DICOM at all", no_uid, rt_plan, too_big, good])
    assert response.status_code == 202, response.text
    answer = stow_answer(202, response.json())
    reasons = [values(item, "00081197")[0] for item in answer.failed]
    assert reasons == [0xC000, 0xA900, 0x0122, 0xA700]
    assert values(answer.failed[2], "00081150") == [RT_PLAN]
    assert len(answer.stored) == 1
    assert len(stored_files(hospital)) == 1
    assert "not a DICOM file" in response.headers["warning"]


def test_nothing_stored_is_409(hospital: Api) -> None:
    response = stow(hospital, [b"\x00" * 300])
    assert response.status_code == 409
    assert [values(i, "00081197")[0] for i in stow_answer(409, response.json()).failed] == [
        0xC000]
    assert stored_files(hospital) == []


def test_duplicates_are_stored_once(hospital: Api) -> None:
    data = make_dicom()
    first = stow(hospital, [data, data])
    second = stow(hospital, [data])
    assert first.status_code == 200
    assert second.status_code == 200
    assert len(stow_answer(200, first.json()).stored) == 2
    assert len(stored_files(hospital)) == 1
    assert len(qido(hospital, "/dicomweb/instances")) == 1


@pytest.mark.parametrize(("content_type", "status"), [
    ("application/dicom", 415),
    ("multipart/form-data; boundary=abc", 415),
    ('multipart/related; type="application/dicom+json"; boundary=abc', 415),
])
def test_bodies_that_are_not_multipart_related_dicom(hospital: Api, content_type: str,
                                                     status: int) -> None:
    response = hospital.client.post("/dicomweb/studies", content=make_dicom(),
                                    headers={**hospital.auth, "Content-Type": content_type})
    assert response.status_code == status
    assert response.json()["error"]["code"] == "invalid_image"
    assert stored_files(hospital) == []


def test_too_many_parts_and_declared_size_are_413(hospital: Api) -> None:
    response = stow(hospital, [make_dicom(seed=i, size=8) for i in range(9)])  # limit 8
    assert response.status_code == 413
    body, headers = stow_body([make_dicom()])
    response = hospital.client.post(
        "/dicomweb/studies", content=body,
        headers={**hospital.auth, **headers, "Content-Length": str(10**13)})
    assert response.status_code == 413


def test_stow_needs_a_key(hospital: Api) -> None:
    body, headers = stow_body([make_dicom()])
    response = hospital.client.post("/dicomweb/studies", content=body, headers=headers)
    assert response.status_code == 401
    assert stored_files(hospital) == []


def test_qido_matching(hospital: Api) -> None:
    # The Basic Profile empties dates; the Full Dates option keeps them to match on.
    hospital.client.put("/v1/dicom/settings", json={"keep_dates": True}, headers=hospital.auth)
    one, two = generate_uid(), generate_uid()
    stow(hospital, [make_dicom(study=one, study_date="20240110"),
                    make_dicom(study=one, study_date="20240110", sop_class=MR, modality="MR"),
                    make_dicom(study=two, study_date="20240320", patient_id="OTHER-1")])
    # The store keeps pseudonyms; the PACS's identifiers still find the studies.
    assert len(qido(hospital, PatientID=PHI["PatientID"])) == 1
    assert len(qido(hospital, PatientID="OTHER-1")) == 1
    assert len(qido(hospital, PatientID="RDX-*")) == 2
    assert qido(hospital, PatientID="nobody") == []
    by_date = qido(hospital, StudyDate="20240101-20240131")
    assert [values(s, "0020000D")[0] for s in by_date] == [stored_study(hospital, one)]
    assert len(qido(hospital, StudyDate="20240201-")) == 1
    assert len(qido(hospital, StudyDate="-20240320")) == 2
    assert len(qido(hospital, StudyDate="20240320")) == 1
    assert qido(hospital, StudyDate="20250101-") == []
    mr = qido(hospital, Modality="MR")
    assert len(mr) == 1
    assert values(mr[0], "00080061") == ["CT", "MR"]
    assert values(mr[0], "00201208") == [2]
    assert values(mr[0], "00201206") == [2]
    assert len(qido(hospital, **{"00080061": "CT"})) == 2
    page = qido(hospital, limit="1", offset="1")
    assert len(page) == 1
    assert values(page[0], "0020000D")[0] == stored_study(hospital, two)


def test_qido_series_and_instances_levels(hospital: Api) -> None:
    study = generate_uid()
    series = generate_uid()
    stow(hospital, [make_dicom(study=study, series=series, seed=i) for i in range(2)]
         + [make_dicom(study=study, sop_class=MR, modality="MR")])
    stored = stored_study(hospital, study)
    found = qido(hospital, f"/dicomweb/studies/{stored}/series")
    assert sorted(values(s, "00080060")[0] for s in found) == ["CT", "MR"]
    ct = next(s for s in found if values(s, "00080060") == ["CT"])
    assert values(ct, "00201209") == [2]
    ct_series = values(ct, "0020000E")[0]
    instances = qido(hospital, f"/dicomweb/studies/{stored}/series/{ct_series}/instances")
    assert len(instances) == 2
    assert all(values(i, "00120062") == ["YES"] for i in instances)  # PatientIdentityRemoved
    # The original UIDs work in the path too.
    assert len(qido(hospital, f"/dicomweb/studies/{study}/series/{series}/instances")) == 2


@pytest.mark.parametrize("params", [
    {"StudyDate": "2024-01-10"}, {"StudyDate": "20241301"}, {"StudyDate": "-"},
    {"PatientsName": "x"}, {"00100010": "x"}, {"limit": "0"}, {"offset": "-1"},
    {"limit": "ten"},
])
def test_qido_refuses_malformed_queries(hospital: Api, params: dict[str, str]) -> None:
    response = hospital.client.get("/dicomweb/studies", params=params, headers=hospital.auth)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


def test_wado_retrieves_what_was_stored(hospital: Api) -> None:
    study = generate_uid()
    parts = [make_dicom(study=study, seed=i) for i in range(2)]
    stow(hospital, parts)
    stored = stored_study(hospital, study)
    response = hospital.client.get(f"/dicomweb/studies/{stored}", headers={
        **hospital.auth, "Accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 200
    files = split_multipart(response.content, response.headers["content-type"])
    datasets = [pydicom.dcmread(io.BytesIO(f)) for f in files]
    assert {str(d.StudyInstanceUID) for d in datasets} == {stored}
    originals = sorted(pydicom.dcmread(io.BytesIO(p)).pixel_array.sum() for p in parts)
    assert sorted(d.pixel_array.sum() for d in datasets) == originals
    first = datasets[0]
    one = hospital.client.get(
        f"/dicomweb/studies/{stored}/series/{first.SeriesInstanceUID}/instances/"
        f"{first.SOPInstanceUID}", headers=hospital.auth)
    [single] = split_multipart(one.content, one.headers["content-type"])
    assert pydicom.dcmread(io.BytesIO(single)).SOPInstanceUID == first.SOPInstanceUID
    meta = hospital.client.get(f"/dicomweb/studies/{stored}/metadata", headers=hospital.auth)
    assert meta.status_code == 200
    assert len(meta.json()) == 2
    pixel = meta.json()[0]["7FE00010"]
    assert "BulkDataURI" in pixel
    assert "InlineBinary" not in pixel
    assert values(meta.json()[0], "0020000D") == [stored]


def test_wado_refuses_other_media_types(hospital: Api) -> None:
    study = generate_uid()
    stow(hospital, [make_dicom(study=study)])
    response = hospital.client.get(f"/dicomweb/studies/{study}",
                                   headers={**hospital.auth, "Accept": "image/jpeg"})
    assert response.status_code == 422


def test_tenants_do_not_see_each_other(hospital: Api, other_hospital: Api) -> None:
    study = generate_uid()
    stow(hospital, [make_dicom(study=study)])
    stored = stored_study(hospital, study)
    assert qido(other_hospital) == []
    response = other_hospital.client.get(f"/dicomweb/studies/{stored}",
                                         headers=other_hospital.auth)
    assert response.status_code == 404


def test_deidentification_can_be_turned_off(hospital: Api) -> None:
    response = hospital.client.put("/v1/dicom/settings", json={"deidentify": False},
                                   headers=hospital.auth)
    assert response.json() == {"deidentify": False, "keep_dates": False}
    study = generate_uid()
    stow(hospital, [make_dicom(study=study)])
    [found] = qido(hospital, StudyInstanceUID=study)
    assert values(found, "0020000D") == [study]
    assert values(found, "00100020") == [PHI["PatientID"]]


def test_the_pseudonym_matches_the_tenant_secret(hospital: Api) -> None:
    from sqlalchemy import create_engine, text

    study = generate_uid()
    stow(hospital, [make_dicom(study=study)])
    engine = create_engine(hospital.client.app.state.settings.resolved_database_url  # type: ignore[attr-defined]
                           .replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        secrets = conn.execute(text("SELECT secret FROM dicom_settings")).scalars().all()
    engine.dispose()
    # Other tenants' secrets may be there too (PostgreSQL); one of them made this UID.
    assert stored_study(hospital, study) in {Pseudonymizer(s).uid(study) for s in secrets}
