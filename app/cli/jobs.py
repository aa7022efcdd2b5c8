"""``robustdx audit ...`` and ``robustdx defense ...``: submit, follow, gate, download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.client import Client, parse_attack, parse_value
from app.cli.common import Json, Key, Url, connect, emit, fail, handles_errors
from app.cli.evidence import verify as verify_evidence
from app.cli.exit_codes import CHECK_FAILED, JOB_FAILED

audit_cli = typer.Typer(no_args_is_help=True, help="Robustness audits.")
defense_cli = typer.Typer(no_args_is_help=True, help="Defense (hardening) jobs.")
audit_cli.command("verify")(verify_evidence)

JOB_COLUMNS = [("id", "id"), ("status", "status"), ("stage", "stage"), ("progress", "progress"),
               ("created_at", "created")]
REPORT_FILES = (("report.json", "report"), ("report.html", "report.html"),
                ("report.xml", "report.xml"), ("report.sig", "report.sig"))


def _policy(text: str | None) -> Any:
    if not text:
        return None
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise fail(f"--policy is not JSON: {exc.msg}") from exc


def _follow(client: Client, job_id: str, quiet: bool) -> dict[str, Any]:
    """Wait for the job, drawing its progress on stderr (stdout stays for results)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  console=Console(stderr=True), disable=quiet) as bar:
        task = bar.add_task("queued", total=1.0)

        def show(status: dict[str, Any]) -> None:
            bar.update(task, completed=float(status["progress"]), description=str(status["stage"]))

        return client.wait(job_id, show)


def _download_reports(client: Client, audit_id: str, out: Path) -> dict[str, Any]:
    for filename, path in REPORT_FILES:
        client.download(f"/v1/audits/{audit_id}/{path}", out / filename)
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


@audit_cli.command("submit")
@handles_errors
def audit_submit(
    model: Annotated[str, typer.Option(help="Model id or name.")],
    dataset: Annotated[str, typer.Option(help="Dataset id or name.")],
    attack: Annotated[list[str] | None, typer.Option(
        help="e.g. pgd:eps=2/255|4/255,steps=10 (repeat).")] = None,
    analysis: Annotated[list[str] | None, typer.Option(help="Analysis name (repeat).")] = None,
    policy: Annotated[str | None, typer.Option(help="Policy JSON, or @policy.json.")] = None,
    seed: int = 0,
    max_images: int | None = None,
    idempotency_key: Annotated[str | None, typer.Option(
        help="Send Idempotency-Key: a retried submission returns the first audit.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait, download, gate.")] = False,
    out: Path = Path("robustdx-report"),
    url: Url = None, key: Key = None, json_out: Json = False,
) -> None:
    """Submit an audit. With --wait: download report.json/.html/.xml and report.sig to --out;
    exit 1 when the policy fails, 2 when the job fails or is cancelled."""
    body: dict[str, Any] = {"dataset_id": "", "model_id": "", "seed": seed,
                            "attacks": [parse_attack(a) for a in attack or []],
                            "policy": _policy(policy)}
    if analysis:
        body["analyses"] = list(analysis)
    if max_images:
        body["options"] = {"max_images": max_images}
    with connect(url, key) as client:
        body["model_id"] = client.find_model(model)["id"]
        body["dataset_id"] = client.find_dataset(dataset)["id"]
        job = client.post("/v1/audits", body, idempotency_key=idempotency_key)
        typer.echo(f"audit {job['id']} submitted", err=True)
        if not wait:
            emit(job, json_out, JOB_COLUMNS)
            return
        final = _follow(client, job["id"], quiet=json_out)
        if final["status"] != "succeeded":
            emit(final, json_out, JOB_COLUMNS)
            raise fail(f"audit {final['status']}: {final.get('error') or 'no report'}",
                       JOB_FAILED)
        report = _download_reports(client, job["id"], out)
    verdict = report.get("summary", {}).get("verdict", "no policy")
    if json_out:
        emit({"id": job["id"], "verdict": verdict, "out": str(out)}, True)
    else:
        typer.echo(f"reports in {out}/ (report.json, report.html, report.xml, report.sig); "
                   f"verdict: {verdict}")
    if verdict == "fail":
        raise typer.Exit(CHECK_FAILED)


@audit_cli.command("status")
@handles_errors
def audit_status(audit: str, url: Url = None, key: Key = None, json_out: Json = False) -> None:
    """Status, stage and progress of an audit."""
    with connect(url, key) as client:
        emit(client.get(f"/v1/audits/{audit}"), json_out, JOB_COLUMNS)


@audit_cli.command("list")
@handles_errors
def audit_list(limit: int = 50, url: Url = None, key: Key = None,
               json_out: Json = False) -> None:
    """The tenant's audits, newest first."""
    with connect(url, key) as client:
        emit(client.get("/v1/audits", limit=limit)["items"], json_out, JOB_COLUMNS)


@audit_cli.command("cancel")
@handles_errors
def audit_cancel(audit: str, url: Url = None, key: Key = None, json_out: Json = False) -> None:
    """Ask a queued or running audit to stop."""
    with connect(url, key) as client:
        emit(client.post(f"/v1/audits/{audit}/cancel"), json_out, JOB_COLUMNS)


@audit_cli.command("download")
@handles_errors
def audit_download(audit: str, out: Path = Path("robustdx-report"), url: Url = None,
                   key: Key = None) -> None:
    """Download a finished audit's reports and signature."""
    with connect(url, key) as client:
        _download_reports(client, audit, out)
    typer.echo(f"reports in {out}/ (report.json, report.html, report.xml, report.sig)")


@audit_cli.command("compare")
@handles_errors
def audit_compare(
    candidate: Annotated[str, typer.Argument(help="The new audit.")],
    baseline: Annotated[str, typer.Argument(help="The audit to compare with.")],
    url: Url = None, key: Key = None, json_out: Json = False,
) -> None:
    """Side by side, per image: accuracy and fooling rate, the regression and its 95% CI.
    Exit 1 when a max_regression rule of the candidate's policy fails."""
    with connect(url, key) as client:
        table = client.get(f"/v1/audits/{candidate}/compare/{baseline}")
    rows = [{**row, "ci": f"[{row['ci'][0]:+.3f}, {row['ci'][1]:+.3f}]",
             "decision": {None: "-", True: "pass", False: "FAIL"}[row["passed"]]}
            for row in table["rows"]]
    if json_out:
        emit(table, True)
    else:
        emit(rows, False, [("metric", "metric"), ("setting", "setting"),
                           ("baseline", "baseline"), ("candidate", "candidate"),
                           ("regression", "regression"), ("ci", "95% ci"),
                           ("margin", "margin"), ("decision", "decision")])
        typer.echo(f"decision: {table['decision']}")
    if any(row["passed"] is False for row in table["rows"]):
        raise typer.Exit(CHECK_FAILED)


@defense_cli.command("submit")
@handles_errors
def defense_submit(
    model: Annotated[str, typer.Option(help="Model id or name.")],
    train_dataset: Annotated[str, typer.Option(help="Training dataset id or name.")],
    eval_dataset: Annotated[str, typer.Option(help="Evaluation dataset id or name.")],
    method: Annotated[str, typer.Option(help="mpadvt | maadvt | pgd_at | trades | clean ...")],
    param: Annotated[list[str] | None, typer.Option(
        help="key=value (repeat); a value may be a number, 8/255, or JSON.")] = None,
    seed: int = 0,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the hardened model.")] = False,
    url: Url = None, key: Key = None, json_out: Json = False,
) -> None:
    """Harden a model; with --wait, exit 2 when the job fails."""
    params = {}
    for item in param or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise fail(f"--param {item!r} must be key=value")
        params[name.strip()] = parse_value(value)
    with connect(url, key) as client:
        body = {"model_id": client.find_model(model)["id"],
                "train_dataset_id": client.find_dataset(train_dataset)["id"],
                "eval_dataset_id": client.find_dataset(eval_dataset)["id"],
                "method": method, "params": params, "seed": seed}
        job = client.post("/v1/defenses", body)
        typer.echo(f"defense {job['id']} submitted", err=True)
        if wait:
            job = _follow(client, job["id"], quiet=json_out)
    emit(job, json_out, JOB_COLUMNS)
    if wait and job["status"] != "succeeded":
        raise fail(f"defense {job['status']}: {job.get('error') or ''}", JOB_FAILED)


@defense_cli.command("status")
@handles_errors
def defense_status(job: str, url: Url = None, key: Key = None, json_out: Json = False) -> None:
    """Status of a defense job (its result names the hardened model)."""
    with connect(url, key) as client:
        emit(client.get(f"/v1/defenses/{job}"), json_out, JOB_COLUMNS)


@audit_cli.command("signing-key")
@handles_errors
def audit_signing_key(out: Path = Path("robustdx-public.pem"), url: Url = None,
                      key: Key = None) -> None:
    """Save the service's public key, which verifies every report.sig offline."""
    with connect(url, key) as client:
        client.download("/v1/signing-key", out)
    typer.echo(str(out))
