"""``robustdx db``: the database schema (Alembic migrations)."""

from __future__ import annotations

import typer

db_cli = typer.Typer(no_args_is_help=True, help="Database schema migrations.")


@db_cli.command("upgrade")
def upgrade(revision: str = "head") -> None:
    """Upgrade the database of ROBUSTDX_DATABASE_URL to the code's schema (keeps data)."""
    from app.core.db import get_database
    from app.core.db.migrate import upgrade as run_upgrade
    from app.core.settings import get_settings

    settings = get_settings()
    reached = run_upgrade(get_database(settings.resolved_database_url), revision)
    typer.echo(f"database at revision {reached}")


@db_cli.command("current")
def current() -> None:
    """Print the database's schema revision and the code's; exit 1 when they differ."""
    from app.core.db import get_database
    from app.core.db.migrate import current_revision, head_revision
    from app.core.settings import get_settings

    settings = get_settings()
    revision = current_revision(get_database(settings.resolved_database_url))
    head = head_revision()
    typer.echo(f"database: {revision or 'empty'}; code: {head}")
    raise typer.Exit(0 if revision == head else 1)
