"""Remote models: a URL speaking the Open Inference Protocol v2 plus a card, audited with
score-based methods only.

Registration checks the URL (:func:`check_remote_url`: http or https, a host on
``ROBUSTDX_REMOTE_ALLOWED_HOSTS``, and no loopback, private, link-local or otherwise
non-public address unless ``ROBUSTDX_REMOTE_ALLOW_PRIVATE_NETWORKS``), reads the model's
metadata, and gives it a dry run of two images; the row keeps no file (``format`` is
``remote``). The endpoint's bearer token, if any, is stored apart from everything the API
returns.

Audits of remote models run the attacks in :data:`REMOTE_ATTACKS` and the analyses in
:data:`REMOTE_ANALYSES`; anything needing gradients or internal activations is refused at
submission (422) and again by the worker. Queries are counted and bounded per audit by
``options.query_budget`` (images) and ``options.query_rate`` (images per second).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import torch
from sqlalchemy.orm import Session

from app.core.db import ModelRow
from app.core.outbound import OutboundRule, check_outbound_url
from app.core.settings import Settings, get_settings
from models.card import ModelCard
from models.errors import InvalidParametersError, RemoteModelError
from models.remote import OipClient, Outputs, QueryBudget, RemoteNet, remote_model
from models.wrapper import DiagnosticModel

FORMAT = "remote"
#: Score-based attacks: they need predictions only.
REMOTE_ATTACKS = frozenset({"square"})
#: Analyses computed from predictions alone (no gradients, no internal activations).
REMOTE_ANALYSES = ("quantitative", "clinical", "label_correlation", "perturbations")


def check_remote_url(url: str, settings: Settings, *, resolve: bool = True) -> str:
    """The URL without a trailing slash, or :class:`InvalidParametersError` saying why not
    (:mod:`app.core.outbound`: an allow-listed name must not lead into the hospital
    network)."""
    rule = OutboundRule(
        kind="remote model", allowed_hosts=settings.remote_allowed_hosts,
        allow_private=settings.remote_allow_private_networks,
        hosts_setting="ROBUSTDX_REMOTE_ALLOWED_HOSTS",
        private_setting="ROBUSTDX_REMOTE_ALLOW_PRIVATE_NETWORKS", allow_query=False)
    check_outbound_url(url, rule, resolve=resolve)
    return url.rstrip("/")


def _client(remote: dict[str, Any], token: str | None, settings: Settings) -> OipClient:
    base = check_remote_url(remote["url"], settings)  # again: DNS may have changed
    return OipClient(base, remote["model"], remote.get("version"), token,
                     input_name=remote.get("input", "image"),
                     output_name=remote.get("output", "probabilities"),
                     timeout=settings.remote_timeout_seconds)


def _check_metadata(meta: dict[str, Any], card: ModelCard, remote: dict[str, Any]) -> int:
    """The remote output's width, after checking its input against the card."""
    spec = card.input
    inputs = {t.get("name"): t for t in meta.get("inputs") or [] if isinstance(t, dict)}
    outputs = {t.get("name"): t for t in meta.get("outputs") or [] if isinstance(t, dict)}
    tensor, out = inputs.get(remote["input"]), outputs.get(remote["output"])
    if tensor is None or out is None:
        raise InvalidParametersError(
            f"the remote model has no input {remote['input']!r} or no output "
            f"{remote['output']!r}", {"inputs": list(inputs)[:8], "outputs": list(outputs)[:8]})
    shape = [int(v) for v in tensor.get("shape") or []][-3:]
    if tensor.get("datatype") != "FP32" or shape != [spec.channels, spec.height, spec.width]:
        raise InvalidParametersError(
            f"the remote input is {tensor.get('datatype')} {tensor.get('shape')}; the card "
            f"needs FP32 [N, {spec.channels}, {spec.height}, {spec.width}]")
    width = [int(v) for v in out.get("shape") or [0]][-1]
    if width < 1:
        raise InvalidParametersError("the remote output's width is unknown")
    return width


def register_remote_model(session: Session, settings: Settings, tenant_id: str, *, url: str,
                          model: str, version: str | None, card: ModelCard, outputs: Outputs,
                          token: str | None, input_name: str = "image",
                          output_name: str = "probabilities") -> ModelRow:
    """Check and register a remote model (flushed, not committed).

    Raises:
        InvalidParametersError: the URL is refused, or the endpoint does not fit the card.
        RemoteModelError: the endpoint did not answer well.
    """
    remote = {"url": check_remote_url(url, settings), "model": model, "version": version,
              "outputs": outputs, "input": input_name, "output": output_name}
    client = _client(remote, token, settings)
    try:
        width = _check_metadata(client.metadata(), card, remote)
        budget = QueryBudget(limit=2)
        net = remote_model(client, card, outputs, width, budget)
        t0 = time.perf_counter()
        c, h, w = card.input.channels, card.input.height, card.input.width
        logits = net(torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(0)))
        dry_ms = (time.perf_counter() - t0) * 1000
    except RemoteModelError as exc:
        raise InvalidParametersError(f"the remote model cannot be used: {exc.message}") from exc
    finally:
        client.close()
    if not torch.isfinite(logits).all():
        raise InvalidParametersError("the remote model answered non-finite scores")
    digest = hashlib.sha256(json.dumps({**remote, "card": card.model_dump(mode="json")},
                                       sort_keys=True).encode()).hexdigest()
    row = ModelRow(
        tenant_id=tenant_id, name=card.name, format=FORMAT, sha256=digest, size_bytes=0,
        card=card.model_dump(mode="json"),
        info={"format": FORMAT, "head": net.head.value, "output_width": width,
              "fixed_batch": None, "input": [c, h, w], "parameters": 0,
              "dry_run_ms": round(dry_ms, 3), "device": "remote",
              "remote": {k: v for k, v in remote.items()}},
        remote=remote, remote_token=token,
    )
    session.add(row)
    session.flush()
    return row


def load_remote_model(row: ModelRow, settings: Settings | None = None,
                      budget: QueryBudget | None = None) -> DiagnosticModel:
    settings = settings or get_settings()
    remote = dict(row.remote or {})
    card = ModelCard.model_validate(row.card)
    budget = budget or QueryBudget(limit=settings.remote_query_budget,
                                   rate=settings.remote_query_rate)
    client = _client(remote, row.remote_token, settings)
    return remote_model(client, card, remote["outputs"], int(row.info["output_width"]),
                        budget, max_batch=settings.remote_max_batch)


def check_remote_audit(request: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The audit request adjusted for a remote model, or a 422 naming what is refused.

    Only score-based attacks and prediction-only analyses; one shard (one process talks to
    the endpoint, so the budget and rate hold exactly); no minimum-eps bisection.
    """
    refused = sorted({a["name"] for a in request["attacks"]} - REMOTE_ATTACKS)
    if refused:
        raise InvalidParametersError(
            f"remote models answer predictions only: attack(s) {', '.join(refused)} need "
            f"gradients; use {', '.join(sorted(REMOTE_ATTACKS))}",
            {"refused": refused, "allowed": sorted(REMOTE_ATTACKS)})
    analyses = request.get("analyses")
    names = [a["name"] for a in analyses] if analyses else list(REMOTE_ANALYSES)
    refused = sorted(set(names) - set(REMOTE_ANALYSES))
    if refused:
        raise InvalidParametersError(
            f"remote models answer predictions only: analysis(es) {', '.join(refused)} need "
            f"gradients or internal activations; use {', '.join(REMOTE_ANALYSES)}",
            {"refused": refused, "allowed": list(REMOTE_ANALYSES)})
    options = dict(request.get("options") or {})
    budget = options.get("query_budget") or settings.remote_query_budget
    rate = options.get("query_rate") or settings.remote_query_rate
    if budget > settings.remote_max_query_budget:
        raise InvalidParametersError(
            f"options.query_budget must be at most {settings.remote_max_query_budget}")
    if settings.remote_max_query_rate and (rate == 0 or rate > settings.remote_max_query_rate):
        raise InvalidParametersError(
            f"options.query_rate must be in (0, {settings.remote_max_query_rate}] images/s")
    options.update(query_budget=int(budget), query_rate=float(rate), min_eps=False,
                   shard_size=2**31 - 1)
    analyses_out = analyses or [{"name": n, "params": {}} for n in REMOTE_ANALYSES]
    return {**request, "analyses": analyses_out, "options": options}


def prepare_remote_audit(model: DiagnosticModel, request: dict[str, Any],
                         settings: Settings | None = None) -> None:
    """In the worker: refuse what a remote model cannot do (a request that bypassed the
    API's check) and give the model the audit's query budget. No-op for local models."""
    if not isinstance(model.net, RemoteNet):
        return
    settings = settings or get_settings()
    adjusted = check_remote_audit(request, settings)
    options = adjusted["options"]
    model.net.budget = QueryBudget(limit=int(options["query_budget"]),
                                   rate=float(options["query_rate"]))


def remote_usage(model: DiagnosticModel) -> dict[str, float]:
    """Queries the model has sent (for the report's provenance); empty for local models."""
    if not isinstance(model.net, RemoteNet):
        return {}
    usage = model.net.budget.usage()
    return {"remote_queries": usage["queries"], "remote_requests": usage["requests"],
            "remote_seconds": usage["seconds"]}
