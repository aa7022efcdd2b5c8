"""``robustdx audit verify``: check a filed report against its signature, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.exit_codes import CHECK_FAILED, USAGE_ERROR


def verify(
    report: Annotated[Path, typer.Argument(help="report.json as downloaded.")],
    signature: Annotated[Path, typer.Argument(help="report.sig as downloaded.")],
    key: Annotated[Path, typer.Option(help="The service's public key (GET /v1/signing-key).")],
    also: Annotated[list[Path] | None, typer.Option(
        help="More files of the bundle to check: report.html, report.xml, artifacts "
             "(named as in the bundle by their file name).")] = None,
) -> None:
    """Verify the Ed25519 signature of an audit's bundle and that each file is unchanged.

    Exit 0 when everything verifies, 1 when a signature or a file does not, 3 when a file
    cannot be read or is not what it should be."""
    from app.core.signing import SignatureMismatchError
    from app.core.signing import verify as verify_bundle
    from models.errors import InvalidInputError

    paths = [report, *(also or [])]
    try:
        files = {("report.json" if p == report else p.name): p.read_bytes() for p in paths}
        bundle = verify_bundle(signature.read_bytes(), key.read_bytes(), files)
    except OSError as exc:
        typer.echo(f"error: cannot read {exc.filename}: {exc.strerror}", err=True)
        raise typer.Exit(USAGE_ERROR) from exc
    except SignatureMismatchError as exc:
        typer.echo(f"NOT VERIFIED: {exc}", err=True)
        raise typer.Exit(CHECK_FAILED) from exc
    except InvalidInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(USAGE_ERROR) from exc
    typer.echo(f"verified: audit {bundle['audit_id']}, {len(files)} file(s) unchanged, "
               f"signed bundle of {len(bundle.get('files', {}))} reports and "
               f"{len(bundle.get('artifacts', {}))} artifacts")
