"""Handing work to the workers by task name (the API never imports ``workers``)."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery

logger = logging.getLogger(__name__)

#: Task names and the queue each goes to. Workers register the same names.
TASK_QUEUES: dict[str, str] = {
    "robustdx.check_model": "gpu",
    "robustdx.audit.plan": "gpu",
    "robustdx.audit.shard": "gpu",
    "robustdx.audit.finalize": "cpu",
    "robustdx.defense.train": "gpu",
    "robustdx.webhooks.deliver": "cpu",
    "robustdx.dicom.route": "gpu",
}


@lru_cache(maxsize=4)
def celery_client(broker_url: str) -> Celery:
    client = Celery("robustdx-api", broker=broker_url)
    client.conf.update(
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=1,
        broker_transport_options={"max_retries": 1, "socket_connect_timeout": 2},
        task_ignore_result=True,
    )
    return client


def send_task(broker_url: str, name: str, args: list[Any]) -> None:
    """Publish one task; raises on a broker that cannot be reached (the caller decides)."""
    queue = TASK_QUEUES[name]
    celery_client(broker_url).send_task(name, args=args, queue=queue, retry=False)


def broker_ping(broker_url: str) -> None:
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def queue_depths(broker_url: str) -> dict[str, int]:
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return {q: int(client.llen(q)) for q in sorted(set(TASK_QUEUES.values()))}
    finally:
        client.close()
