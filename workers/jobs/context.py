"""A task's view of its job in the database.

Every state change goes through here, so the API (and its dispatcher) can trust the
database: ``heartbeat_at`` proves a live worker, ``progress``/``stage`` are what users see,
and ``cancel_requested`` is polled so a cancel takes effect within seconds.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import update

from app.core.db import Database, JobRow, ShardRow
from models.errors import JobCancelledError, RobustDxError

logger = logging.getLogger(__name__)

FINAL = ("succeeded", "failed", "cancelled")
WORKER_NAME = f"{socket.gethostname()}:{__import__('os').getpid()}"


def now() -> datetime:
    return datetime.now(UTC)


class _Heartbeat:
    """Updates ``heartbeat_at`` of a row every ``interval`` seconds from a daemon thread."""

    def __init__(self, db: Database, table: type[JobRow] | type[ShardRow], row_id: str,
                 interval: float) -> None:
        self.db, self.table, self.row_id, self.interval = db, table, row_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def __enter__(self) -> _Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        with self.db.session() as session:
            session.execute(
                update(self.table).where(self.table.id == self.row_id).values(heartbeat_at=now())
            )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception:
                logger.exception("heartbeat failed")


class JobContext:
    """Used as ``with JobContext(db, job_id, ...) as job:`` around a job-level stage."""

    def __init__(self, db: Database, job_id: str, heartbeat_seconds: float = 5.0) -> None:
        self.db = db
        self.job_id = job_id
        self.heartbeat_seconds = heartbeat_seconds
        self._heartbeat: _Heartbeat | None = None
        self._cancel_checked = 0.0
        self._cancelled = False

    # -- reading ---------------------------------------------------------------------
    def load(self) -> JobRow:
        with self.db.session() as session:
            job = session.get(JobRow, self.job_id)
            if job is None:
                raise LookupError(f"job {self.job_id} does not exist")
            session.expunge(job)
            return job

    def is_final(self) -> bool:
        return self.load().status in FINAL

    def should_stop(self) -> bool:
        """True once a cancel was requested (checked against the database at most 1/s)."""
        if self._cancelled:
            return True
        t = time.monotonic()
        if t - self._cancel_checked >= 1.0:
            self._cancel_checked = t
            job = self.load()
            self._cancelled = job.cancel_requested or job.status == "cancelled"
        return self._cancelled

    def check_cancelled(self) -> None:
        if self.should_stop():
            raise JobCancelledError(f"job {self.job_id} was cancelled")

    # -- writing ---------------------------------------------------------------------
    def _update(self, **values: Any) -> None:
        with self.db.session() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.id == self.job_id, JobRow.status.not_in(FINAL))
                .values(**values)
            )

    def start(self, stage: str) -> None:
        job = self.load()
        values: dict[str, Any] = {"status": "running", "stage": stage, "heartbeat_at": now()}
        if job.started_at is None:
            values["started_at"] = now()
        self._update(**values)

    def progress(self, fraction: float, stage: str | None = None) -> None:
        values: dict[str, Any] = {"progress": float(min(max(fraction, 0.0), 1.0))}
        if stage is not None:
            values["stage"] = stage
        self._update(**values)

    def succeed(self, result: dict[str, Any]) -> None:
        self._update(status="succeeded", stage="done", progress=1.0, result=result,
                     finished_at=now(), error=None)

    def fail(self, message: str) -> None:
        self._update(status="failed", stage="failed", error=message[:4000], finished_at=now())

    def cancelled(self) -> None:
        self._update(status="cancelled", stage="cancelled", finished_at=now())

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> JobContext:
        self._heartbeat = _Heartbeat(self.db, JobRow, self.job_id, self.heartbeat_seconds)
        self._heartbeat.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if self._heartbeat is not None:
            self._heartbeat.__exit__()
        if exc is None:
            return False
        if isinstance(exc, JobCancelledError):
            self.cancelled()
            return True
        if isinstance(exc, RobustDxError):
            self.fail(exc.message)
            return True
        if isinstance(exc, Exception):
            logger.error("job %s failed:\n%s", self.job_id,
                         "".join(traceback.format_exception(exc_type, exc, tb)))
            self.fail(f"{type(exc).__name__}: {exc}")
            return True
        return False  # SystemExit / KeyboardInterrupt / worker shutdown: let them through


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
                .where(ShardRow.id == row.id, ShardRow.status != "done")
                .values(status="running", attempts=ShardRow.attempts + 1, worker=WORKER_NAME,
                        heartbeat_at=now())
            )
        with _Heartbeat(self.db, ShardRow, row.id, self.heartbeat_seconds):
            yield row

    def complete(self) -> bool:
        """Mark done and count it once; True for the call that completed the last shard.

        The shard's row flips to ``done`` in one guarded UPDATE, so a shard run twice after
        a redelivery is counted once; the job's counter is bumped in the same transaction.
        """
        with self.db.session() as session:
            flipped = session.execute(
                update(ShardRow)
                .where(ShardRow.job_id == self.job_id, ShardRow.index == self.index,
                       ShardRow.status != "done")
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
