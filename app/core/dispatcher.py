"""The dispatcher: hands stored jobs to the broker and re-enqueues lost work.

The database is the source of truth. Celery on Redis does not redeliver a task whose
worker was killed until the visibility timeout (an hour by default; Celery #3541, #7651),
so a loop here looks for:

- jobs stored but never handed over (the broker was down at submission);
- shards and job stages whose last heartbeat is older than ``stale_after_seconds`` and
  whose message is no longer waiting in the broker (a killed worker, or a broker restart
  that lost its queues). They are enqueued again; tasks are idempotent, so a duplicate
  delivery (Celery #7918) is harmless.

Every send is claimed on its row first (:func:`app.core.jobs.claim`, and a guarded
``UPDATE`` for shards), so the dispatcher never sends what a submitting request (or another
dispatcher) already sent. Only one process runs the sweep at a time: the holder of the
``dispatcher`` lease (:mod:`app.core.lease`), renewed on every pass and taken over by
another API process once it expires or is released.

A job whose cancel was requested and whose worker has gone silent is ended ``cancelled``
here instead of being sent again: nobody is left to notice the flag.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update

from app.core import webhooks
from app.core.db import Database, JobRow, ShardRow
from app.core.jobs import FINAL_STATES, dispatch
from app.core.lease import holder_id, release, try_acquire
from app.core.queue import TASK_QUEUES, send_task

LEASE_NAME = "dispatcher"

logger = logging.getLogger(__name__)

#: The task that resumes a job whose current stage is not sharded.
STAGE_TASK = {
    "check": "robustdx.check_model",
    "defense": "robustdx.defense.train",
    "route": "robustdx.dicom.route",
}
AUDIT_SHARD_TASK = "robustdx.audit.shard"


def waiting_task_args(broker_url: str) -> set[str]:
    """The first argument of every message still waiting in our queues."""
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=2, socket_timeout=2)
    found: set[str] = set()
    try:
        for queue in set(TASK_QUEUES.values()):
            for raw in client.lrange(queue, 0, -1):
                try:
                    message = json.loads(raw)
                    found.add(str(message["headers"]["argsrepr"]))
                except (ValueError, KeyError, TypeError):
                    continue
    finally:
        client.close()
    return found


def _waiting(args: list[object], waiting: set[str]) -> bool:
    return repr(tuple(args)) in waiting or repr(list(args)) in waiting


def sweep(db: Database, broker_url: str, stale_after: float) -> int:
    """One pass; returns how many tasks were (re-)enqueued."""
    now = datetime.now(UTC)
    stale = now - timedelta(seconds=stale_after)
    sent = 0
    with db.session() as session:
        never_sent = session.scalars(
            select(JobRow.id).where(JobRow.status == "queued", JobRow.enqueued_at.is_(None))
        ).all()
    for job_id in never_sent:
        sent += dispatch(db, broker_url, job_id)
    sent += _announce(db, broker_url)
    _end_abandoned_cancels(db, stale)

    try:
        waiting = waiting_task_args(broker_url)
    except Exception as exc:  # broker down: nothing can be sent now anyway
        logger.debug("broker not reachable in sweep: %s", exc)
        return sent

    with db.session() as session:
        lost_shards = session.execute(
            select(ShardRow.job_id, ShardRow.index)
            .join(JobRow, JobRow.id == ShardRow.job_id)
            .where(
                ShardRow.status.in_(("pending", "running")),
                JobRow.status == "running",
                JobRow.cancel_requested.is_(False),
                or_(ShardRow.heartbeat_at.is_(None), ShardRow.heartbeat_at < stale),
            )
        ).all()
        lost_jobs = session.execute(
            select(JobRow.id, JobRow.kind, JobRow.stage, JobRow.attempts).where(
                JobRow.status.in_(("queued", "running")),
                JobRow.cancel_requested.is_(False),
                JobRow.enqueued_at.is_not(None),
                or_(JobRow.heartbeat_at.is_(None), JobRow.heartbeat_at < stale),
            )
        ).all()
    for job_id, index in lost_shards:
        args: list[object] = [job_id, index]
        if _waiting(args, waiting) or not _claim_shard(db, job_id, index, stale):
            continue
        logger.warning("re-enqueueing shard %s/%s (no heartbeat)", job_id, index)
        sent += _send(broker_url, AUDIT_SHARD_TASK, args)
    for job_id, kind, stage, attempts in lost_jobs:
        task = _stage_task(kind, stage)
        if task is None or _waiting([job_id], waiting):
            continue
        logger.warning("re-enqueueing job %s stage %s (no heartbeat)", job_id, stage)
        sent += dispatch(db, broker_url, job_id, task, seen_attempts=attempts,
                         stale_before=stale)
    return sent


def _announce(db: Database, broker_url: str) -> int:
    """Webhook deliveries for ended jobs, handed to a worker when due (never sent here)."""
    webhooks.announce_ended_jobs(db)
    return sum(_send(broker_url, webhooks.DELIVER_TASK, [delivery_id])
               for delivery_id in webhooks.claim_due(db))
def _claim_shard(db: Database, job_id: str, index: int, stale: datetime) -> bool:
    """Compare-and-set: the shard is still unfinished and silent; mark it re-sent now."""
    with db.session() as session:
        result = session.execute(
            update(ShardRow).execution_options(synchronize_session=False)
            .where(
                ShardRow.job_id == job_id,
                ShardRow.index == index,
                ShardRow.status != "done",
                or_(ShardRow.heartbeat_at.is_(None), ShardRow.heartbeat_at < stale),
            )
            .values(status="pending", heartbeat_at=datetime.now(UTC))
        )
        return getattr(result, "rowcount", 0) == 1


def _end_abandoned_cancels(db: Database, stale: datetime) -> None:
    """Cancelled jobs whose workers all went silent (the job's and every shard's heartbeat):
    nobody will record the end, so do it here."""
    live_shard = (
        select(ShardRow.id)
        .where(ShardRow.job_id == JobRow.id, ShardRow.status == "running",
               ShardRow.heartbeat_at >= stale)
        .exists()
    )
    with db.session() as session:
        session.execute(
            update(JobRow).execution_options(synchronize_session=False)
            .where(
                JobRow.cancel_requested.is_(True),
                JobRow.status.not_in(FINAL_STATES),
                or_(JobRow.heartbeat_at.is_(None), JobRow.heartbeat_at < stale),
                ~live_shard,
            )
            .values(status="cancelled", stage="cancelled", finished_at=datetime.now(UTC))
        )


def _stage_task(kind: str, stage: str) -> str | None:
    if kind == "audit":
        if stage == "attacking":
            return None  # shards are watched one by one
        if stage == "finalizing":
            return "robustdx.audit.finalize"
        return "robustdx.audit.plan"
    return STAGE_TASK.get(kind)


def _send(broker_url: str, task: str, args: list[object]) -> bool:
    try:
        send_task(broker_url, task, args)
        return True
    except Exception as exc:
        logger.warning("could not enqueue %s%s: %s", task, args, exc)
        return False


class Dispatcher:
    """Runs :func:`sweep` every ``interval`` seconds in a daemon thread, while it holds the
    ``dispatcher`` lease (``lease_seconds`` long, renewed on every pass)."""

    def __init__(self, db: Database, broker_url: str, stale_after: float,
                 interval: float = 2.0, lease_seconds: float = 20.0) -> None:
        self.db = db
        self.broker_url = broker_url
        self.stale_after = stale_after
        self.interval = interval
        self.lease_seconds = max(lease_seconds, 2 * interval)
        self.holder = holder_id()
        self.holding = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="robustdx-dispatcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.holding:
            try:
                release(self.db, LEASE_NAME, self.holder)
            except Exception:  # the database may be gone at shutdown; the lease expires
                logger.warning("could not release the dispatcher lease", exc_info=True)
            self.holding = False

    def tick(self) -> int:
        """Renew (or take) the lease and, when held, sweep once; tasks sent."""
        held = try_acquire(self.db, LEASE_NAME, self.holder, self.lease_seconds)
        if held != self.holding:
            logger.info("dispatcher %s %s the lease", self.holder,
                        "holds" if held else "lost")
        self.holding = held
        if not held:
            return 0
        return sweep(self.db, self.broker_url, self.stale_after)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                logger.exception("dispatcher sweep failed")
