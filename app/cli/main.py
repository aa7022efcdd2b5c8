"""The ``robustdx`` command: run the service, make phantom data, and drive audits."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.cli.db import db_cli
from app.cli.evidence import verify as verify_evidence

cli = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
data_cli = typer.Typer(no_args_is_help=True, help="Phantom datasets.")
cli.add_typer(data_cli, name="data")
cli.add_typer(db_cli, name="db")


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
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


audit_cli = typer.Typer(no_args_is_help=True, help="Robustness audits.")
cli.add_typer(audit_cli, name="audit")
audit_cli.command("verify")(verify_evidence)


@audit_cli.command("submit")
def audit_submit(
    model: Annotated[str, typer.Option(help="Model id or name.")],
    dataset: Annotated[str, typer.Option(help="Dataset id.")],
    attack: Annotated[list[str], typer.Option(help="e.g. pgd:eps=4/255,steps=10 (repeat)")],
    analysis: Annotated[list[str] | None, typer.Option(help="Analysis name (repeat).")] = None,
    policy: Annotated[str | None, typer.Option(help="Policy JSON, or @file.json")] = None,
    seed: int = 0,
    max_images: int | None = None,
    wait: bool = typer.Option(False, "--wait", help="Wait, download the reports, gate."),
    out: Path = Path("robustdx-report"),
    url: Annotated[str, typer.Option(envvar="ROBUSTDX_URL")] = "http://127.0.0.1:8000",
    key: Annotated[str | None, typer.Option(envvar="ROBUSTDX_API_KEY")] = None,
) -> None:
    """Submit an audit; with --wait, exit 1 when the policy fails and 2 when the job fails."""
    import json

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from app.cli.client import ApiError, Client, default_key, parse_attack

    policy_doc = None
    if policy:
        text = Path(policy[1:]).read_text() if policy.startswith("@") else policy
        policy_doc = json.loads(text)
    body: dict[str, object] = {
        "model_id": "", "dataset_id": dataset, "attacks": [parse_attack(a) for a in attack],
        "policy": policy_doc, "seed": seed,
    }
    if analysis:
        body["analyses"] = list(analysis)
    if max_images:
        body["options"] = {"max_images": max_images}
    try:
        with Client(url, key or default_key()) as client:
            body["model_id"] = client.find_model(model)["id"]
            job = client.post("/v1/audits", body)
            typer.echo(f"audit {job['id']} submitted")
            if not wait:
                return
            with Progress(TextColumn("{task.description}"), BarColumn(),
                          TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                          transient=False) as bar:
                task = bar.add_task("queued", total=1.0)

                def show(status: dict[str, object]) -> None:
                    bar.update(task, completed=float(status["progress"]),  # type: ignore[arg-type]
                               description=str(status["stage"]))

                final = client.wait(job["id"], show)
            if final["status"] != "succeeded":
                typer.echo(f"audit {final['status']}: {final.get('error')}", err=True)
                raise typer.Exit(2)
            base = f"/v1/audits/{job['id']}"
            for name, path in (("report.json", "/report"), ("report.html", "/report.html"),
                               ("report.xml", "/report.xml")):
                client.download(base + path, out / name)
            report = json.loads((out / "report.json").read_text())
    except ApiError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    verdict = report.get("summary", {}).get("verdict", "no-policy")
    typer.echo(f"reports in {out}/ (report.html, report.json, report.xml); verdict: {verdict}")
    if verdict == "fail":
        raise typer.Exit(1)


if __name__ == "__main__":
    main()
