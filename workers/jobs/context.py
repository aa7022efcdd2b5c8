"""A task's view of its job in the database.

Every state change goes through here, so the API (and its dispatcher) can trust the
database: ``heartbeat_at`` proves a live worker, ``progress``/``stage`` are what users see,
and ``cancel_requested`` is polled so a cancel takes effect within seconds.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import update

from app.core.db import Database, JobRow, ShardRow
from models.errors import JobCancelledError, RobustDxError

logger = logging.getLogger(__name__)

FINAL = ("succeeded", "failed", "cancelled")
#: Set by the API when a cancel is asked for while a worker runs the job; the worker sets
#: ``cancelled`` once it has stopped.
CANCELLING = "cancelling"
WORKER_NAME = f"{socket.gethostname()}:{__import__('os').getpid()}"


def now() -> datetime:
    return datetime.now(UTC)


class JobTimeLimitError(RobustDxError):
    """The job ran past its wall-time limit (setting ``job_time_limit_seconds``)."""

    code = "time_limit"


#: An absolute POSIX path inside a message (after a space, quote, bracket, ``=`` or ``:``).
_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(\[=:]))/[^\s'\")\],;]+")


def redact_paths(message: str) -> str:
    """``message`` with every absolute path replaced by ``<path>``: job errors are shown
    to tenants, and server paths are none of their business."""
    return _PATH.sub("<path>", message)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Heartbeat:
    """Updates ``heartbeat_at`` of a row every ``interval`` seconds from a daemon thread."""

    def __init__(self, db: Database, table: type[JobRow] | type[ShardRow], row_id: str,
                 interval: float) -> None:
        self.db, self.table, self.row_id, self.interval = db, table, row_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def __enter__(self) -> Heartbeat:
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

    def __init__(self, db: Database, job_id: str, heartbeat_seconds: float = 5.0,
                 time_limit_seconds: float | None = None) -> None:
        self.db = db
        self.job_id = job_id
        self.heartbeat_seconds = heartbeat_seconds
        self.time_limit_seconds = time_limit_seconds
        self._heartbeat: Heartbeat | None = None
        self._cancel_checked = 0.0
        self._cancelled = False
        self._started_at: datetime | None = None

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
        """True once a cancel was requested (checked against the database at most 1/s).

        Cheap enough to be called on every attack iteration. Raises
        :class:`JobTimeLimitError` once the job has run longer than its wall-time limit.
        """
        if self._cancelled:
            return True
        t = time.monotonic()
        if t - self._cancel_checked >= 1.0:
            self._cancel_checked = t
            job = self.load()
            self._cancelled = job.cancel_requested or job.status in ("cancelled", CANCELLING)
            self._started_at = job.started_at
            self.check_time_limit()
        return self._cancelled

    def check_time_limit(self) -> None:
        """Raise :class:`JobTimeLimitError` when the job started longer ago than its limit."""
        if self.time_limit_seconds is None or self._started_at is None:
            return
        elapsed = (now() - _aware(self._started_at)).total_seconds()
        if elapsed > self.time_limit_seconds:
            hours = self.time_limit_seconds / 3600
            raise JobTimeLimitError(
                f"the job ran longer than its wall-time limit of {hours:g} h and was stopped "
                "(the operator's setting ROBUSTDX_JOB_TIME_LIMIT_SECONDS); audit fewer "
                "images or settings, or use fewer steps",
                {"limit_seconds": self.time_limit_seconds, "elapsed_seconds": round(elapsed)},
            )

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
        """Mark the job running at ``stage``; a job being cancelled stays ``cancelling``
        (and stops at its next check), one past its time limit fails."""
        job = self.load()
        values: dict[str, Any] = {"stage": stage, "heartbeat_at": now()}
        if job.status != CANCELLING and not job.cancel_requested:
            values["status"] = "running"
        if job.started_at is None:
            values["started_at"] = now()
        self._started_at = job.started_at
        self._update(**values)
        self.check_time_limit()

    def progress(self, fraction: float, stage: str | None = None) -> None:
        values: dict[str, Any] = {"progress": float(min(max(fraction, 0.0), 1.0))}
        if stage is not None:
            values["stage"] = stage
        self._update(**values)

    def succeed(self, result: dict[str, Any]) -> None:
        self._update(status="succeeded", stage="done", progress=1.0, result=result,
                     finished_at=now(), error=None)

    def fail(self, message: str) -> None:
        self._update(status="failed", stage="failed", error=redact_paths(message)[:4000],
                     finished_at=now())

    def cancelled(self) -> None:
        self._update(status="cancelled", stage="cancelled", finished_at=now())

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> JobContext:
        self._heartbeat = Heartbeat(self.db, JobRow, self.job_id, self.heartbeat_seconds)
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
            self.fail(f"{type(exc).__name__}: {exc}")  # fail() takes server paths out
            return True
        return False  # SystemExit / KeyboardInterrupt / worker shutdown: let them through
