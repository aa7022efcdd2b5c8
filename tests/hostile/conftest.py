"""The service the corpus attacks: in-process, on SQLite in a temporary folder, with a
real broker (jobs are published, no worker runs them), one tenant with a model and a
dataset, and another tenant with a model of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from tests.app.http_fixtures import folder_zip
from tests.app.models_fixtures import make_settings, new_tenant
from tests.hostile.cases_datasets import MAX_FILES, MAX_UNCOMPRESSED
from tests.hostile.corpus import Target
from tests.models.model_files import card_dict, tiny_net, write_torchscript
from tests.support.services import Broker


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory,
            broker: Broker) -> Iterator[tuple[TestClient, Target, Path]]:
    root = tmp_path_factory.mktemp("hostile")
    data_dir = root / "data"
    settings = make_settings(
        data_dir, broker_url=broker.url, max_dataset_bytes=256 * 1024,
        max_dataset_files=MAX_FILES, max_dataset_uncompressed_bytes=MAX_UNCOMPRESSED,
    )
    # A 500 must come back as a response, not as an exception in the test.
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        key, other_key = new_tenant(client, "st-mary"), new_tenant(client, "mallory")
        model = write_torchscript(tiny_net(), root / "model.pt")
        card = card_dict(name="target")
        ids = []
        for k in (key, other_key):
            response = client.post(
                "/v1/models", headers={"Authorization": f"Bearer {k}"},
                files={"file": ("model.pt", model.read_bytes())},
                data={"card": json.dumps(card)},
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        dataset = client.post("/v1/datasets", headers={"Authorization": f"Bearer {key}"},
                              files={"file": ("d.zip", folder_zip(("benign", "malignant")))},
                              data={"format": "imagefolder"})
        assert dataset.status_code == 201, dataset.text
        scratch = root / "scratch"
        scratch.mkdir()
        target = Target(key=key, model_id=ids[0], dataset_id=dataset.json()["id"],
                        other_model_id=ids[1], scratch=scratch, card=card)
        yield client, target, data_dir
