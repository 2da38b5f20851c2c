"""The Celery app with the settings that matter: late acks, JSON only, prefetch 1, UTC."""

from __future__ import annotations

from celery import Celery

from rotation.config import EngineSettings
from worker.beat import beat_schedule

SETTINGS = EngineSettings.from_env()

app = Celery("keyturn", include=["worker.tasks"])
app.conf.update(
    broker_url=SETTINGS.broker_url,
    broker_connection_retry_on_startup=True,
    broker_connection_retry=True,
    # redelivery after a lost worker comes from Redis's visibility timeout; keep it above the
    # longest step (a step is bounded by the engine's lease)
    broker_transport_options=(
        {"visibility_timeout": max(600, int(2 * SETTINGS.lease.total_seconds()))}
        if SETTINGS.broker_url.startswith(("redis", "rediss"))
        else {}
    ),
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    accept_content=["json"],
    task_serializer="json",
    result_serializer="json",
    task_ignore_result=True,
    # manual requests' answers (ids, states, notes; never a value) for the CLI that waits
    result_backend=SETTINGS.result_backend,
    result_expires=3600,
    task_default_queue=SETTINGS.queue,
    worker_send_task_events=SETTINGS.task_events,
    task_send_sent_event=SETTINGS.task_events,
    worker_hijack_root_logger=False,
    beat_schedule=beat_schedule(SETTINGS),
    timezone="UTC",
    enable_utc=True,
)
