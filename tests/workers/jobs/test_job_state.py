"""A job's state in the database as workers see it: cancelling, the wall-time limit, errors
without server paths, and shard rows inserted idempotently (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from app.core.db import Database, JobRow, ShardRow
from app.core.db.migrate import upgrade as upgrade_schema
from app.core.jobs import create_job
from app.core.tenants import create_tenant
from models.errors import InvalidInputError
from workers.jobs import CANCELLING, JobContext, JobTimeLimitError, ShardLease, insert_shards


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    upgrade_schema(database)
    return database


def _job(db: Database) -> str:
    import uuid

    with db.session() as s:
        tenant, _ = create_tenant(s, f"t-{uuid.uuid4().hex[:8]}")
        return create_job(s, tenant.id, "audit", {"model_id": "m"}).id


def _row(db: Database, job_id: str) -> JobRow:
    with db.session() as s:
        job = s.get(JobRow, job_id)
        assert job is not None
        s.expunge(job)
        return job


def test_cancelling_stops_the_work_and_start_keeps_it_cancelling(db: Database) -> None:
    job_id = _job(db)
    ctx = JobContext(db, job_id)
    ctx.start("planning")
    assert ctx.should_stop() is False
    with db.session() as s:
        s.execute(update(JobRow).where(JobRow.id == job_id).values(
            status=CANCELLING, cancel_requested=True))
    ctx._cancel_checked = 0.0  # the next poll reads the database (it does so once a second)
    assert ctx.should_stop() is True
    JobContext(db, job_id).start("attacking")  # a later stage does not undo the cancel
    assert _row(db, job_id).status == CANCELLING
    with JobContext(db, job_id) as later:
        later.check_cancelled()
    assert (_row(db, job_id).status, _row(db, job_id).stage) == ("cancelled", "cancelled")


def test_a_job_past_its_wall_time_limit_fails_with_a_clear_error(db: Database) -> None:
    job_id = _job(db)
    with db.session() as s:
        s.execute(update(JobRow).where(JobRow.id == job_id).values(
            status="running", started_at=datetime.now(UTC) - timedelta(hours=7)))
    with JobContext(db, job_id, time_limit_seconds=6 * 3600) as ctx:
        ctx.should_stop()
    job = _row(db, job_id)
    assert job.status == "failed"
    assert job.error is not None
    assert job.error.startswith("the job ran longer than its wall-time limit of 6 h")
    with pytest.raises(JobTimeLimitError):
        JobContext(db, job_id, time_limit_seconds=6 * 3600).start("attacking")
    # Within the limit nothing happens.
    fresh = _job(db)
    ctx = JobContext(db, fresh, time_limit_seconds=6 * 3600)
    ctx.start("planning")
    assert ctx.should_stop() is False


def test_job_errors_never_name_server_paths(db: Database) -> None:
    job_id = _job(db)
    with JobContext(db, job_id):
        raise InvalidInputError("cannot read '/srv/robustdx/data/tenants/b/model.pt' (eps=4/255)")
    assert _row(db, job_id).error == "cannot read '<path>' (eps=4/255)"
    job_id = _job(db)
    with JobContext(db, job_id):
        open("/srv/robustdx/no/such/file")  # noqa: SIM115 - an unexpected error
    error = _row(db, job_id).error
    assert error == "FileNotFoundError: [Errno 2] No such file or directory: '<path>'"


def _shards(db: Database, job_id: str) -> list[tuple[int, int, int]]:
    with db.session() as s:
        rows = s.execute(select(ShardRow.index, ShardRow.spec).where(
            ShardRow.job_id == job_id).order_by(ShardRow.index)).all()
    return [(i, spec["start"], spec["stop"]) for i, spec in rows]


def test_concurrent_plans_insert_one_partition_of_the_images(db: Database) -> None:
    job_id = _job(db)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def plan(size: int) -> None:
        try:
            barrier.wait()
            insert_shards(db, job_id, 100, size)
        except BaseException as exc:  # the test asserts there are none
            errors.append(exc)

    # Each "worker" timed the model differently and wants its own shard size.
    threads = [threading.Thread(target=plan, args=(size,)) for size in (16, 32, 16, 48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    shards = _shards(db, job_id)
    size = shards[0][2]
    assert size in (16, 32, 48)
    assert shards == [(i, s, min(s + size, 100)) for i, s in enumerate(range(0, 100, size))]
    # A third, late delivery changes nothing.
    assert insert_shards(db, job_id, 100, 7) == len(shards)
    assert _shards(db, job_id) == shards


def test_a_cancelled_shard_is_never_run_again(db: Database) -> None:
    job_id = _job(db)
    insert_shards(db, job_id, 10, 5)
    lease = ShardLease(db, job_id, 0, 60)
    lease.cancel()
    with lease.hold():
        pass  # a late delivery that got this far still leaves it cancelled
    row = lease.shard()
    assert row is not None
    assert (row.status, row.attempts) == ("cancelled", 0)
    assert lease.complete() is False  # and it is never counted as done
