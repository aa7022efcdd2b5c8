"""Two API processes on one database and one real broker: only the holder of the dispatcher
lease sends stored jobs, each exactly once (counted in the broker's queue), and the other
takes the dispatcher over when the holder stops."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis

from app.core.db import Database
from app.core.dispatcher import LEASE_NAME
from app.core.jobs import create_job
from app.core.lease import current_holder
from app.core.tenants import create_tenant
from tests.support.services import Broker, Service

pytestmark = pytest.mark.integration


def _wait(condition: object, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _store_jobs(db: Database, tenant_id: str, count: int) -> list[str]:
    """Jobs stored but never handed over (as when the broker was down at submission)."""
    with db.session() as s:
        return [create_job(s, tenant_id, "check", {"model_id": "m"}).id for _ in range(count)]


def test_one_dispatcher_sends_each_job_once_and_the_other_takes_over(
    tmp_path: Path, broker: Broker
) -> None:
    broker.flush()
    data = tmp_path / "data"
    data.mkdir()
    env = {"ROBUSTDX_DISPATCHER_INTERVAL_SECONDS": "0.2", "ROBUSTDX_DISPATCHER_LEASE_SECONDS": "5"}
    apis = [Service(data_dir=data, broker_url=broker.url, extra_env=env) for _ in range(2)]
    queue = redis.Redis.from_url(broker.url)
    try:
        for api in apis:
            api.start_api()
        db = Database(f"sqlite:///{data / 'robustdx.db'}")
        pids = {api.api.pid: api for api in apis if api.api is not None}
        _wait(lambda: current_holder(db, LEASE_NAME) is not None, "a lease holder")
        holder_pid = int(str(current_holder(db, LEASE_NAME)).split(":")[1])
        assert holder_pid in pids
        with db.session() as s:
            tenant, _ = create_tenant(s, f"t-{uuid.uuid4().hex[:8]}")
            tenant_id = tenant.id
        first = _store_jobs(db, tenant_id, 12)
        _wait(lambda: queue.llen("gpu") >= len(first), "the first jobs in the queue")
        time.sleep(1.0)  # several more passes of both dispatchers: nothing more is sent
        assert queue.llen("gpu") == len(first)

        pids[holder_pid].stop_api()  # a graceful stop releases the lease
        (survivor,) = [p for p in pids if p != holder_pid]
        _wait(lambda: str(current_holder(db, LEASE_NAME)).split(":")[1:2] == [str(survivor)],
              "the other API to take the dispatcher over")
        more = _store_jobs(db, tenant_id, 5)
        _wait(lambda: queue.llen("gpu") >= len(first) + len(more), "the later jobs")
        time.sleep(1.0)
        assert queue.llen("gpu") == len(first) + len(more)
    finally:
        queue.close()
        for api in apis:
            api.stop()
