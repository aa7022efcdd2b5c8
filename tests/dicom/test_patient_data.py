"""Patient data never reaches logs, error messages, answers or the store (with
de-identification on): every path that touches a header is exercised with known values
planted in the files, and all of it is searched for them."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE

from app.api.routes.dicomweb import ACCESS_LOG_FILTER
from tests.app.models_fixtures import Api
from tests.dicom.support import PHI, PHI_VALUES, RT_PLAN, make_dicom, stow_body, without
from tests.dicom.tools import scp_server


def _no_phi(text: str | bytes, where: str) -> None:
    haystack = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    for value in PHI_VALUES:
        assert value.encode() not in haystack, f"{value!r} found in {where}"


def test_no_patient_data_anywhere(hospital: Api, caplog: pytest.LogCaptureFixture,
                                  tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    body, headers = stow_body([make_dicom(), without(make_dicom(), "SOPInstanceUID"),
                               make_dicom(sop_class=RT_PLAN, modality="RTPLAN"),
                               make_dicom(size=400), b"garbage"])
    r = hospital.client.post("/dicomweb/studies", content=body,
                             headers={**hospital.auth, **headers})
    assert r.status_code == 202
    answers += [r.text, str(r.headers)]
    for params in ({"PatientID": PHI["PatientID"]}, {"PatientName": PHI["PatientName"]},
                   {"StudyDate": PHI["PatientBirthDate"] + "x"}):
        r = hospital.client.get("/dicomweb/studies", params=params, headers=hospital.auth)
        answers.append(r.text)
    study = r = hospital.client.get("/dicomweb/studies", headers=hospital.auth).json()[0]
    uid = study["0020000D"]["Value"][0]
    for path in (f"/dicomweb/studies/{uid}", f"/dicomweb/studies/{uid}/metadata"):
        r = hospital.client.get(path, headers=hospital.auth)
        assert r.status_code == 200
        answers.append(r.content.decode("latin-1"))
    r = hospital.client.post("/v1/dicom/datasets", headers=hospital.auth, json={
        "labels_csv": f"StudyInstanceUID,label\n{PHI['PatientID']},a\n"})
    assert r.status_code == 422
    answers.append(r.text)
    _dimse(hospital)
    for text in answers:
        _no_phi(text, "an answer")
    # The test's own HTTP client logs its URLs (the hospital's side, not ours).
    server_logs = "\n".join(r.getMessage() for r in caplog.records
                            if not r.name.startswith("httpx"))
    _no_phi(server_logs, "the logs")
    assert "refused an instance" in server_logs
    for stored in (hospital.data_dir / "dicom").rglob("*.dcm"):
        _no_phi(stored.read_bytes(), "a stored file")
        assert pydicom.dcmread(stored).PatientIdentityRemoved == "YES"


def _dimse(api: Api) -> None:
    assert api.client.post("/v1/dicom/aes", json={"ae_title": "MODALITY1"},
                           headers=api.auth).status_code == 201
    settings = api.client.app.state.settings  # type: ignore[attr-defined]
    with scp_server(settings) as server:
        ae = AE(ae_title="MODALITY1")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
        assoc = ae.associate("127.0.0.1", server.test_port, ae_title="ROBUSTDX")
        assert assoc.is_established
        good = pydicom.dcmread(io.BytesIO(make_dicom()))
        bad = pydicom.dcmread(io.BytesIO(make_dicom()))
        bad.StudyInstanceUID = "not-a-uid"
        assert assoc.send_c_store(good).Status == 0x0000
        assert assoc.send_c_store(bad).Status == 0xA900
        assoc.release()


def test_access_logs_withhold_dicomweb_queries() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET",
                                f"/dicomweb/studies?PatientID={PHI['PatientID']}", "1.1", 200),
                               None)
    assert ACCESS_LOG_FILTER.filter(record)
    _no_phi(record.getMessage(), "the access log")
    assert "/dicomweb/studies?<query withheld>" in record.getMessage()
