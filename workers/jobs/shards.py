"""The shards of a job: idempotent creation and the lease a worker holds while it runs one.

Shard rows are created with ``INSERT ... ON CONFLICT DO NOTHING`` on the ``(job_id,
index)`` unique key (SQLite and PostgreSQL both have it, through SQLAlchemy's dialect
inserts), so two deliveries of a job's ``plan`` task racing each other insert each shard
once and neither fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.core.db import Database, JobRow, ShardRow
from app.core.db.tables import new_id
from workers.jobs.context import WORKER_NAME, Heartbeat, now


def _insert(db: Database, job_id: str, specs: dict[int, dict[str, Any]]) -> None:
    rows = [{"id": new_id(), "job_id": job_id, "index": i, "spec": spec, "status": "pending",
             "attempts": 0} for i, spec in specs.items()]
    dialect = sqlite if db.is_sqlite else postgresql
    statement = dialect.insert(ShardRow).values(rows).on_conflict_do_nothing(
        index_elements=["job_id", "index"]
    )
    with db.session() as session:
        session.execute(statement)


def insert_shards(db: Database, job_id: str, count: int, size: int) -> int:
    """Create the shards ``[start, stop)`` of ``count`` images, ``size`` per shard, unless
    they exist; returns how many shards the job has.

    Two plans racing each other may want different sizes (each times the model on its own
    worker). Shard 0 is inserted first and holds the size; whoever inserted it, both
    then create the rest from *its* size, so the rows always partition the images once.
    """
    if count <= 0:
        return 0
    _insert(db, job_id, {0: {"start": 0, "stop": min(size, count), "size": size}})
    with db.session() as session:
        first = session.scalars(
            select(ShardRow.spec).where(ShardRow.job_id == job_id, ShardRow.index == 0)
        ).one()
    size = int(first.get("size") or first["stop"] - first["start"])
    specs = {i: {"start": start, "stop": min(start + size, count), "size": size}
             for i, start in enumerate(range(0, count, size))}
    _insert(db, job_id, specs)
    return len(specs)


class ShardLease:
    """Marks a shard running with a heartbeat while the block runs."""

    def __init__(self, db: Database, job_id: str, index: int, heartbeat_seconds: float) -> None:
        self.db, self.job_id, self.index = db, job_id, index
        self.heartbeat_seconds = heartbeat_seconds

    def shard(self) -> ShardRow | None:
        with self.db.session() as session:
            row = session.query(ShardRow).filter_by(job_id=self.job_id, index=self.index).first()
            if row is not None:
                session.expunge(row)
            return row

    @contextmanager
    def hold(self) -> Iterator[ShardRow]:
        row = self.shard()
        if row is None:
            raise LookupError(f"shard {self.job_id}/{self.index} does not exist")
        with self.db.session() as session:
            session.execute(
                update(ShardRow)
                .where(ShardRow.id == row.id, ShardRow.status.not_in(("done", "cancelled")))
                .values(status="running", attempts=ShardRow.attempts + 1, worker=WORKER_NAME,
                        heartbeat_at=now())
            )
        with Heartbeat(self.db, ShardRow, row.id, self.heartbeat_seconds):
            yield row

    def cancel(self) -> None:
        """Mark the shard ``cancelled``: the dispatcher re-enqueues only pending and running
        shards, and :func:`workers.tasks.audit.shard` refuses cancelled ones, so a shard
        stopped by a cancel is never redelivered or resumed."""
        with self.db.session() as session:
            session.execute(
                update(ShardRow)
                .where(ShardRow.job_id == self.job_id, ShardRow.index == self.index,
                       ShardRow.status != "done")
                .values(status="cancelled", finished_at=now())
            )

    def complete(self) -> bool:
        """Mark done and count it once; True for the call that completed the last shard.

        The shard's row flips to ``done`` in one guarded UPDATE, so a shard run twice after
        a redelivery is counted once; the job's counter is bumped in the same transaction.
        """
        with self.db.session() as session:
            flipped = session.execute(
                update(ShardRow)
                .where(ShardRow.job_id == self.job_id, ShardRow.index == self.index,
                       ShardRow.status.not_in(("done", "cancelled")))
                .values(status="done", finished_at=now())
            ).rowcount  # type: ignore[attr-defined]
            if not flipped:
                return False
            session.execute(
                update(JobRow).where(JobRow.id == self.job_id)
                .values(shards_done=JobRow.shards_done + 1, heartbeat_at=now())
            )
            job = session.get(JobRow, self.job_id, populate_existing=True)
            assert job is not None
            return job.shards_done >= job.shards_total
