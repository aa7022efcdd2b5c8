"""Alembic migrations on SQLite and PostgreSQL: from empty, from the schema the service wrote
before migrations existed (with its data kept), and a process refusing a database behind."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from app.core.db import Database, JobRow, ModelRow, Tenant
from app.core.db.migrate import (
    BASELINE,
    SchemaOutOfDateError,
    check,
    current_revision,
    head_revision,
    upgrade,
)
from app.core.db.tables import Base
from app.core.settings import Settings
from tests.support.services import drop_postgres, postgres_url

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty database per test (the shared ``postgres`` one is session-wide)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'robustdx.db'}"
        return
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    yield url
    drop_postgres(url)


def _schema_diff(db: Database) -> list[object]:
    with db.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def _write_previous_schema(db: Database) -> None:
    """The tables exactly as the previous release's ``create_all`` made them, plus data."""
    dialect = "sqlite" if db.is_sqlite else "postgresql"
    lines = (FIXTURES / f"schema_before_migrations.{dialect}.sql").read_text().splitlines()
    ddl = "\n".join(line for line in lines if not line.startswith("--"))
    statements = [s.strip() for s in ddl.split(";") if s.strip()]
    card = json.dumps({"name": "old-cxr", "labels": ["a", "b"]})
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES "
                          "('t1', 'st-mary', '2026-11-30 10:00:00')"))
        conn.execute(
            text("INSERT INTO models (id, tenant_id, name, format, sha256, size_bytes, card, "
                 "info, created_at) VALUES ('m1', 't1', 'old-cxr', 'torchscript', :sha, 1234, "
                 ":card, '{}', '2026-11-30 10:00:00')"),
            {"sha": "ab" * 32, "card": card},
        )
        conn.execute(
            text("INSERT INTO jobs (id, tenant_id, kind, status, stage, progress, request, "
                 "shards_total, shards_done, cancel_requested, attempts, created_at) VALUES "
                 "('j1', 't1', 'audit', 'succeeded', 'done', 1.0, '{\"seed\": 7}', 4, 4, "
                 ":no, 1, '2026-11-30 10:00:00')"),
            {"no": False},
        )


def test_upgrade_from_empty_builds_the_code_schema(fresh_url: str) -> None:
    db = Database(fresh_url)
    assert current_revision(db) is None
    assert upgrade(db) == head_revision()
    assert current_revision(db) == head_revision()
    assert _schema_diff(db) == []
    # Upgrading again is a no-op.
    assert upgrade(db) == head_revision()
    db.dispose()


def test_upgrade_keeps_the_data_of_a_database_from_before_migrations(fresh_url: str) -> None:
    db = Database(fresh_url)
    _write_previous_schema(db)
    with db.engine.connect() as conn:
        assert not inspect(conn).has_table("alembic_version")
    assert current_revision(db) == BASELINE

    upgrade(db)

    assert current_revision(db) == head_revision()
    assert _schema_diff(db) == []
    with db.session() as session:
        tenant = session.get(Tenant, "t1")
        model = session.get(ModelRow, "m1")
        job = session.get(JobRow, "j1")
        assert tenant is not None
        assert tenant.name == "st-mary"
        assert model is not None
        assert model.card == {"name": "old-cxr", "labels": ["a", "b"]}
        assert model.size_bytes == 1234
        assert model.sha256 == "ab" * 32
        assert job is not None
        assert job.request == {"seed": 7}
        assert job.shards_done == 4
    db.dispose()


def test_a_database_behind_is_refused_with_the_command_to_run(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'server.db'}")
    with pytest.raises(SchemaOutOfDateError, match=r"run `robustdx db upgrade`") as caught:
        check(db)
    assert f"the database is empty but this version of RobustDx needs revision {head_revision()}" \
        in str(caught.value)
    upgrade(db, BASELINE)
    if head_revision() != BASELINE:
        with pytest.raises(SchemaOutOfDateError, match=f"at revision {BASELINE}"):
            check(db)
    upgrade(db)
    check(db)


def test_the_api_refuses_to_start_on_a_server_database_behind(tmp_path: Path) -> None:
    from app.api.startup import startup

    url = f"sqlite:///{tmp_path / 'server.db'}"
    settings = Settings(data_dir=tmp_path / "data", database_url=url, environment="test",
                        run_dispatcher=False, register_zoo=False)
    with pytest.raises(SchemaOutOfDateError, match="robustdx db upgrade"):
        startup(settings)


def test_the_embedded_sqlite_upgrades_itself(tmp_path: Path) -> None:
    from app.api.startup import shutdown, startup

    settings = Settings(data_dir=tmp_path / "data", environment="test", run_dispatcher=False,
                        register_zoo=False)
    state = startup(settings)
    try:
        assert current_revision(state.db) == head_revision()
    finally:
        shutdown(state)


def test_the_upgrade_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    env = {"ROBUSTDX_DATABASE_URL": url, "ROBUSTDX_DATA_DIR": str(tmp_path), "PATH": "/usr/bin"}

    def robustdx(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, check=False)

    behind = robustdx("db", "current")
    assert behind.returncode == 1
    assert behind.stdout.strip() == f"database: empty; code: {head_revision()}"
    done = robustdx("db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"database at revision {head_revision()}"
    assert current_revision(Database(url)) == head_revision()
    assert robustdx("db", "current").returncode == 0
