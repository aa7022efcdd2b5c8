"""Stopping and repeating audit work with real workers: a cancel takes effect inside the
running batch and its shard never runs again; a duplicated ``plan`` delivery (two workers
planning one job at once) still gives a clean run's numbers, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app.core.db import Database, ShardRow
from app.core.queue import send_task
from tests.integration.conftest import TinyModel
from tests.integration.test_audit_jobs import _audit, _register
from tests.support.services import Broker, Service

pytestmark = pytest.mark.integration


def _shards(db: Database, job_id: str) -> list[tuple[int, str, int]]:
    with db.session() as s:
        return [tuple(r) for r in s.execute(  # type: ignore[misc]
            select(ShardRow.index, ShardRow.status, ShardRow.attempts)
            .where(ShardRow.job_id == job_id).order_by(ShardRow.index)).all()]


def test_cancel_stops_inside_a_batch_and_the_shard_never_runs_again(
    service: Service, tiny_derm: TinyModel
) -> None:
    key = service.create_tenant()
    model_id, dataset_id = _register(service, key, tiny_derm)
    # One shard, one batch of all 96 images, 1000 PGD steps: minutes of work in one batch.
    audit_id = _audit(service, key, model_id, dataset_id,
                      attacks=[{"name": "pgd", "params": {"eps": "8/255", "steps": 1000}}],
                      analyses=["quantitative"],
                      options={"batch_size": 96, "shard_size": 96, "min_eps": False})
    db = Database(f"sqlite:///{service.data_dir / 'robustdx.db'}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = _shards(db, audit_id)
        if rows and rows[0][1] == "running":
            break
        time.sleep(0.2)
    assert [(i, status) for i, status, _ in _shards(db, audit_id)] == [(0, "running")]
    with service.client(key) as c:
        assert c.post(f"/v1/audits/{audit_id}/cancel").status_code == 200
    # The batch (1000 steps on 96 images) takes over a minute on one CPU thread; a cancel
    # checked only between batches would wait for all of it.
    done = service.wait_job(key, audit_id, timeout=30)
    assert done["status"] == "cancelled"
    stopped = _shards(db, audit_id)
    assert [(i, status) for i, status, _ in stopped] == [(0, "cancelled")]
    # Past the dispatcher's staleness window (4 s here) nothing sends the shard again, and a
    # stray redelivery is refused: no new attempt is recorded.
    send_task(service.broker_url, "robustdx.audit.shard", [audit_id, 0])
    time.sleep(8)
    assert _shards(db, audit_id) == stopped
    with service.client(key) as c:
        assert c.get(f"/v1/audits/{audit_id}").json()["status"] == "cancelled"


@pytest.fixture(params=["sqlite", "postgresql"])
def two_workers(request: pytest.FixtureRequest, tmp_path: Path,
                broker: Broker) -> Iterator[Service]:
    broker.flush()
    url = None if request.param == "sqlite" else str(request.getfixturevalue("postgres"))
    svc = Service(data_dir=tmp_path / "data", broker_url=broker.url, database_url=url)
    svc.data_dir.mkdir()
    svc.start_api()
    svc.start_worker()
    svc.start_worker()
    try:
        yield svc
    finally:
        svc.stop()


def test_plan_delivered_twice_concurrently_gives_a_clean_runs_numbers(
    two_workers: Service, tiny_derm: TinyModel
) -> None:
    svc = two_workers
    key = svc.create_tenant()
    model_id, dataset_id = _register(svc, key, tiny_derm)
    body = {"attacks": [{"name": "pgd", "params": {"eps": ["2/255", "8/255"], "steps": 5}},
                        {"name": "gap", "params": {"eps": "8/255", "epochs": 2}}],
            "options": {"batch_size": 16, "min_eps": False}}
    reference = _audit(svc, key, model_id, dataset_id, **body)
    assert svc.wait_job(key, reference, timeout=400)["status"] == "succeeded"

    twice = _audit(svc, key, model_id, dataset_id, **body)
    send_task(svc.broker_url, "robustdx.audit.plan", [twice])  # the duplicate delivery
    done = svc.wait_job(key, twice, timeout=400)
    assert done["status"] == "succeeded", done
    with svc.client(key) as c:
        a = c.get(f"/v1/audits/{reference}/report").json()
        b = c.get(f"/v1/audits/{twice}/report").json()
    assert a["attacks"] == b["attacks"]
    assert b["provenance"]["dataset"]["images_audited"] == 96
