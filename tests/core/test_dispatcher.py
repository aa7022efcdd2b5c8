"""Race-free orchestration on SQLite and PostgreSQL: one dispatcher holds the lease at a time
and another takes over when it stops; a job is claimed before it is sent, so a submitting
request and dispatchers racing for the same jobs publish each exactly once."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from app.core import jobs as jobs_module
from app.core.db import Database, DispatcherLease, JobRow
from app.core.db.migrate import upgrade as upgrade_schema
from app.core.dispatcher import LEASE_NAME, Dispatcher, sweep
from app.core.jobs import create_job, dispatch
from app.core.lease import current_holder, release, try_acquire
from app.core.tenants import create_tenant
from tests.support.services import drop_postgres, postgres_url

BROKER = "redis://127.0.0.1:1/0"  # never reached: publishing is replaced by a recorder


class Publisher:
    """Records every published task instead of talking to a broker."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, tuple[object, ...]]] = []
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, broker_url: str, name: str, args: list[object]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        with self._lock:
            self.sent.append((name, tuple(args)))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of this test's own (the sweeps see every job in it): a SQLite file, or a
    fresh PostgreSQL database."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'robustdx.db'}")
        upgrade_schema(database)
        yield database
        return
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    database = Database(url)
    upgrade_schema(database)
    try:
        yield database
    finally:
        database.dispose()
        drop_postgres(url)


@pytest.fixture
def publisher(monkeypatch: pytest.MonkeyPatch) -> Publisher:
    recorder = Publisher()
    monkeypatch.setattr(jobs_module, "send_task", recorder)
    # The sweep's broker look-ups: nothing is waiting in a queue that does not exist.
    monkeypatch.setattr("app.core.dispatcher.waiting_task_args", lambda url: set())
    return recorder


def _tenant(db: Database) -> str:
    with db.session() as s:
        tenant, _ = create_tenant(s, f"t-{uuid.uuid4().hex[:8]}")
        return tenant.id


def _jobs(db: Database, tenant_id: str, count: int) -> list[str]:
    with db.session() as s:
        return [create_job(s, tenant_id, "check", {"model_id": "m"}).id for _ in range(count)]


# ----------------------------------------------------------------------------- the lease


def test_one_dispatcher_holds_the_lease_and_another_takes_over(
    db: Database, publisher: Publisher
) -> None:
    first = Dispatcher(db, BROKER, stale_after=60, lease_seconds=30)
    second = Dispatcher(db, BROKER, stale_after=60, lease_seconds=30)
    job_ids = _jobs(db, _tenant(db), 3)
    assert first.tick() == 3  # it holds the lease and hands the stored jobs over
    assert second.tick() == 0
    assert (first.holding, second.holding) == (True, False)
    assert current_holder(db, LEASE_NAME) == first.holder
    assert first.tick() == 0  # renewing; nothing left to send
    assert current_holder(db, LEASE_NAME) == first.holder
    first.stop()  # a graceful stop releases the lease at once
    assert current_holder(db, LEASE_NAME) is None
    more = _jobs(db, _tenant(db), 2)
    assert second.tick() == 2
    assert second.holding
    assert current_holder(db, LEASE_NAME) == second.holder
    assert sorted(str(args[0]) for _, args in publisher.sent) == sorted(job_ids + more)
    second.stop()


def test_an_expired_lease_is_taken_over(db: Database) -> None:
    assert try_acquire(db, "x", "crashed", 30)
    assert not try_acquire(db, "x", "successor", 30)
    with db.session() as s:  # the holder died and did not renew
        s.execute(update(DispatcherLease).where(DispatcherLease.name == "x")
                  .values(expires_at=datetime.now(UTC) - timedelta(seconds=5)))
    assert try_acquire(db, "x", "successor", 30)
    assert current_holder(db, "x") == "successor"
    assert not try_acquire(db, "x", "crashed", 30)  # the old holder cannot take it back
    release(db, "x", "crashed")  # releasing what one no longer holds changes nothing
    assert current_holder(db, "x") == "successor"


def test_concurrent_acquirers_end_with_one_holder(db: Database) -> None:
    holders = [f"h{i}" for i in range(8)]
    won: list[str] = []
    barrier = threading.Barrier(len(holders))

    def contend(holder: str) -> None:
        barrier.wait()
        if try_acquire(db, "race", holder, 30):
            won.append(holder)

    threads = [threading.Thread(target=contend, args=(h,)) for h in holders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert current_holder(db, "race") == won[0]


# ----------------------------------------------------------------------------- claims


def test_submit_and_dispatchers_racing_send_each_job_once(
    db: Database, publisher: Publisher
) -> None:
    tenant_id = _tenant(db)
    job_ids = _jobs(db, tenant_id, 24)
    stop = threading.Event()

    def dispatcher_loop() -> None:
        # Two sweeps at once, as two API processes without a lease would run them.
        while not stop.is_set():
            sweep(db, BROKER, stale_after=3600)

    sweepers = [threading.Thread(target=dispatcher_loop) for _ in range(2)]
    for t in sweepers:
        t.start()
    submitters = [threading.Thread(target=dispatch, args=(db, BROKER, j)) for j in job_ids]
    for t in submitters:
        t.start()
    for t in submitters:
        t.join()
    stop.set()
    for t in sweepers:
        t.join()
    counts = Counter(args[0] for _, args in publisher.sent)
    assert counts == Counter({job_id: 1 for job_id in job_ids})
    with db.session() as s:
        rows = [s.get(JobRow, j) for j in job_ids]
        assert [r.attempts for r in rows if r is not None] == [1] * len(job_ids)


def test_a_failed_send_is_given_back_and_retried(
    db: Database, publisher: Publisher
) -> None:
    (job_id,) = _jobs(db, _tenant(db), 1)
    publisher.fail = True
    assert not dispatch(db, BROKER, job_id)
    with db.session() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        assert row.enqueued_at is None
    publisher.fail = False
    assert sweep(db, BROKER, stale_after=3600) == 1
    assert not dispatch(db, BROKER, job_id)  # already handed over: not sent again
    assert [args for _, args in publisher.sent] == [(job_id,)]


def test_a_lost_stage_is_resent_once_by_racing_sweeps(
    db: Database, publisher: Publisher
) -> None:
    (job_id,) = _jobs(db, _tenant(db), 1)
    assert dispatch(db, BROKER, job_id)
    with db.session() as s:  # the worker started it and then died
        s.execute(update(JobRow).where(JobRow.id == job_id).values(
            status="running", started_at=datetime.now(UTC),
            heartbeat_at=datetime.now(UTC) - timedelta(hours=1)))
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        sweep(db, BROKER, stale_after=60)

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [args for _, args in publisher.sent] == [(job_id,), (job_id,)]  # first + one resend


def test_an_abandoned_cancel_ends_cancelled_instead_of_being_resent(
    db: Database, publisher: Publisher
) -> None:
    (job_id,) = _jobs(db, _tenant(db), 1)
    assert dispatch(db, BROKER, job_id)
    with db.session() as s:
        s.execute(update(JobRow).where(JobRow.id == job_id).values(
            status="running", started_at=datetime.now(UTC), cancel_requested=True,
            heartbeat_at=datetime.now(UTC) - timedelta(hours=1)))
    sweep(db, BROKER, stale_after=60)
    with db.session() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        assert row.status == "cancelled"
    assert len(publisher.sent) == 1
