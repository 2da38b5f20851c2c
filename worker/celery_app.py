"""The Celery app and the settings DESIGN.md calls out (acks late, JSON only, prefetch 1...)."""

from __future__ import annotations

import os

from celery import Celery

from worker.beat import beat_schedule

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"

BROKER_URL = os.environ.get("KEYTURN_BROKER_URL", DEFAULT_BROKER)

app = Celery("keyturn", include=["worker.tasks"])
app.conf.update(
    broker_url=BROKER_URL,
    broker_connection_retry_on_startup=True,
    broker_connection_retry=True,
    # redelivery after a lost worker comes from Redis's visibility timeout; keep it above the
    # longest step (steps are bounded by the engine's lease, 5 minutes by default)
    broker_transport_options=(
        {"visibility_timeout": 600} if BROKER_URL.startswith(("redis", "rediss")) else {}
    ),
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    accept_content=["json"],
    task_serializer="json",
    result_serializer="json",
    task_ignore_result=True,
    result_backend=None,
    task_default_queue=os.environ.get("KEYTURN_QUEUE", "keyturn"),
    worker_send_task_events=True,
    task_send_sent_event=True,
    worker_hijack_root_logger=False,
    beat_schedule=beat_schedule(),
    timezone="UTC",
    enable_utc=True,
)
