"""The round trip with a real PACS: Orthanc (with its DICOMweb plugin) pushes studies to
RobustDx by C-STORE and by STOW-RS; routing rules diagnose them on a real worker; the TID
1500 SRs go back by C-STORE and by STOW-RS and are stored, parsed and filed by Orthanc in
the original studies. A destination that is down is retried, then the job fails visibly."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file

from app.cli.embedded_broker import free_port
from app.core.dicom.sr import read_findings
from tests.dicom.orthanc import AE_TITLE, Orthanc
from tests.dicom.support import PHI_VALUES, make_dicom, stow_body
from tests.dicom.tools import need, orthanc_plugin
from tests.models.model_files import card_dict, tiny_net, write_torchscript
from tests.support.services import ROOT, Broker, Service

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LABELS = ("effusion", "nodule", "cardiomegaly")


@dataclass
class Pacs:
    svc: Service
    orthanc: Orthanc
    key: str
    model_id: str
    scp_port: int

    def api(self) -> httpx.Client:
        return self.svc.client(self.key)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the DICOM SCP exited")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise RuntimeError("the DICOM SCP did not start")


def _register_model(svc: Service, key: str, workdir: Path) -> str:
    path = write_torchscript(tiny_net(channels=1, outputs=3), workdir / "m.pt", channels=1)
    card = card_dict(LABELS, task="multi-label", channels=1, name="chest-tiny")
    import json

    with svc.client(key) as c:
        r = c.post("/v1/models", files={"file": ("m.pt", path.read_bytes())},
                   data={"card": json.dumps(card)})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, broker: Broker) -> Iterator[Pacs]:
    binary = need("Orthanc")
    plugin = orthanc_plugin()
    workdir = tmp_path_factory.mktemp("pacs")
    broker.flush()
    svc = Service(data_dir=workdir / "data", broker_url=broker.url,
                  extra_env={"ROBUSTDX_DICOM_ROUTE_RETRIES": "1"})
    svc.data_dir.mkdir()
    scp_port = free_port()
    svc.start_api()
    svc.start_worker()
    env = svc.env() | {"ROBUSTDX_DICOM_PORT": str(scp_port), "ROBUSTDX_DICOM_HOST": "127.0.0.1"}
    scp_log = open(svc.data_dir / "scp.log", "wb")  # noqa: SIM115
    scp = subprocess.Popen([sys.executable, "-m", "app.core.dicom.scp"], env=env, cwd=ROOT,
                           stdout=scp_log, stderr=subprocess.STDOUT)
    key = svc.create_tenant("st-quillifer")
    orthanc = Orthanc(workdir / "orthanc", binary, plugin,
                      modalities={"robustdx": ["ROBUSTDX", "127.0.0.1", scp_port]},
                      dicomweb_servers={"robustdx": {
                          "Url": f"{svc.url}/dicomweb/",
                          "HttpHeaders": {"Authorization": f"Bearer {key}"}}})
    try:
        _wait_port(scp_port, scp)
        orthanc.start()
        model_id = _register_model(svc, key, workdir)
        yield Pacs(svc, orthanc, key, model_id, scp_port)
    finally:
        orthanc.stop()
        scp.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            scp.wait(timeout=10)
        if scp.poll() is None:
            scp.kill()
        svc.stop()


def _configure(pacs: Pacs) -> None:
    """The clinical set-up: results must land beside the original studies, so this tenant
    keeps identifiers (de-identification off); Orthanc is accepted from localhost."""
    with pacs.api() as c:
        if c.get("/v1/dicom/aes").json():
            return
        assert c.post("/v1/dicom/aes", json={"ae_title": AE_TITLE, "host": "127.0.0.1"}
                      ).status_code == 201
        assert c.put("/v1/dicom/settings", json={"deidentify": False}).status_code == 200
        dimse = {"kind": "dimse", "ae_title": AE_TITLE, "host": "127.0.0.1",
                 "port": pacs.orthanc.dicom_port}
        stow = {"kind": "stow", "url": f"{pacs.orthanc.url}/dicom-web/studies"}
        down = {"kind": "dimse", "ae_title": "NOBODY", "host": "127.0.0.1", "port": free_port()}
        for modality, destination in (("CT", dimse), ("DX", dimse), ("MR", stow),
                                      ("NM", down)):
            r = c.post("/v1/dicom/rules", json={"modality": modality,
                                                "model_id": pacs.model_id,
                                                "destination": destination})
            assert r.status_code == 201, r.text


def _route_jobs(pacs: Pacs, count: int, timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    with pacs.api() as c:
        while time.monotonic() < deadline:
            jobs = c.get("/v1/jobs", params={"kind": "route"}).json()["items"]
            if len(jobs) >= count and all(
                    j["status"] in ("succeeded", "failed") for j in jobs):
                return list(jobs)
            time.sleep(0.5)
    raise TimeoutError(f"route jobs not done: {jobs}")


def _sr_in_orthanc(orthanc: Orthanc, study_id: str, timeout: float = 60) -> pydicom.Dataset:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for series in orthanc.get(f"/studies/{study_id}/series"):
            if series["MainDicomTags"].get("Modality") == "SR":
                data = orthanc.get(f"/instances/{series['Instances'][0]}/file")
                return pydicom.dcmread(io.BytesIO(data))
        time.sleep(0.5)
    raise TimeoutError("no SR arrived in Orthanc")


def _check_sr(sr: pydicom.Dataset, source: pydicom.Dataset) -> None:
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    findings = read_findings(sr)
    assert sorted(findings) == sorted(LABELS)
    assert all(0.0 <= p <= 1.0 for p, _ in findings.values())
    ref = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_c_store_push_and_sr_back_by_c_store(pacs: Pacs) -> None:
    _configure(pacs)
    ct = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    from models.phantoms import generate
    from models.phantoms.export import phantom_dicom

    chest = phantom_dicom(generate("chest", 1, size=32, seed=3), 0)
    uploaded = [pacs.orthanc.upload(ct), pacs.orthanc.upload(chest)]
    pacs.orthanc.post("/modalities/robustdx/store",
                      {"Resources": [u["ID"] for u in uploaded], "Synchronous": True})
    jobs = _route_jobs(pacs, 2)
    assert sorted(j["status"] for j in jobs) == ["succeeded", "succeeded"], jobs
    assert {j["result"]["sent_to"] for j in jobs} == {
        f"{AE_TITLE}@127.0.0.1:{pacs.orthanc.dicom_port}"}
    for data, up in zip((ct, chest), uploaded, strict=True):
        source = pydicom.dcmread(io.BytesIO(data))
        _check_sr(_sr_in_orthanc(pacs.orthanc, up["ParentStudy"]), source)
    # RobustDx serves its own result back too.
    with pacs.api() as c:
        found = c.get("/dicomweb/instances",
                      params={"SOPClassUID": "1.2.840.10008.5.1.4.1.1.88.33"}).json()
    assert len(found) == 2


def test_dicomweb_push_and_sr_back_by_stow(pacs: Pacs) -> None:
    _configure(pacs)
    mr = Path(str(get_testdata_file("MR_small.dcm"))).read_bytes()
    up = pacs.orthanc.upload(mr)
    before = len(_route_jobs(pacs, 0))
    answer = pacs.orthanc.post("/dicom-web/servers/robustdx/stow",
                               {"Resources": [up["ParentStudy"]]})
    assert answer is not None
    jobs = _route_jobs(pacs, before + 1)
    mine = [j for j in jobs if j["result"] and
            j["result"].get("sent_to", "").endswith("/dicom-web/studies")]
    assert [j["status"] for j in mine] == ["succeeded"], jobs
    _check_sr(_sr_in_orthanc(pacs.orthanc, up["ParentStudy"]), pydicom.dcmread(io.BytesIO(mr)))


def test_a_destination_that_is_down_is_retried_then_fails_visibly(pacs: Pacs) -> None:
    _configure(pacs)
    before = len(_route_jobs(pacs, 0))
    body, headers = stow_body([make_dicom(sop_class="1.2.840.10008.5.1.4.1.1.20",
                                          modality="NM")])
    with pacs.api() as c:
        assert c.post("/dicomweb/studies", content=body, headers=headers).status_code == 200
    jobs = _route_jobs(pacs, before + 1)
    [failed] = [j for j in jobs if j["status"] == "failed"]
    assert "association not accepted" in failed["error"]
    assert "after 2 tries" in failed["error"]
    # Patient data reached no log of any process and no job answer.
    texts = [p.read_text(errors="replace") for p in pacs.svc.data_dir.glob("*.log")]
    texts.append(str(jobs))
    for text in texts:
        for value in PHI_VALUES:
            assert value not in text
    assert os.path.exists(pacs.svc.data_dir / "scp.log")


def test_audit_of_stored_studies_goes_back_as_pdf(pacs: Pacs) -> None:
    """Studies the PACS sent become a dataset; its audit's summary PDF is stored in each
    audited study, served by WADO-RS, and accepted by Orthanc over STOW-RS."""
    from app.core.dicom.send import stow

    _configure(pacs)
    secondary = "1.2.840.10008.5.1.4.1.1.7"  # no routing rule for OT
    studies = [pydicom.uid.generate_uid() for _ in range(2)]
    files = [make_dicom(sop_class=secondary, modality="OT", study=studies[i % 2], seed=i)
             for i in range(6)]
    rows = ["SOPInstanceUID,effusion,nodule,cardiomegaly"] + [
        f"{pydicom.dcmread(io.BytesIO(f)).SOPInstanceUID},{i % 2},{(i // 2) % 2},0"
        for i, f in enumerate(files)]
    body, headers = stow_body(files)
    with pacs.api() as c:
        assert c.post("/dicomweb/studies", content=body, headers=headers).status_code == 200
        r = c.post("/v1/dicom/datasets", json={
            "query": {"Modality": "OT"}, "labels_csv": "\n".join(rows) + "\n"})
        assert r.status_code == 201, r.text
        assert r.json()["count"] == 6
        r = c.post("/v1/audits", json={
            "model_id": pacs.model_id, "dataset_id": r.json()["id"],
            "attacks": [{"name": "fgsm", "params": {"eps": "2/255"}}],
            "analyses": ["quantitative"], "options": {"batch_size": 8, "shard_size": 8}})
        assert r.status_code == 202, r.text
        audit_id = r.json()["id"]
    assert pacs.svc.wait_job(pacs.key, audit_id, timeout=240)["status"] == "succeeded"
    with pacs.api() as c:
        r = c.post(f"/v1/dicom/audits/{audit_id}/results")
        assert r.status_code == 201, r.text
        instances = r.json()["instances"]
        assert sorted(i["study_uid"] for i in instances) == sorted(studies)
        path = httpx.URL(instances[0]["url"]).path
        retrieved = c.get(path)
    from tests.dicom.support import split_multipart

    [data] = split_multipart(retrieved.content, retrieved.headers["content-type"])
    pdf = pydicom.dcmread(io.BytesIO(data))
    assert pdf.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert pdf.StudyInstanceUID == instances[0]["study_uid"]
    assert bytes(pdf.EncapsulatedDocument).startswith(b"%PDF")
    stow(f"{pacs.orthanc.url}/dicom-web/studies", [data])
    found = pacs.orthanc.post("/tools/find", {"Level": "Instance", "Query": {
        "SOPInstanceUID": str(pdf.SOPInstanceUID)}})
    assert len(found) == 1
