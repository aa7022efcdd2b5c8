"""A lease row in the database: at most one holder at a time, across processes and hosts.

``try_acquire`` is one compare-and-set ``UPDATE`` (``WHERE holder = me OR expires_at <
now``), or an ``INSERT`` when the row does not exist yet; the primary key makes two
concurrent inserts end with one holder. The holder renews by acquiring again before the
lease expires; ``release`` expires it at once so a successor need not wait. Expiry times
come from each process's own clock: the lease duration must be much longer than the clock
skew between API hosts (seconds with NTP), which it is by default (tens of seconds).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from app.core.db import Database, DispatcherLease

logger = logging.getLogger(__name__)


def holder_id() -> str:
    """Unique per process and call: host, pid and a random suffix."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def try_acquire(db: Database, name: str, holder: str, duration_s: float) -> bool:
    """Take or renew the lease ``name`` for ``duration_s`` seconds; True when ``holder``
    holds it afterwards."""
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=duration_s)
    with db.session() as session:
        result = session.execute(
            update(DispatcherLease).execution_options(synchronize_session=False)
            .where(
                DispatcherLease.name == name,
                (DispatcherLease.holder == holder) | (DispatcherLease.expires_at < now),
            )
            .values(holder=holder, expires_at=expires)
        )
        if getattr(result, "rowcount", 0) == 1:
            return True
    try:
        with db.session() as session:
            session.add(DispatcherLease(name=name, holder=holder, expires_at=expires,
                                        acquired_at=now))
    except IntegrityError:
        return False  # the row exists and someone else holds it
    return True


def release(db: Database, name: str, holder: str) -> None:
    """Give the lease up now (only if ``holder`` still holds it)."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    with db.session() as session:
        session.execute(
            update(DispatcherLease).execution_options(synchronize_session=False)
            .where(DispatcherLease.name == name, DispatcherLease.holder == holder)
            .values(expires_at=past)
        )


def current_holder(db: Database, name: str) -> str | None:
    """The live holder of ``name``, or None when it is free or expired."""
    with db.session() as session:
        row = session.get(DispatcherLease, name)
        if row is None:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        return row.holder if expires >= datetime.now(UTC) else None
