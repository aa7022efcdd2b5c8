"""What every client command shares: where the service is, the key, output, exit codes.

Every command takes ``--url`` (default ``ROBUSTDX_URL``, else ``http://127.0.0.1:$PORT``),
``--key`` (default ``ROBUSTDX_API_KEY``, else the development key ``make run`` writes to
``$ROBUSTDX_DATA_DIR/dev-api-key``) and ``--json`` (print the service's JSON instead of a
table). Errors are one line on stderr and a distinct exit status (:mod:`app.cli.exit_codes`).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from app.cli.client import ApiError, Client, ServiceUnreachableError, default_key, default_url
from app.cli.exit_codes import USAGE_ERROR

Url = Annotated[str | None, typer.Option(
    help="Service URL [default: ROBUSTDX_URL, else http://127.0.0.1:$PORT].")]
Key = Annotated[str | None, typer.Option(
    help="API key [default: ROBUSTDX_API_KEY, else the development key].")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def connect(url: str | None, key: str | None) -> Iterator[Client]:
    with Client(url or default_url(), key or default_key()) as client:
        yield client


def fail(message: str, code: int = USAGE_ERROR) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def handles_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn service, connection and usage errors into one stderr line and exit status 3."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ServiceUnreachableError as exc:
            raise fail(str(exc)) from exc
        except ApiError as exc:
            raise fail(str(exc)) from exc
        except (OSError, ValueError) as exc:
            raise fail(str(exc)) from exc

    return wrapper


def emit(data: Any, as_json: bool, columns: Sequence[tuple[str, str]] | None = None) -> None:
    """Print ``data`` as JSON, or as a table of ``columns`` (field, header) for lists."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return
    rows = data if isinstance(data, list) else [data]
    if columns is None:
        for row in rows:
            for field, value in row.items():
                typer.echo(f"{field}: {_cell(value)}")
        return
    cells = [[_cell(_get(row, field)) for field, _ in columns] for row in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, (_, h) in enumerate(columns)]
    typer.echo("  ".join(h.upper().ljust(w) for (_, h), w in zip(columns, widths, strict=True)))
    for line in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _get(row: dict[str, Any], dotted: str) -> Any:
    value: Any = row
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
