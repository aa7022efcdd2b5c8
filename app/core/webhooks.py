"""Webhooks: a tenant's endpoints hear when its jobs end, signed and retried.

Events are ``job.succeeded``, ``job.failed`` and ``job.cancelled``. The dispatcher announces
each job's end once (a ``job_events`` row, unique per job and event), makes one delivery per
subscribed endpoint, and hands due deliveries to a worker (``robustdx.webhooks.deliver``);
requests never call out. A worker makes one attempt and records the answer; a failed attempt
is tried again after an exponential backoff (``webhook_backoff_seconds`` x 2^attempt, at
most ``webhook_max_attempts`` attempts), and every attempt's status and the first KiB of the
answer are listed at ``GET /v1/webhooks/{id}/deliveries``.

Signature, as Stripe and GitHub do it: the header ::

    RobustDx-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

A receiver recomputes the HMAC with the endpoint's secret (shown once, when it is created),
compares in constant time and refuses a timestamp older than its tolerance (replays).
:func:`verify_signature` is the reference check.

Server-side request forgery: a target must be ``http``/``https``, its host must match
``webhook_allowed_hosts`` (``*`` by default; ``*.example.org`` patterns), and every address it
resolves to must be public unless ``webhook_allow_private_networks`` — checked at
registration and again before each attempt (DNS can change). Redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import Database, JobRow
from app.core.db.tables import JobEvent, WebhookDelivery, WebhookRow

__all__ = ["EVENTS", "WebhookDelivery", "WebhookRow", "check_target", "sign",
           "verify_signature"]
from app.core.outbound import OutboundRule, check_outbound_url
from app.core.settings import Settings
from models.errors import AuthenticationError, InvalidParametersError, NotFoundError

EVENTS = ("job.succeeded", "job.failed", "job.cancelled")
SIGNATURE_HEADER = "RobustDx-Signature"
DELIVER_TASK = "robustdx.webhooks.deliver"
#: How far back the dispatcher looks for ended jobs to announce.
ANNOUNCE_WINDOW = timedelta(days=1)
CLAIM_SECONDS = 60.0


# ----------------------------------------------------------------------------- targets


def check_target(url: str, settings: Settings, *, resolve: bool = True) -> str:
    """``url`` if the service may call it; else :class:`InvalidParametersError` (422)."""
    rule = OutboundRule(
        kind="webhook", allowed_hosts=settings.webhook_allowed_hosts,
        allow_private=settings.webhook_allow_private_networks,
        hosts_setting="ROBUSTDX_WEBHOOK_ALLOWED_HOSTS",
        private_setting="ROBUSTDX_WEBHOOK_ALLOW_PRIVATE_NETWORKS")
    check_outbound_url(url, rule, resolve=resolve)
    return url


# ----------------------------------------------------------------------------- endpoints


def create_webhook(session: Session, settings: Settings, tenant_id: str, url: str,
                   events: list[str]) -> WebhookRow:
    unknown = sorted(set(events) - set(EVENTS))
    if not events or unknown:
        raise InvalidParametersError(
            f"webhook events: choose from {', '.join(EVENTS)}",
            {"unknown": unknown, "valid": list(EVENTS)})
    row = WebhookRow(tenant_id=tenant_id, url=check_target(url, settings),
                     events=sorted(set(events)), secret="whsec_" + secrets.token_urlsafe(32))
    session.add(row)
    session.flush()
    return row


def get_webhook(session: Session, tenant_id: str, webhook_id: str) -> WebhookRow:
    row = session.get(WebhookRow, webhook_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFoundError(f"webhook {webhook_id!r} not found")
    return row


def list_webhooks(session: Session, tenant_id: str) -> list[WebhookRow]:
    return list(session.scalars(select(WebhookRow).where(WebhookRow.tenant_id == tenant_id)
                                .order_by(WebhookRow.created_at.desc())))


def list_deliveries(session: Session, webhook: WebhookRow, limit: int,
                    offset: int) -> list[WebhookDelivery]:
    return list(session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id)
        .order_by(WebhookDelivery.created_at.desc()).limit(limit).offset(offset)))


# ----------------------------------------------------------------------------- signatures


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, tolerance: float = 300.0,
                     now: float | None = None) -> None:
    """Raise :class:`AuthenticationError` unless ``header`` signs ``body`` recently enough."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError) as exc:
        raise AuthenticationError("malformed webhook signature header") from exc
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise AuthenticationError("webhook signature timestamp outside the tolerance")
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise AuthenticationError("webhook signature does not match")


# ----------------------------------------------------------------------------- events


def _event_of(status: str) -> str | None:
    return {"succeeded": "job.succeeded", "failed": "job.failed",
            "cancelled": "job.cancelled"}.get(status)


def payload(delivery_id: str, event: str, job: JobRow) -> str:
    links = {"self": f"/v1/jobs/{job.id}"}
    if job.kind == "audit" and job.status == "succeeded":
        base = f"/v1/audits/{job.id}"
        links.update(report=f"{base}/report", html=f"{base}/report.html",
                     junit=f"{base}/report.xml", signature=f"{base}/report.sig")
    body = {
        "id": delivery_id, "type": event,
        "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "data": {"job": {"id": job.id, "kind": job.kind, "status": job.status,
                         "stage": job.stage, "error": job.error, "links": links}},
    }
    return json.dumps(body, sort_keys=True)


def announce_ended_jobs(db: Database) -> int:
    """Make the deliveries for jobs that ended and were not announced yet."""
    since = datetime.now(UTC) - ANNOUNCE_WINDOW
    made = 0
    with db.session() as session:
        ended = session.scalars(
            select(JobRow).outerjoin(JobEvent, JobEvent.job_id == JobRow.id)
            .where(JobRow.status.in_(("succeeded", "failed", "cancelled")),
                   or_(JobRow.finished_at.is_(None), JobRow.finished_at >= since),
                   JobEvent.id.is_(None))
        ).all()
        jobs = [(job.id, job.tenant_id, _event_of(job.status)) for job in ended]
    for job_id, tenant_id, event in jobs:
        if event is None:
            continue
        try:
            with db.session() as session:
                session.add(JobEvent(job_id=job_id, event=event))
                session.flush()
                job = session.get(JobRow, job_id)
                assert job is not None
                for hook in session.scalars(select(WebhookRow)
                                            .where(WebhookRow.tenant_id == tenant_id)):
                    if event in hook.events:
                        delivery = WebhookDelivery(webhook_id=hook.id, event=event,
                                                   job_id=job_id, payload="")
                        session.add(delivery)
                        session.flush()
                        delivery.payload = payload(delivery.id, event, job)
                        made += 1
        except IntegrityError:  # another dispatcher announced it first
            continue
    return made


def claim_due(db: Database) -> list[str]:
    """Deliveries due now, claimed for :data:`CLAIM_SECONDS` (one sender each)."""
    now = datetime.now(UTC)
    with db.session() as session:
        due = session.scalars(
            select(WebhookDelivery.id).where(
                WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.claimed_until.is_(None),
                    WebhookDelivery.claimed_until < now))
            .limit(100)).all()
    claimed = []
    for delivery_id in due:
        with db.session() as session:
            result = session.execute(
                update(WebhookDelivery).where(and_(
                    WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                    or_(WebhookDelivery.claimed_until.is_(None),
                        WebhookDelivery.claimed_until < now)))
                .values(claimed_until=now + timedelta(seconds=CLAIM_SECONDS)))
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(delivery_id)
    return claimed


def record_attempt(db: Database, settings: Settings, delivery_id: str, *,
                   status_code: int | None, response: str | None, error: str | None) -> None:
    delivered = status_code is not None and 200 <= status_code < 300
    now = datetime.now(UTC)
    with db.session() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.status != "pending":
            return
        delivery.attempts += 1
        delivery.last_status_code = status_code
        delivery.last_response = (response or "")[:1024] or None
        delivery.last_error = error
        delivery.claimed_until = None
        if delivered:
            delivery.status, delivery.delivered_at = "delivered", now
        elif delivery.attempts >= settings.webhook_max_attempts:
            delivery.status = "failed"
        else:
            backoff = settings.webhook_backoff_seconds * 2 ** (delivery.attempts - 1)
            delivery.next_attempt_at = now + timedelta(seconds=min(backoff, 3600.0))
