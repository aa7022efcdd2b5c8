"""The Celery application of the workers, with the settings long GPU tasks need.

- ``acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged only when it
  finishes, so a killed worker does not silently drop it.
- prefetch 1 and ``-O fair``: a worker never hoards tasks it cannot start.
- The solo pool (one process per worker, one worker per GPU): torch and fork do not mix,
  so torch is initialised in the process that uses it; a supervisor restarts dead workers.
- A worker warms up before it takes tasks (:func:`workers.runtime.warm_up`), so the
  first job it runs is not slower than the next.
- The database, not the broker, holds job state; the API's dispatcher re-enqueues work
  whose heartbeat stopped (Redis redelivers only after the visibility timeout).
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_init
from kombu import Queue

from app.core.settings import Settings, get_settings


def make_celery(settings: Settings) -> Celery:
    celery = Celery("robustdx", broker=settings.resolved_broker_url)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_time_limit=settings.task_time_limit_seconds,
        task_soft_time_limit=max(60, settings.task_time_limit_seconds - 60),
        task_queues=[Queue("gpu"), Queue("cpu")],
        task_default_queue="cpu",
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Longer than any task, so Redis never redelivers a running task by itself;
            # lost work is re-enqueued by the dispatcher from the database instead.
            "visibility_timeout": settings.task_time_limit_seconds + 600,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        imports=["workers.tasks.check", "workers.tasks.audit", "workers.tasks.defense",
                 "workers.tasks.webhooks", "workers.tasks.dicom_routing"],
    )
    return celery


app = make_celery(get_settings())


@worker_init.connect
def _warm_up(**_: object) -> None:
    from workers.runtime import warm_up

    warm_up()
