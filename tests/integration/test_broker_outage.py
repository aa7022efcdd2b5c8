"""Jobs submitted while the broker is down are enqueued when it returns; PostgreSQL too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli.embedded_broker import EmbeddedRedis
from tests.integration.conftest import TinyModel
from tests.support.services import Broker, Service

pytestmark = pytest.mark.integration


def _upload(svc: Service, key: str, tiny: TinyModel) -> str:
    with svc.client(key) as c, tiny.weights.open("rb") as fh:
        r = c.post("/v1/models", files={"file": (tiny.weights.name, fh)},
                   data={"card": json.dumps(tiny.card)})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def test_job_submitted_while_broker_is_down_runs_when_it_returns(
    tmp_path: Path, tiny_derm: TinyModel
) -> None:
    redis = EmbeddedRedis().start()
    port = redis.port
    svc = Service(data_dir=tmp_path / "data", broker_url=redis.url)
    svc.data_dir.mkdir()
    svc.start_api()
    try:
        key = svc.create_tenant()
        model_id = _upload(svc, key, tiny_derm)
        redis.stop()
        with svc.client(key) as c:
            ready = c.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["broker"].startswith("failed")
            assert ready.json()["checks"]["database"] == "ok"
            r = c.post(f"/v1/models/{model_id}/check")
            assert r.status_code == 202
            job_id = r.json()["id"]
            assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
        redis = EmbeddedRedis(port=port).start()
        svc.start_worker()
        done = svc.wait_job(key, job_id, timeout=120)
        assert done["status"] == "succeeded", done
    finally:
        svc.stop()
        redis.stop()


def test_check_job_on_postgresql(
    tmp_path: Path, postgres: str, broker: Broker, tiny_derm: TinyModel
) -> None:
    broker.flush()
    svc = Service(data_dir=tmp_path / "data", broker_url=broker.url, database_url=postgres)
    svc.data_dir.mkdir()
    svc.start_api()
    svc.start_worker()
    try:
        key = svc.create_tenant()
        model_id = _upload(svc, key, tiny_derm)
        with svc.client(key) as c:
            job_id = c.post(f"/v1/models/{model_id}/check").json()["id"]
        done = svc.wait_job(key, job_id, timeout=120)
        assert done["status"] == "succeeded", done
        assert done["result"]["output_shape"] == [2, 1]
    finally:
        svc.stop()
