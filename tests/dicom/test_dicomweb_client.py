"""The Python DICOMweb client (dicomweb-client) against our routes on a real server:
store, search, retrieve, metadata."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import uvicorn
from pydicom.uid import generate_uid

from app.api.main import create_app
from app.cli.embedded_broker import free_port
from tests.app.models_fixtures import make_settings
from tests.dicom.support import PHI, make_dicom

dicomweb_client = pytest.importorskip("dicomweb_client")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    settings = make_settings(tmp_path / "data", broker_url="redis://127.0.0.1:1/0")
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                            log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def client(server: str):
    import httpx

    r = httpx.post(f"{server}/v1/tenants", json={"name": "st-quillifer"},
                   headers={"Authorization": "Bearer dev-admin-key"})
    assert r.status_code == 201, r.text
    return dicomweb_client.DICOMwebClient(
        url=f"{server}/dicomweb", headers={"Authorization": f"Bearer {r.json()['api_key']}"})


def test_store_search_retrieve(client) -> None:
    study, series_uid = generate_uid(), generate_uid()
    datasets = [pydicom.dcmread(io.BytesIO(make_dicom(study=study, series=series_uid, seed=i)))
                for i in range(2)]
    answer = client.store_instances(datasets)
    assert len(answer.ReferencedSOPSequence) == 2
    assert "FailedSOPSequence" not in answer
    [found] = client.search_for_studies(search_filters={"PatientID": PHI["PatientID"]})
    stored_study = found["0020000D"]["Value"][0]
    assert stored_study != study  # de-identified on ingest
    assert found["00201208"]["Value"] == [2]
    [series] = client.search_for_series(stored_study)
    instances = client.search_for_instances(stored_study, series["0020000E"]["Value"][0])
    assert len(instances) == 2
    first = instances[0]
    sop = first["00080018"]["Value"][0]
    retrieved = client.retrieve_instance(stored_study, series["0020000E"]["Value"][0], sop)
    assert retrieved.SOPInstanceUID == sop
    assert retrieved.PatientIdentityRemoved == "YES"
    pixel_sums = sorted(int(d.pixel_array.sum()) for d in datasets)
    whole = client.retrieve_study(stored_study)
    assert sorted(int(d.pixel_array.sum()) for d in whole) == pixel_sums
    metadata = client.retrieve_study_metadata(stored_study)
    assert len(metadata) == 2
    assert {m["00080018"]["Value"][0] for m in metadata} == {
        i["00080018"]["Value"][0] for i in instances}


def test_bad_queries_raise(client) -> None:
    from requests.exceptions import HTTPError

    with pytest.raises(HTTPError):
        client.search_for_studies(search_filters={"StudyDate": "yesterday"})
