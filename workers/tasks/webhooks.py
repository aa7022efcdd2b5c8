"""Webhook deliveries: one signed attempt per task; the dispatcher schedules the retries."""

from __future__ import annotations

import logging

import httpx

from app.core import webhooks
from app.core.db.tables import WebhookDelivery, WebhookRow
from models.errors import InvalidParametersError
from workers.celery_app import app
from workers.runtime import runtime

logger = logging.getLogger(__name__)


@app.task(name=webhooks.DELIVER_TASK)
def deliver(delivery_id: str) -> None:
    rt = runtime()
    with rt.db.session() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        hook = session.get(WebhookRow, delivery.webhook_id) if delivery is not None else None
        if delivery is None or hook is None or delivery.status != "pending":
            return
        url, secret, event, body = hook.url, hook.secret, delivery.event, delivery.payload
    try:
        webhooks.check_target(url, rt.settings)  # DNS may have changed since registration
    except InvalidParametersError as exc:
        webhooks.record_attempt(rt.db, rt.settings, delivery_id, status_code=None,
                                response=None, error=exc.message)
        return
    data = body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "RobustDx-Webhooks/1",
        "RobustDx-Event": event,
        "RobustDx-Delivery": delivery_id,
        webhooks.SIGNATURE_HEADER: webhooks.sign(secret, data),
    }
    try:
        response = httpx.post(url, content=data, headers=headers, follow_redirects=False,
                              timeout=rt.settings.webhook_timeout_seconds)
    except httpx.HTTPError as exc:
        logger.info("webhook delivery %s failed: %s", delivery_id, type(exc).__name__)
        webhooks.record_attempt(rt.db, rt.settings, delivery_id, status_code=None,
                                response=None, error=f"{type(exc).__name__}: could not deliver")
        return
    webhooks.record_attempt(rt.db, rt.settings, delivery_id, status_code=response.status_code,
                            response=response.text[:1024], error=None)
