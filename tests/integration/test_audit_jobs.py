"""Audits through the real API, a real Redis and real worker processes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.integration.conftest import TinyModel
from tests.support.services import Service

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

PGD8 = "pgd:eps=8/255,steps=5"


def _register(svc: Service, key: str, tiny: TinyModel) -> tuple[str, str]:
    with svc.client(key) as c:
        with tiny.weights.open("rb") as fh:
            r = c.post("/v1/models", files={"file": (tiny.weights.name, fh)},
                       data={"card": json.dumps(tiny.card)})
        assert r.status_code == 201, r.text
        model_id = r.json()["id"]
        with tiny.archive.open("rb") as fh:
            fmt = "imagefolder" if tiny.card["task"] == "single-label" else "csv"
            r = c.post("/v1/datasets", files={"file": ("d.zip", fh)}, data={"format": fmt})
        assert r.status_code == 201, r.text
        return model_id, r.json()["id"]


def _audit(svc: Service, key: str, model_id: str, dataset_id: str, **extra: object) -> str:
    body = {
        "model_id": model_id, "dataset_id": dataset_id,
        "attacks": [{"name": "fgsm", "params": {"eps": "8/255"}},
                    {"name": "pgd", "params": {"eps": ["2/255", "8/255"], "steps": 5}}],
        "analyses": ["quantitative", "clinical", "sanity"],
        "seed": 3,
        "options": {"batch_size": 32, "shard_size": 32, "min_eps": False},
    } | extra
    with svc.client(key) as c:
        r = c.post("/v1/audits", json=body)
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/v1/audits/{r.json()['id']}"
        return str(r.json()["id"])


def test_model_check_job_runs_on_a_worker(service: Service, tiny_derm: TinyModel) -> None:
    key = service.create_tenant()
    model_id, _ = _register(service, key, tiny_derm)
    with service.client(key) as c:
        job = c.post(f"/v1/models/{model_id}/check").json()
    done = service.wait_job(key, job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    assert done["result"]["output_shape"] == [2, 1]
    assert done["result"]["head"] == "binary-logit"
    assert done["result"]["device"] == "cpu"
    assert done["result"]["finite"] is True


def test_audit_report_values_and_artifacts(service: Service, tiny_derm: TinyModel) -> None:
    key = service.create_tenant()
    model_id, dataset_id = _register(service, key, tiny_derm)
    audit_id = _audit(service, key, model_id, dataset_id,
                      policy={"min_accuracy": {PGD8: 0.95}, "min_clean_accuracy": 0.5})
    done = service.wait_job(key, audit_id, timeout=300)
    assert done["status"] == "succeeded", done
    with service.client(key) as c:
        report = c.get(f"/v1/audits/{audit_id}/report").json()
        schema = c.get("/v1/schemas/report").json()
        junit = c.get(f"/v1/audits/{audit_id}/report.xml").text
        html = c.get(f"/v1/audits/{audit_id}/report.html").text
        zipped = c.get(f"/v1/audits/{audit_id}/artifacts/adversarial.zip").content
        other = service.create_tenant()
    import jsonschema

    jsonschema.validate(report, schema)
    pgd = report["attacks"][PGD8]
    clean_acc = pgd["clean"]["accuracy"]
    assert clean_acc > 0.6  # the tiny model learnt something
    assert pgd["adversarial"]["accuracy"] < clean_acc
    assert 0.0 <= pgd["fooling_rate"] <= 1.0
    weak = report["attacks"]["pgd:eps=2/255,steps=5"]["adversarial"]["accuracy"]
    assert pgd["adversarial"]["accuracy"] <= weak + 1e-9

    # The adversarial PNGs still fool the model at the rate the report states.
    model = tiny_derm.model
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(PGD8.replace("/", "_") + "/"))
        assert len(names) == tiny_derm.test_images.shape[0]
        adv = torch.stack([
            torch.from_numpy(np.array(Image.open(io.BytesIO(zf.read(n))).convert("RGB")))
            .permute(2, 0, 1).float() / 255.0 for n in names
        ])
    with torch.inference_mode():
        clean_pred = model.predict(tiny_derm.test_images)
        adv_pred = model.predict(adv)
    assert np.linalg.norm((adv - tiny_derm.test_images).numpy().ravel(), np.inf) <= 8 / 255 + 1e-6
    fooling = float((clean_pred != adv_pred).double().mean())
    assert fooling == pytest.approx(pgd["fooling_rate"], abs=1e-9)

    # The policy: PGD at 8/255 cannot keep 95% accuracy; clean accuracy passes.
    suite = ET.fromstring(junit)
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failing = {name for name, c in cases.items() if c.find("failure") is not None}
    assert any("min_accuracy" in n and "8/255" in n for n in failing), failing
    assert not any("min_clean_accuracy" in n for n in failing), failing
    assert report["summary"]["verdict"] == "fail"
    assert "<html" in html.lower()
    assert "tiny-derm" in html

    with service.client(other) as c:
        assert c.get(f"/v1/audits/{audit_id}").status_code == 404
        assert c.get(f"/v1/audits/{audit_id}/report").status_code == 404
        assert c.get(f"/v1/audits/{audit_id}/report.sig").status_code == 404
        assert c.get(f"/v1/audits/{audit_id}/fhir").status_code == 404

    _check_signed_evidence(service, key, audit_id, tmp_path=service.data_dir.parent)
    _check_fhir_summary(service, key, audit_id, report)


def _check_signed_evidence(service: Service, key: str, audit_id: str, tmp_path: Path) -> None:
    """The filed bundle verifies offline with the published key; one changed byte fails."""
    from app.core.signing import verify

    folder = tmp_path / "evidence"
    folder.mkdir()
    with service.client(key) as c:
        for name in ("report", "report.html", "report.xml", "report.sig"):
            response = c.get(f"/v1/audits/{audit_id}/{name}")
            assert response.status_code == 200, response.text
            (folder / ("report.json" if name == "report" else name)).write_bytes(response.content)
        public = c.get("/v1/signing-key")
    assert public.status_code == 200
    (folder / "public.pem").write_bytes(public.content)
    files = {n: (folder / n).read_bytes() for n in ("report.json", "report.html", "report.xml")}
    bundle = verify((folder / "report.sig").read_bytes(), public.content, files)
    assert bundle["audit_id"] == audit_id
    assert "adversarial.zip" in bundle["artifacts"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", "audit", "verify", *args],
                              capture_output=True, text=True, cwd=ROOT, check=False)

    ok = cli(str(folder / "report.json"), str(folder / "report.sig"), "--key",
             str(folder / "public.pem"), "--also", str(folder / "report.xml"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"verified: audit {audit_id}, 2 file(s) unchanged")
    tampered = bytearray(files["report.json"])
    tampered[len(tampered) // 2] ^= 0x20
    (folder / "report.json").write_bytes(bytes(tampered))
    bad = cli(str(folder / "report.json"), str(folder / "report.sig"), "--key",
              str(folder / "public.pem"))
    assert bad.returncode == 1
    assert "NOT VERIFIED: report.json was changed after it was signed" in bad.stderr
    not_a_sig = cli(str(folder / "report.json"), str(folder / "report.xml"), "--key",
                    str(folder / "public.pem"))
    assert not_a_sig.returncode == 3
    assert "not a RobustDx evidence signature" in not_a_sig.stderr


def _check_fhir_summary(service: Service, key: str, audit_id: str, report: dict) -> None:
    from fhir.resources.R4B.bundle import Bundle

    with service.client(key) as c:
        response = c.get(f"/v1/audits/{audit_id}/fhir")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(response.json())
    values = {e.resource.code.coding[0].code: float(e.resource.valueQuantity.value)
              for e in bundle.entry if e.resource.get_resource_type() == "Observation"}
    assert values[f"accuracy[{PGD8}]"] == pytest.approx(
        report["attacks"][PGD8]["adversarial"]["accuracy"], abs=1e-6)
    assert values["clean_accuracy"] == pytest.approx(report["summary"]["clean_accuracy"], abs=1e-6)


def test_worker_killed_mid_audit_still_completes_with_same_numbers(
    service: Service, tiny_derm: TinyModel
) -> None:
    key = service.create_tenant()
    model_id, dataset_id = _register(service, key, tiny_derm)
    slow = {"attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 60}}],
            "options": {"batch_size": 8, "shard_size": 16, "min_eps": False}}
    reference = _audit(service, key, model_id, dataset_id, **slow)
    assert service.wait_job(key, reference, timeout=400)["status"] == "succeeded"

    victim = _audit(service, key, model_id, dataset_id, **slow)
    # Wait until the worker is inside a shard, then kill it without warning.
    deadline = time.monotonic() + 120
    with service.client(key) as c:
        while time.monotonic() < deadline:
            status = c.get(f"/v1/audits/{victim}").json()
            if status["stage"] == "attacking" and status["progress"] > 0.1:
                break
            time.sleep(0.2)
    service.kill_worker(service.workers[0])
    service.start_worker()
    done = service.wait_job(key, victim, timeout=400)
    assert done["status"] == "succeeded", done
    with service.client(key) as c:
        a = c.get(f"/v1/audits/{reference}/report").json()
        b = c.get(f"/v1/audits/{victim}/report").json()
    assert a["attacks"] == b["attacks"]


def test_cancel_stops_a_running_audit(service: Service, tiny_derm: TinyModel) -> None:
    key = service.create_tenant()
    model_id, dataset_id = _register(service, key, tiny_derm)
    audit_id = _audit(service, key, model_id, dataset_id,
                      attacks=[{"name": "pgd", "params": {"eps": "8/255", "steps": 500}}],
                      options={"batch_size": 4, "shard_size": 96, "min_eps": False})
    service.wait_job(key, audit_id, timeout=120, until=("running",))
    with service.client(key) as c:
        assert c.post(f"/v1/audits/{audit_id}/cancel").status_code == 200
    done = service.wait_job(key, audit_id, timeout=30)
    assert done["status"] == "cancelled"
    with service.client(key) as c:
        assert c.get(f"/v1/audits/{audit_id}/report").status_code == 409


@pytest.mark.parametrize("body", [
    {"attacks": []},
    {"attacks": [{"name": "nope"}]},
    {"attacks": [{"name": "pgd", "params": {"eps": 2}}]},
    {"analyses": ["astrology"]},
    {"policy": {"min_vibes": 0.3}},
])
def test_malformed_audit_requests_are_refused(
    service: Service, tiny_derm: TinyModel, body: dict
) -> None:
    key = service.create_tenant()
    model_id, dataset_id = _register(service, key, tiny_derm)
    request = {"model_id": model_id, "dataset_id": dataset_id,
               "attacks": [{"name": "fgsm", "params": {"eps": 0.03}}]} | body
    with service.client(key) as c:
        r = c.post("/v1/audits", json=request)
        assert r.status_code == 422, r.text
        assert set(r.json()["error"]) == {"code", "message", "details"}
        assert c.get("/health/live").status_code == 200


def test_api_restart_loses_nothing(service: Service, tiny_derm: TinyModel) -> None:
    key = service.create_tenant()
    model_id, dataset_id = _register(service, key, tiny_derm)
    audit_id = _audit(service, key, model_id, dataset_id)
    service.stop_api()
    service.start_api()
    done = service.wait_job(key, audit_id, timeout=300)
    assert done["status"] == "succeeded"
    with service.client(key) as c:
        assert c.get(f"/v1/models/{model_id}").status_code == 200
        assert c.get(f"/v1/audits/{audit_id}/report").status_code == 200


def test_a_dataset_is_decoded_once_and_the_timeline_is_kept(
    service: Service, tiny_derm: TinyModel
) -> None:
    """The dataset comes before the model, so its import makes no tensor cache: the first
    audit's planning makes it, the second audit finds it. Both reports say when each stage
    ran, on which worker."""
    from models.card import ModelCard
    from models.datasets.tensor_cache import input_signature

    key = service.create_tenant()
    with service.client(key) as c, tiny_derm.archive.open("rb") as fh:
        r = c.post("/v1/datasets", files={"file": ("d.zip", fh)}, data={"format": "imagefolder"})
        assert r.status_code == 201, r.text
        dataset_id = r.json()["id"]
    cache = service.data_dir / "datasets" / dataset_id / "cache"
    assert not cache.exists()
    with service.client(key) as c, tiny_derm.weights.open("rb") as fh:
        r = c.post("/v1/models", files={"file": (tiny_derm.weights.name, fh)},
                   data={"card": json.dumps(tiny_derm.card)})
        assert r.status_code == 201, r.text
        model_id = r.json()["id"]
    reports = []
    for _ in range(2):
        audit_id = _audit(service, key, model_id, dataset_id,
                          analyses=["quantitative"], options={"shard_size": 16})
        assert service.wait_job(key, audit_id, timeout=300)["status"] == "succeeded"
        with service.client(key) as c:
            reports.append(c.get(f"/v1/audits/{audit_id}/report").json())
    signature = input_signature(ModelCard.model_validate(tiny_derm.card))
    assert [p.name for p in cache.iterdir()] == [signature]
    first, second = (r["provenance"] for r in reports)
    assert first["timings"]["plan:decode_cache"] > 0
    assert second["timings"]["plan:decode_cache"] == 0
    assert reports[0]["attacks"] == reports[1]["attacks"]
    n = tiny_derm.test_images.shape[0]
    for provenance in (first, second):
        line = provenance["timeline"]
        shards = sorted(line["shards"], key=lambda s: s["index"])
        assert [s["index"] for s in shards] == list(range(-(-n // 16)))
        assert provenance["shards"] == len(shards)
        assert 0 <= line["plan"]["start"] < line["plan"]["end"]
        assert all(line["plan"]["end"] <= s["start"] < s["end"] for s in shards)
        assert max(s["end"] for s in shards) <= line["finalize"]["start"]
        assert line["finalize"]["start"] < line["finalize"]["report"]
        assert all(s["worker"].rsplit(":", 1)[1].isdigit() for s in shards)
        assert provenance["timings"]["load_inputs"] >= 0
