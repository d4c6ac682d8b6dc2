"""The Celery application: Redis broker, at-least-once delivery, an I/O-bound thread pool.

- ``acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after its step
  ran, so a killed worker's message is delivered again (the steps are idempotent);
- prefetch 1: a worker never hoards messages it is not working on;
- no result backend: the database is the source of truth;
- beat runs one job, the due-time sweep; timers live in database rows, never in ETAs.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, task_prerun

from config import get_settings


def make_celery(settings: Any) -> Celery:
    broker = settings.broker_url
    app = Celery("orchestrator", broker=broker, include=["tasks"])
    if broker.split("://", 1)[0] in ("redis", "rediss"):
        from workers.broker import TRANSPORT

        app.conf.broker_transport = TRANSPORT  # kombu's, sharing one Redis client per channel
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue="saga",
        # events to the merchant wait on their own queue: a slow endpoint never holds up a saga
        task_routes={"tasks.deliver_events": {"queue": "events"}},
        broker_connection_retry_on_startup=True,
        # a Redis that does not answer a connect is given 2 s, not the OS's minutes (an enqueue
        # after a commit is bounded by it: ``runtime.ENQUEUE_RETRY``)
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout,
                                  "socket_connect_timeout": 2.0},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_concurrency=settings.worker_concurrency,
        worker_pool="threads",
        beat_schedule={
            "sweep-due": {"task": "tasks.sweep_due", "schedule": settings.sweep_interval},
            "refresh-token": {"task": "tasks.refresh_token", "schedule": 60.0},
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        timezone="UTC",
        enable_utc=True,
    )
    return app


app = make_celery(get_settings())


@after_setup_logger.connect
def _logging(**_kwargs: Any) -> None:
    from orchestrator.telemetry.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, force=True)


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_kwargs: Any) -> None:
    import structlog

    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))
