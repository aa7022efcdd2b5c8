"""A defense job through the API: hardened model registered with lineage, downloadable,
with a before/after report."""

from __future__ import annotations

import io
import json

import pytest
import torch
from safetensors.torch import load

from tests.integration.conftest import TinyModel
from tests.integration.test_audit_jobs import _register
from tests.support.services import Service

pytestmark = pytest.mark.integration


def test_pgd_at_hardens_and_registers_a_model(service: Service, tiny_derm: TinyModel) -> None:
    key = service.create_tenant()
    model_id, dataset_id = _register(service, key, tiny_derm)
    body = {
        "model_id": model_id, "train_dataset_id": dataset_id, "eval_dataset_id": dataset_id,
        "method": "pgd_at", "seed": 1,
        "params": {"epochs": 3, "lr": 0.003, "optimizer": "adam", "eps": 8 / 255, "steps": 3,
                   "batch_size": 32,
                   "eval_attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 5}}]},
    }
    with service.client(key) as c:
        r = c.post("/v1/defenses", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    done = service.wait_job(key, job_id, timeout=600)
    assert done["status"] == "succeeded", done
    new_id = done["result"]["hardened_model_id"]
    (row,) = done["result"]["comparison"]
    assert row["robust_after"] > row["robust_before"]

    with service.client(key) as c:
        model = c.get(f"/v1/models/{new_id}").json()
        assert model["lineage"]["parent_id"] == model_id
        assert model["lineage"]["method"] == "pgd_at"
        assert model["lineage"]["seed"] == 1
        weights = c.get(f"/v1/models/{new_id}/download", params={"format": "safetensors"})
        assert weights.status_code == 200
        state = load(weights.content)
        assert all(torch.isfinite(v.float()).all() for v in state.values())
        script = c.get(f"/v1/models/{new_id}/download", params={"format": "torchscript"})
        assert script.status_code == 200
        net = torch.jit.load(io.BytesIO(script.content))
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, 1)
        report = c.get(f"/v1/defenses/{job_id}/report").json()
        assert report["hardened_model_id"] == new_id
        assert len(report["training"]["epochs"]) >= 1
        html = c.get(f"/v1/defenses/{job_id}/report.html")
        assert html.status_code == 200
        assert "defense_pareto" in html.text or "Pareto" in html.text or "robust" in html.text
        # The hardened model serves diagnoses like any other.
        png = io.BytesIO()
        from PIL import Image

        Image.new("RGB", (32, 32), (120, 80, 60)).save(png, format="PNG")
        pred = c.post(f"/v1/models/{new_id}/predict", files={"file": ("x.png", png.getvalue())})
        assert pred.status_code == 200, pred.text
        assert json.loads(pred.text)["model_id"] == new_id
