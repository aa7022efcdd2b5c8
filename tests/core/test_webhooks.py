"""Webhook targets (SSRF), signatures, backoff, and announcing each job's end once."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from app.core import webhooks
from app.core.db import Database, JobRow, Tenant
from app.core.db.migrate import upgrade as upgrade_schema
from app.core.db.tables import WebhookDelivery
from app.core.settings import Settings
from models.errors import AuthenticationError, InvalidParametersError


def _settings(**values: object) -> Settings:
    return Settings(environment="test", **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.org/hook", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("http:///no-host", "names no host"),
    ("https://user:pw@example.org/hook", "must not carry credentials"),
    ("http://127.0.0.1:9/hook", "non-public address"),
    ("http://localhost/hook", "non-public address"),
    ("http://10.1.2.3/hook", "non-public address"),
    ("http://[::1]/hook", "non-public address"),
    ("http://169.254.169.254/latest/meta-data", "non-public address"),
])
def test_targets_the_service_must_not_call(url: str, message: str) -> None:
    with pytest.raises(InvalidParametersError, match=message):
        webhooks.check_target(url, _settings())


def test_the_host_allow_list_is_enforced_before_resolving() -> None:
    settings = _settings(webhook_allowed_hosts=["*.hospital.org"])
    with pytest.raises(InvalidParametersError, match="not on the webhook allow-list"):
        webhooks.check_target("https://attacker.example/hook", settings)
    allowed = _settings(webhook_allowed_hosts=["127.0.0.1"], webhook_allow_private_networks=True)
    assert webhooks.check_target("http://127.0.0.1:8080/h", allowed) == "http://127.0.0.1:8080/h"


def test_signatures_verify_and_refuse_tampering_and_replays() -> None:
    body = b'{"type": "job.succeeded"}'
    now = time.time()
    header = webhooks.sign("whsec_s3cret", body, int(now))
    webhooks.verify_signature("whsec_s3cret", header, body, now=now)
    with pytest.raises(AuthenticationError, match="does not match"):
        webhooks.verify_signature("whsec_s3cret", header, body + b" ", now=now)
    with pytest.raises(AuthenticationError, match="does not match"):
        webhooks.verify_signature("another-secret", header, body, now=now)
    with pytest.raises(AuthenticationError, match="outside the tolerance"):
        webhooks.verify_signature("whsec_s3cret", header, body, now=now + 301)
    with pytest.raises(AuthenticationError, match="malformed"):
        webhooks.verify_signature("whsec_s3cret", "v1=abc", body, now=now)


def _ended_job(db: Database, status: str) -> tuple[str, str]:
    with db.session() as session:
        tenant = Tenant(name=f"t-{status}")
        session.add(tenant)
        session.flush()
        job = JobRow(tenant_id=tenant.id, kind="audit", status=status, request={},
                     finished_at=datetime.now(UTC))
        session.add(job)
        session.flush()
        return tenant.id, job.id


def test_each_job_end_is_announced_once_per_endpoint(database_url: str) -> None:
    db = Database(database_url)
    upgrade_schema(db)
    settings = _settings(webhook_allowed_hosts=["127.0.0.1"], webhook_allow_private_networks=True)
    tenant_id, job_id = _ended_job(db, "succeeded")
    with db.session() as session:
        webhooks.create_webhook(session, settings, tenant_id, "http://127.0.0.1:9/a",
                                ["job.succeeded"])
        webhooks.create_webhook(session, settings, tenant_id, "http://127.0.0.1:9/b",
                                ["job.failed"])
    assert webhooks.announce_ended_jobs(db) == 1
    assert webhooks.announce_ended_jobs(db) == 0
    with db.session() as session:
        [delivery] = session.scalars(select(WebhookDelivery)).all()
        body = json.loads(delivery.payload)
    assert body["type"] == "job.succeeded"
    assert body["id"] == delivery.id
    assert body["data"]["job"]["id"] == job_id
    assert body["data"]["job"]["links"]["signature"] == f"/v1/audits/{job_id}/report.sig"
    # Claimed once: a second dispatcher finds nothing due.
    assert webhooks.claim_due(db) == [delivery.id]
    assert webhooks.claim_due(db) == []


def test_failed_attempts_back_off_then_give_up(database_url: str) -> None:
    db = Database(database_url)
    upgrade_schema(db)
    settings = _settings(webhook_allowed_hosts=["127.0.0.1"], webhook_allow_private_networks=True,
                         webhook_backoff_seconds=2.0, webhook_max_attempts=3)
    tenant_id, _ = _ended_job(db, "failed")
    with db.session() as session:
        webhooks.create_webhook(session, settings, tenant_id, "http://127.0.0.1:9/a",
                                ["job.failed"])
    webhooks.announce_ended_jobs(db)
    [delivery_id] = webhooks.claim_due(db)
    delays = []
    for attempt in range(3):
        before = datetime.now(UTC)
        webhooks.record_attempt(db, settings, delivery_id, status_code=503,
                                response="down", error=None)
        with db.session() as session:
            row = session.get(WebhookDelivery, delivery_id)
            assert row is not None
            assert row.attempts == attempt + 1
            next_at = row.next_attempt_at.replace(tzinfo=UTC) if row.next_attempt_at.tzinfo \
                is None else row.next_attempt_at
            delays.append(round((next_at - before).total_seconds()))
            status = row.status
    assert status == "failed"
    assert delays[:2] == [2, 4]  # 2 s, then doubled; the third attempt was the last
    with db.session() as session:
        failed = session.scalar(select(func.count()).select_from(WebhookDelivery)
                                .where(WebhookDelivery.status == "failed"))
    assert failed == 1
