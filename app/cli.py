"""The ``robustdx`` command: run the service, make phantom data, and drive audits."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

cli = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
data_cli = typer.Typer(no_args_is_help=True, help="Phantom datasets.")
cli.add_typer(data_cli, name="data")


def _settings():  # type: ignore[no-untyped-def]
    from app.settings import get_settings

    return get_settings()


@cli.command()
def serve(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
) -> None:
    """Run the API only (uvicorn)."""
    import uvicorn

    uvicorn.run("app.main:create_app", factory=True, host=host, port=port)


@cli.command()
def worker(name: str = "worker1") -> None:
    """Run one Celery worker (solo pool; one per GPU)."""
    from app.supervisor import worker_argv

    argv = worker_argv(_settings(), name)
    os.execv(argv[0], argv)


@cli.command()
def run(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
    workers: int = 1,
) -> None:
    """Run the API, workers and (unless ROBUSTDX_BROKER_URL is set) an embedded broker."""
    from app.supervisor import run as supervise

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
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
