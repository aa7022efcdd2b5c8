"""Datasets built from stored studies: a QIDO query, a labels CSV keyed by Study or SOP
Instance UID (as the PACS knows them), de-identified copies, burned-in annotation."""

from __future__ import annotations

import io

import pydicom
from pydicom.uid import generate_uid

from tests.app.models_fixtures import Api
from tests.dicom.support import MR, PHI_VALUES, make_dicom, stow_body


def stow(api: Api, parts: list[bytes]) -> None:
    body, headers = stow_body(parts)
    r = api.client.post("/dicomweb/studies", content=body, headers={**api.auth, **headers})
    assert r.status_code == 200, r.text


def build(api: Api, **body: object):
    return api.client.post("/v1/dicom/datasets", json=body, headers=api.auth)


def test_study_keyed_labels(hospital: Api) -> None:
    one, two = generate_uid(), generate_uid()
    stow(hospital, [make_dicom(study=one, seed=i) for i in range(3)]
         + [make_dicom(study=two, seed=9)])
    r = build(hospital, name="pacs", labels_csv=f"StudyInstanceUID,label\n{one},effusion\n"
                                                 f"{two},normal\n")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["count"] == 4
    assert body["labels"] == ["effusion", "normal"]
    assert body["label_counts"] == {"effusion": 3, "normal": 1}
    assert body["format"] == "dicom"


def test_sop_keyed_labels_and_a_query(hospital: Api) -> None:
    ct = [make_dicom(seed=i) for i in range(2)]
    mr = [make_dicom(sop_class=MR, modality="MR", seed=5 + i) for i in range(2)]
    stow(hospital, ct + mr)
    sops = [str(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID) for d in mr]
    r = build(hospital, query={"Modality": "MR"},
              labels_csv=f"SOPInstanceUID,label\n{sops[0]},a\n{sops[1]},b\n")
    assert r.status_code == 201, r.text
    assert r.json()["count"] == 2
    assert r.json()["label_counts"] == {"a": 1, "b": 1}


def test_copies_are_deidentified_even_when_the_store_is_not(hospital: Api) -> None:
    hospital.client.put("/v1/dicom/settings", json={"deidentify": False}, headers=hospital.auth)
    study = generate_uid()
    stow(hospital, [make_dicom(study=study)])
    r = build(hospital, labels_csv=f"StudyInstanceUID,label\n{study},x\n{study},x\n")
    assert r.status_code == 201, r.text
    files = list((hospital.data_dir / "datasets" / r.json()["id"]).rglob("*"))
    dicoms = [f for f in files if f.is_file() and f.read_bytes()[128:132] == b"DICM"]
    assert len(dicoms) == 1
    for path in dicoms:
        for value in PHI_VALUES:
            assert value.encode() not in path.read_bytes()


def test_refusals(hospital: Api) -> None:
    study = generate_uid()
    stow(hospital, [make_dicom(study=study, burned_in="YES")])
    csv = f"StudyInstanceUID,label\n{study},a\n"
    burned = build(hospital, labels_csv=csv)
    assert burned.status_code == 422
    assert "burned-in" in burned.json()["error"]["message"]
    assert build(hospital, labels_csv=csv, allow_burned_in=True).status_code == 201
    no_key = build(hospital, labels_csv="file,label\nx,a\n")
    assert no_key.status_code == 422
    missing = build(hospital, labels_csv=f"StudyInstanceUID,label\n{generate_uid()},a\n")
    assert missing.status_code == 422
    assert missing.json()["error"]["details"]["lines"] == [2]
    nothing = build(hospital, query={"Modality": "US"}, labels_csv=csv)
    assert nothing.status_code == 422
    bad_query = build(hospital, query={"Colour": "red"}, labels_csv=csv)
    assert bad_query.status_code == 422
