"""The database layer on SQLite and PostgreSQL: tenants, keys, jobs, idempotent shards."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from app.core.db import Database, JobRow, ShardRow
from app.core.db.migrate import upgrade as upgrade_schema
from app.core.jobs import create_job, get_job, list_jobs, request_cancel
from app.core.tenants import authenticate, create_tenant, hash_key
from models.errors import AuthenticationError, ConflictError, NotFoundError
from workers.jobs import JobContext, ShardLease


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    upgrade_schema(database)
    return database


def _tenant(db: Database, name: str) -> tuple[str, str]:
    import uuid

    with db.session() as s:
        tenant, key = create_tenant(s, f"{name}-{uuid.uuid4().hex[:6]}")
        return tenant.id, key


def test_keys_are_hashed_and_authenticate(db: Database) -> None:
    tenant_id, key = _tenant(db, "a")
    with db.session() as s:
        from app.core.db import ApiKey

        stored = s.scalars(select(ApiKey.key_hash).where(ApiKey.tenant_id == tenant_id)).all()
        assert stored == [hash_key(key)]
        assert key not in stored
        assert authenticate(s, f"Bearer {key}").id == tenant_id
        with pytest.raises(AuthenticationError):
            authenticate(s, "Bearer rdx_wrong")
        with pytest.raises(AuthenticationError):
            authenticate(s, None)


def test_duplicate_tenant_is_a_conflict(db: Database) -> None:
    with db.session() as s:
        create_tenant(s, "dup-tenant-name-x")
    with pytest.raises(ConflictError), db.session() as s:
        create_tenant(s, "dup-tenant-name-x")


def test_jobs_are_invisible_to_other_tenants(db: Database) -> None:
    a, _ = _tenant(db, "a")
    b, _ = _tenant(db, "b")
    with db.session() as s:
        job = create_job(s, a, "check", {"model_id": "m"})
        job_id = job.id
    with db.session() as s:
        assert get_job(s, a, job_id).id == job_id
        with pytest.raises(NotFoundError):
            get_job(s, b, job_id)
        with pytest.raises(NotFoundError):
            get_job(s, a, job_id, kind="audit")
        rows, total = list_jobs(s, b, None, 10, 0)
        assert (rows, total) == ([], 0)


def test_paging_lists_each_job_once(db: Database) -> None:
    a, _ = _tenant(db, "p")
    with db.session() as s:
        ids = {create_job(s, a, "check", {"i": i}).id for i in range(7)}
    seen: list[str] = []
    with db.session() as s:
        for offset in range(0, 7, 3):
            rows, total = list_jobs(s, a, "check", 3, offset)
            assert total == 7
            seen += [r.id for r in rows]
    assert sorted(seen) == sorted(ids)


def test_cancel_of_unstarted_job_ends_it_and_twice_conflicts(db: Database) -> None:
    a, _ = _tenant(db, "c")
    with db.session() as s:
        job = create_job(s, a, "audit", {})
        request_cancel(s, job)
        assert job.status == "cancelled"
        with pytest.raises(ConflictError):
            request_cancel(s, job)


def test_shard_completion_counts_once_and_finalizes_once(db: Database) -> None:
    a, _ = _tenant(db, "s")
    with db.session() as s:
        job = create_job(s, a, "audit", {})
        job.shards_total = 4
        job.status = "running"
        for i in range(4):
            s.add(ShardRow(job_id=job.id, index=i, spec={}))
        job_id = job.id
    finals: list[bool] = []
    lock = threading.Lock()

    def finish(index: int) -> None:
        done = ShardLease(db, job_id, index, 60).complete()
        with lock:
            finals.append(done)

    # Every shard completes twice (a redelivery), concurrently.
    threads = [threading.Thread(target=finish, args=(i % 4,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert finals.count(True) == 1
    with db.session() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        assert row.shards_done == 4


def test_job_context_records_failure_and_cancel(db: Database) -> None:
    a, _ = _tenant(db, "j")
    with db.session() as s:
        failing = create_job(s, a, "check", {}).id
        cancelling = create_job(s, a, "check", {}).id
    with JobContext(db, failing, heartbeat_seconds=0.05) as ctx:
        ctx.start("loading")
        raise ValueError("weights are broken")
    with JobContext(db, cancelling, heartbeat_seconds=0.05) as ctx:
        ctx.start("loading")
        with db.session() as s:
            row = s.get(JobRow, cancelling)
            assert row is not None
            row.cancel_requested = True
        ctx.check_cancelled()
    with db.session() as s:
        f = s.get(JobRow, failing)
        c = s.get(JobRow, cancelling)
        assert f is not None
        assert c is not None
        assert (f.status, f.error) == ("failed", "ValueError: weights are broken")
        assert f.heartbeat_at is not None
        assert c.status == "cancelled"
        assert c.finished_at is not None
