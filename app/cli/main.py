"""The ``robustdx`` command: run the service, make phantom data, migrate the database, and
drive every resource of a running service (models, datasets, audits, defenses).

Exit statuses: 0 ok; 1 a policy rule failed (or evidence did not verify); 2 the job failed
or was cancelled; 3 bad usage, an error answer of the service, or no service at the URL."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.cli.db import db_cli
from app.cli.exit_codes import USAGE_ERROR
from app.cli.jobs import audit_cli, defense_cli
from app.cli.resources import datasets_cli, models_cli

cli = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
data_cli = typer.Typer(no_args_is_help=True, help="Phantom datasets.")
cli.add_typer(data_cli, name="data")
cli.add_typer(db_cli, name="db")
cli.add_typer(models_cli, name="models")
cli.add_typer(datasets_cli, name="datasets")
cli.add_typer(audit_cli, name="audit")
cli.add_typer(defense_cli, name="defense")


def _settings():  # type: ignore[no-untyped-def]
    from app.core.settings import get_settings

    return get_settings()


@cli.command()
def serve(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
) -> None:
    """Run the API only (uvicorn; ROBUSTDX_API_WORKERS processes)."""
    import uvicorn

    uvicorn.run("app.api.main:create_app", factory=True, host=host, port=port,
                workers=_settings().api_workers)


@cli.command()
def worker(name: str = "worker1") -> None:
    """Run one Celery worker (solo pool; one per GPU)."""
    from app.cli.supervisor import worker_argv

    argv = worker_argv(_settings(), name)
    os.execv(argv[0], argv)


@cli.command()
def run(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
    workers: int = 1,
) -> None:
    """Run the API, workers and (unless ROBUSTDX_BROKER_URL is set) an embedded broker."""
    from app.cli.supervisor import run as supervise

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    raise typer.Exit(supervise(_settings(), host, port, workers))


@data_cli.command("phantom")
def phantom(
    out: Annotated[Path, typer.Option(help="Zip file to write.")],
    kind: Annotated[str, typer.Option(help="chest | derm | fundus")] = "chest",
    n: int = 500,
    size: int = 64,
    fmt: Annotated[
        str, typer.Option("--format", help="imagefolder | csv | medmnist-npz | dicom")
    ] = "csv",
    seed: int = 0,
) -> None:
    """Write a phantom dataset as an importable zip."""
    from models.phantoms.export import write_phantom_archive

    write_phantom_archive(kind, n, size, fmt, out, seed=seed)
    typer.echo(f"wrote {out} ({kind}, {n} images, {size}x{size}, format {fmt}, seed {seed})")


def main() -> None:
    """Entry point: exit statuses as :mod:`app.cli.exit_codes` documents them (a usage
    error is 3, not click's 2, which here means a failed job)."""
    from typer.main import get_command

    try:
        result = get_command(cli).main(prog_name="robustdx", standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:
        # Typer ships its own copy of click: its usage errors are recognised by shape.
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()
            sys.exit(USAGE_ERROR)
        raise
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
