"""Alembic environment: the connection comes from :func:`app.core.db.migrate.upgrade` (or,
for the ``alembic`` command, from ``ROBUSTDX_DATABASE_URL`` / the settings)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from app.core.db.tables import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from app.core.db.session import normalise_url
    from app.core.settings import get_settings

    url = config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url
    engine = create_engine(normalise_url(url))
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    from app.core.db.session import normalise_url
    from app.core.settings import get_settings

    context.configure(
        url=normalise_url(get_settings().resolved_database_url),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
