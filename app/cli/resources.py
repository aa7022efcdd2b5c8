"""``robustdx models ...`` and ``robustdx datasets ...``: names or ids wherever a resource
is named (a name means the newest resource of that name)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import Json, Key, Url, connect, emit, fail, handles_errors

models_cli = typer.Typer(no_args_is_help=True, help="Registered models.")
datasets_cli = typer.Typer(no_args_is_help=True, help="Imported datasets.")

MODEL_COLUMNS = [("id", "id"), ("name", "name"), ("format", "format"),
                 ("card.task", "task"), ("size_bytes", "bytes"), ("created_at", "created")]
DATASET_COLUMNS = [("id", "id"), ("name", "name"), ("format", "format"),
                   ("count", "images"), ("created_at", "created")]


@models_cli.command("list")
@handles_errors
def models_list(url: Url = None, key: Key = None, json_out: Json = False) -> None:
    """The tenant's models, newest first."""
    with connect(url, key) as client:
        items = client.get("/v1/models", limit=200)["items"]
    emit(items, json_out, MODEL_COLUMNS)


@models_cli.command("upload")
@handles_errors
def models_upload(
    file: Annotated[Path, typer.Argument(help="Model file: .pt2, TorchScript, ONNX, weights.")],
    card: Annotated[str, typer.Option(help="Model card: JSON text, or @card.json.")],
    name: Annotated[str | None, typer.Option(help="Overrides the card's name.")] = None,
    url: Url = None, key: Key = None, json_out: Json = False,
) -> None:
    """Register a model (checked: no uploaded code runs, a dry run must pass)."""
    text = Path(card[1:]).read_text() if card.startswith("@") else card
    try:
        card_doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"--card is not JSON: {exc.msg}") from exc
    if name:
        card_doc["name"] = name
    with connect(url, key) as client:
        model = client.upload_model(file, card_doc)
    emit(model, json_out, MODEL_COLUMNS)


@models_cli.command("predict")
@handles_errors
def models_predict(
    model: Annotated[str, typer.Argument(help="Model id or name.")],
    files: Annotated[list[Path], typer.Argument(help="PNG, JPEG or DICOM files.")],
    defense: Annotated[str | None, typer.Option(help="'smoothing' for a certified vote.")] = None,
    sigma: float | None = None,
    n: int | None = None,
    url: Url = None, key: Key = None, json_out: Json = False,
) -> None:
    """Diagnose images."""
    params = {k: v for k, v in {"defense": defense, "sigma": sigma, "n": n}.items()
              if v is not None}
    with connect(url, key) as client:
        found = client.find_model(model)
        answer = client.predict(found["id"], files, **params)
    if json_out:
        emit(answer, True)
        return
    results = answer.get("results") or [{"filename": files[0].name, **answer}]
    rows = [{"file": r.get("filename"), "label": p["label"],
             "probability": p.get("probability", p.get("vote_share")),
             "positive": p["positive"]} for r in results for p in r["predictions"]]
    emit(rows, False, [("file", "file"), ("label", "label"), ("probability", "probability"),
                       ("positive", "positive")])


@models_cli.command("download")
@handles_errors
def models_download(
    model: Annotated[str, typer.Argument(help="Model id or name.")],
    fmt: Annotated[str | None, typer.Option("--format",
                                            help="original | torchscript | safetensors")] = None,
    out: Annotated[Path | None, typer.Option(help="File to write.")] = None,
    url: Url = None, key: Key = None,
) -> None:
    """Download a registered model (as uploaded, or converted)."""
    with connect(url, key) as client:
        found = client.find_model(model)
        suffix = {"torchscript": ".pt", "safetensors": ".safetensors"}.get(fmt or "", "")
        dest = out or Path(f"{found['name']}{suffix or '.' + str(found['format'])}")
        params = {"format": fmt} if fmt else {}
        client.download(f"/v1/models/{found['id']}/download", dest, **params)
    typer.echo(str(dest))


@datasets_cli.command("list")
@handles_errors
def datasets_list(url: Url = None, key: Key = None, json_out: Json = False) -> None:
    """The tenant's datasets, newest first."""
    with connect(url, key) as client:
        items = client.get("/v1/datasets", limit=200)["items"]
    emit(items, json_out, DATASET_COLUMNS)


@datasets_cli.command("upload")
@handles_errors
def datasets_upload(
    file: Annotated[Path, typer.Argument(help="A zip in one of the import formats.")],
    fmt: Annotated[str, typer.Option("--format",
                                     help="imagefolder | csv | medmnist-npz | dicom")],
    name: str | None = None,
    url: Url = None, key: Key = None, json_out: Json = False,
) -> None:
    """Import a dataset (safe against zip slip and bombs; bad files are named)."""
    with connect(url, key) as client:
        dataset = client.upload_dataset(file, fmt, name)
    emit(dataset, json_out, DATASET_COLUMNS)
