"""An audit of a model served by a real Triton (PyTriton in a side venv of the system
python3.11), through the API and a worker: Square and the perturbation benchmark only,
every query counted against Triton's own counter, and a budget that stops the audit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.pytriton_side import SideEnvError, TritonServer, ensure_side_venv, export_probabilities
from tests.integration.conftest import SIZE, TinyModel
from tests.support.services import Broker, Service, running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SQUARE = {"name": "square", "params": {"eps": "8/255", "queries": 20}}
PERTURBATIONS = {"name": "perturbations", "params": {
    "perturbations": ["gaussian_noise", "brightness"], "severities": [1, 3],
    "sequences": ["gaussian_noise"], "frames": 4}}


@pytest.fixture(scope="module")
def triton(tiny_derm: TinyModel, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[TritonServer]:
    folder = tmp_path_factory.mktemp("triton")
    try:
        python = ensure_side_venv()
        script = export_probabilities(tiny_derm.model, folder / "model.pt", (3, SIZE, SIZE))
        server = TritonServer(python, script, (3, SIZE, SIZE), 2, log=folder / "triton.log")
        server.start()
    except SideEnvError as exc:
        pytest.skip(f"no PyTriton side environment here: {exc}")
    yield server
    server.stop()


@pytest.fixture
def remote_service(tmp_path: Path, broker: Broker) -> Iterator[Service]:
    with running_service(tmp_path / "data", broker, extra_env={
        "ROBUSTDX_REMOTE_ALLOWED_HOSTS": json.dumps(["127.0.0.1"]),
        "ROBUSTDX_REMOTE_ALLOW_PRIVATE_NETWORKS": "true",
        "ROBUSTDX_REMOTE_QUERY_RATE": "0", "ROBUSTDX_REMOTE_MAX_QUERY_RATE": "0",
    }) as svc:
        yield svc


def test_audit_of_a_triton_served_model(remote_service: Service, triton: TritonServer,
                                        tiny_derm: TinyModel) -> None:
    svc = remote_service
    key = svc.create_tenant()
    with svc.client(key) as c:
        r = c.post("/v1/remote-models", json={"url": triton.url, "model": triton.name,
                                               "card": tiny_derm.card})
        assert r.status_code == 201, r.text
        model_id = r.json()["id"]
        with tiny_derm.archive.open("rb") as fh:
            r = c.post("/v1/datasets", files={"file": ("d.zip", fh)},
                       data={"format": "imagefolder"})
        dataset_id = r.json()["id"]
        refused = c.post("/v1/audits", json={"model_id": model_id, "dataset_id": dataset_id,
                                             "attacks": [{"name": "fgsm"}]})
        assert refused.status_code == 422
        body = {"model_id": model_id, "dataset_id": dataset_id, "seed": 1,
                "attacks": [SQUARE], "analyses": [{"name": "quantitative"}, PERTURBATIONS],
                "options": {"max_images": 32, "query_budget": 50_000}}
        before = triton.inference_count()
        r = c.post("/v1/audits", json=body)
        assert r.status_code == 202, r.text
        audit_id = r.json()["id"]
    done = svc.wait_job(key, audit_id, timeout=400)
    assert done["status"] == "succeeded", done
    with svc.client(key) as c:
        report = c.get(f"/v1/audits/{audit_id}/report").json()
    (square,) = report["attacks"].values()
    assert square["adversarial"]["accuracy"] <= square["clean"]["accuracy"]
    assert report["sections"]["perturbations"]["applicable"] is True
    assert report["sections"]["quantitative"]["applicable"] is True
    provenance = report["provenance"]
    assert provenance["parameters"]["options"]["min_eps"] is False
    assert provenance["shards"] == 1
    sent = provenance["timings"]["remote_queries"]
    # Every image the audit sent is one Triton ran, by Triton's own count.
    assert sent == triton.inference_count() - before
    assert 32 <= sent <= 50_000

    with svc.client(key) as c:
        r = c.post("/v1/audits", json={**body, "options": {"max_images": 32,
                                                           "query_budget": 40}})
        starved = r.json()["id"]
    done = svc.wait_job(key, starved, timeout=200)
    assert done["status"] == "failed"
    assert "query budget of 40 images is used up" in done["error"]
