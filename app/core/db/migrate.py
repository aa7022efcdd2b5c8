"""Schema migrations (Alembic): upgrade a database to the code's revision, or refuse one
that is behind.

The first revision (``0001``) is the schema the service wrote with ``create_all`` before
migrations existed. A database from that time has the tables but no ``alembic_version``;
:func:`upgrade` recognises it, stamps it ``0001`` and upgrades from there, so no data is
lost. ``robustdx db upgrade`` runs :func:`upgrade`; the API and the workers call
:func:`ensure_schema` at start: it upgrades the embedded SQLite of ``make run`` itself and
refuses any other database that is behind, naming the command to run.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from app.core.db.session import Database, get_database
from app.core.settings import Settings

BASELINE = "0001"
UPGRADE_COMMAND = "robustdx db upgrade"


class SchemaOutOfDateError(RuntimeError):
    """The database's schema revision is not the code's; the message names the fix."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("app.core.db") / "migrations"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    """The database's revision: ``None`` for an empty database, :data:`BASELINE` for one
    written by ``create_all`` before migrations existed."""
    with db.engine.connect() as conn:
        revision = MigrationContext.configure(conn).get_current_revision()
        if revision is None and inspect(conn).has_table("jobs"):
            return BASELINE
        return revision


@contextlib.contextmanager
def _exclusive(db: Database) -> Iterator[None]:
    """One migrator at a time: several processes may start on one database at once."""
    if db.is_sqlite:
        path = make_url(db.url).database
        if not path or path == ":memory:":
            yield
            return
        with Path(path + ".migrate.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    with db.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(742315)"))
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(742315)"))
            conn.commit()


def upgrade(db: Database, revision: str = "head") -> str:
    """Upgrade ``db`` to ``revision`` (default the code's head); returns the new revision."""
    config = _config()
    with _exclusive(db), db.engine.begin() as conn:
        config.attributes["connection"] = conn
        context = MigrationContext.configure(conn)
        if context.get_current_revision() is None and inspect(conn).has_table("jobs"):
            command.stamp(config, BASELINE)
        command.upgrade(config, revision)
    return current_revision(db) or ""


def check(db: Database) -> None:
    """Raise :class:`SchemaOutOfDateError` unless ``db`` is at the code's head revision."""
    current, head = current_revision(db), head_revision()
    if current == head:
        return
    state = "empty" if current is None else f"at revision {current}"
    raise SchemaOutOfDateError(
        f"the database is {state} but this version of RobustDx needs revision {head}: "
        f"run `{UPGRADE_COMMAND}` (with the same ROBUSTDX_DATABASE_URL) and start again"
    )


def ensure_schema(db: Database, auto_upgrade: bool) -> None:
    """At process start: upgrade when allowed (the embedded SQLite), else :func:`check`."""
    if auto_upgrade:
        upgrade(db)
    else:
        check(db)


def open_database(settings: Settings) -> Database:
    """The database of ``settings`` at the code's schema revision, at process start.

    The embedded SQLite of ``make run`` (no ``database_url``) is upgraded in place; any other
    database must be upgraded by an operator (``robustdx db upgrade``) and is refused while
    behind, unless ``ROBUSTDX_AUTO_UPGRADE_DATABASE=true``.
    """
    db = get_database(settings.resolved_database_url)
    ensure_schema(db, settings.upgrades_database_itself)
    return db
